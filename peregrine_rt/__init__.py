"""peregrine_rt: a WebSocket-first realtime application toolkit on trio."""

from __future__ import annotations

from ._http import Headers
from .exceptions import (
    HandlerError,
    LimitExceeded,
    LocalProtocolError,
    PeregrineError,
    ProtocolError,
    RemoteProtocolError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "HandlerError",
    "Headers",
    "LimitExceeded",
    "LocalProtocolError",
    "PeregrineError",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
]
