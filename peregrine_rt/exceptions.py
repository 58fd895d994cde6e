"""Every exception peregrine_rt raises on purpose.

::

    PeregrineError
    ├── ProtocolError              .status_hint: the HTTP status that answers it
    │   ├── LocalProtocolError     our own misuse (e.g. an invalid response header)
    │   └── RemoteProtocolError    the peer sent something we must refuse
    │       └── LimitExceeded      a configured size limit was crossed (413/414/431)
    └── HandlerError               a handler class does not meet the handler contract

The HTTP parser raises only :class:`RemoteProtocolError` (or its subclass
:class:`LimitExceeded`) for bad input; any other exception escaping it is a bug.
"""

from __future__ import annotations

__all__ = [
    "HandlerError",
    "LimitExceeded",
    "LocalProtocolError",
    "PeregrineError",
    "ProtocolError",
    "RemoteProtocolError",
]


class PeregrineError(Exception):
    """Base class of every exception raised by peregrine_rt on purpose."""


class ProtocolError(PeregrineError):
    """A violation of HTTP/1.x.

    Attributes:
        status_hint: the HTTP status code a server should answer with
            (400 unless a more precise one applies).
        close: whether the connection must be closed after answering, because
            the framing of the stream can no longer be trusted.
    """

    def __init__(self, msg: str, status_hint: int = 400, *, close: bool = True) -> None:
        super().__init__(msg)
        self.status_hint = status_hint
        self.close = close


class LocalProtocolError(ProtocolError):
    """We tried to do something HTTP/1.x forbids (our fault, not the peer's)."""

    def __init__(self, msg: str, status_hint: int = 500) -> None:
        super().__init__(msg, status_hint)


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid HTTP/1.x request."""


class LimitExceeded(RemoteProtocolError):
    """The peer crossed a size limit: 414 (request line), 431 (headers) or 413 (body)."""


class HandlerError(PeregrineError):
    """A handler class does not meet the handler contract.

    Raised when a :class:`~peregrine_rt.Server` is built, never later, with a
    message naming the class, the method and the expected signature.
    """
