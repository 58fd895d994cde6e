"""peregrine_rt: a WebSocket-first realtime application toolkit on trio."""

from __future__ import annotations

from ._config import Config
from ._http import Headers
from ._hub import Hub, broadcast
from ._request import QueryParams, Request
from ._response import Response, ResponseHeaders
from ._server import Server, run
from ._threads import run_sync
from .exceptions import (
    ClientDisconnected,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandlerError,
    HandshakeError,
    LimitExceeded,
    LocalProtocolError,
    PeregrineError,
    ProtocolError,
    RemoteProtocolError,
)
from .websocket import WebSocket, upgrade

__version__ = "0.1.0.dev0"

__all__ = [
    "ClientDisconnected",
    "Config",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandlerError",
    "HandshakeError",
    "Headers",
    "Hub",
    "LimitExceeded",
    "LocalProtocolError",
    "PeregrineError",
    "ProtocolError",
    "QueryParams",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ResponseHeaders",
    "Server",
    "WebSocket",
    "__version__",
    "broadcast",
    "run",
    "run_sync",
    "upgrade",
]
