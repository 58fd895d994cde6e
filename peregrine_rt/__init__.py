"""peregrine_rt: a WebSocket-first realtime application toolkit on trio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._auth import Identity, Tokens, bearer_auth, session_auth
from ._channels import Channels, Limits, Refuse, Socket, topic
from ._channels._emit import PublishEndpoint, emit
from ._channels._history import History, MemoryHistory, Position, Publication, Recovery
from ._channels._presence import Presence
from ._channels._sqlite import SQLiteHistory
from ._compress import Compress
from ._config import Config
from ._cors import CORS
from ._forms import FormData, UploadFile
from ._http import Headers
from ._hub import Hub, Subscriber, broadcast
from ._middleware import Middleware
from ._options import ServerOptions
from ._request import QueryParams, Request
from ._response import Response, ResponseHeaders, StreamEncoder
from ._routing import Router, delete, get, patch, post, put, route
from ._run import run
from ._server import Server
from ._sessions import Sessions
from ._sse import EventStream
from ._static import DirServer
from ._threads import run_sync
from ._upgrade import upgrade
from .asgi import ASGI
from .exceptions import (
    ClientDisconnected,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandlerError,
    HandshakeError,
    HTTPError,
    HubUnavailable,
    InvalidJSON,
    LifespanFailure,
    LimitExceeded,
    LocalProtocolError,
    PeregrineError,
    ProtocolError,
    RemoteProtocolError,
)
from .handlers import HTTPHandler, WebSocketHandler
from .mixins import StaticMixin
from .websocket import WebSocket

if TYPE_CHECKING:
    from ._channels._redis_history import RedisHistory as RedisHistory  # lazily, as RedisHub
    from ._redis_hub import RedisHub as RedisHub  # re-exported lazily, see __getattr__

__version__ = "0.1.0.dev0"

__all__ = [
    "ASGI",
    "CORS",
    "Channels",
    "ClientDisconnected",
    "Compress",
    "Config",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DirServer",
    "EventStream",
    "FormData",
    "HTTPError",
    "HTTPHandler",
    "HandlerError",
    "HandshakeError",
    "Headers",
    "History",
    "Hub",
    "HubUnavailable",
    "Identity",
    "InvalidJSON",
    "LifespanFailure",
    "LimitExceeded",
    "Limits",
    "LocalProtocolError",
    "MemoryHistory",
    "Middleware",
    "PeregrineError",
    "Position",
    "Presence",
    "ProtocolError",
    "Publication",
    "PublishEndpoint",
    "QueryParams",
    "Recovery",
    "Refuse",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ResponseHeaders",
    "Router",
    "SQLiteHistory",
    "Server",
    "ServerOptions",
    "Sessions",
    "Socket",
    "StaticMixin",
    "StreamEncoder",
    "Subscriber",
    "Tokens",
    "UploadFile",
    "WebSocket",
    "WebSocketHandler",
    "__version__",
    "bearer_auth",
    "broadcast",
    "delete",
    "emit",
    "get",
    "patch",
    "post",
    "put",
    "route",
    "run",
    "run_sync",
    "session_auth",
    "topic",
    "upgrade",
]


def __getattr__(name: str) -> Any:
    # RedisHub needs coredis, an optional extra (peregrine_rt[redis]): it is
    # imported when first asked for, not with the package, and it is not in
    # __all__, so that "from peregrine_rt import *" works without the extra.
    if name == "RedisHub":
        from ._redis_hub import RedisHub  # noqa: PLC0415

        globals()["RedisHub"] = RedisHub
        return RedisHub
    if name == "RedisHistory":
        from ._channels._redis_history import RedisHistory  # noqa: PLC0415

        globals()["RedisHistory"] = RedisHistory
        return RedisHistory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
