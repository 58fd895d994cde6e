"""Every exception peregrine_rt raises on purpose.

::

    PeregrineError
    ├── ProtocolError              .status_hint: the HTTP status that answers it
    │   ├── LocalProtocolError     our own misuse (e.g. an invalid response header)
    │   └── RemoteProtocolError    the peer sent something we must refuse
    │       ├── LimitExceeded      a configured size limit was crossed (413/414/431)
    │       └── InvalidJSON        a JSON body or message is malformed or too deep (400/1007)
    ├── HTTPError                  answer this request with .status (401, 403, 404, ...)
    ├── HandlerError               a handler class does not meet the handler contract
    ├── HandshakeError             a WebSocket upgrade was refused (.status)
    ├── ClientDisconnected         the client went away while a handler read or sent
    ├── HubUnavailable             a publish reached local subscribers only (.topic, .delivered)
    ├── LifespanFailure            an ASGI app's lifespan startup failed: the server does not start
    └── ConnectionClosed           the WebSocket is closed (.code, .reason)
        ├── ConnectionClosedOK     it closed normally (1000, 1001)
        └── ConnectionClosedError  it closed on an error (any other code, 1006 if no close frame)

The HTTP parser raises only :class:`RemoteProtocolError` (or its subclass
:class:`LimitExceeded`) for bad input; any other exception escaping it is a bug.
``request.json()`` raises ``InvalidJSON``, which is also a ``ValueError``.
"""

from __future__ import annotations

__all__ = [
    "ClientDisconnected",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HTTPError",
    "HandlerError",
    "HandshakeError",
    "HubUnavailable",
    "InvalidJSON",
    "LifespanFailure",
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


class InvalidJSON(RemoteProtocolError, ValueError):
    """A client's JSON is malformed, or nests deeper than ``Config.json_max_depth``.

    ``await request.json()`` raises it; if the handler lets it propagate, the
    client gets 400 with the reason (``invalid JSON: Expecting value: line 1
    column 1``, ``JSON nested deeper than 64 levels``), and the log has one
    warning line, not a handler failure with its traceback.  ``JSONMixin``
    closes the WebSocket with 1007.  It is a ``ValueError`` too, as
    ``json.loads`` errors are.  The framing of the request was sound
    (``close`` is False).
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg, 400, close=False)


class HTTPError(PeregrineError):
    """Answer the request with ``status`` instead of what the handler was doing.

    Raise it from ``handle`` (or from anything ``handle`` calls: a route, an
    ``authenticate`` hook, a form parser) and the server answers with a short
    plain-text body (``404 Not Found`` and ``detail`` on a second line) and
    the given headers, and the connection goes on.  What the handler had set
    on the response is dropped, its ``Set-Cookie`` headers aside.

    Attributes:
        status: the status code (a 4xx or 5xx).
        detail: a line for the client, may be empty; never put secrets in it.
        headers: extra response headers (``{"allow": "GET, HEAD"}``,
            ``{"www-authenticate": "Bearer"}``).
    """

    def __init__(
        self, status: int, detail: str = "", headers: dict[str, str] | None = None
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"HTTPError needs a 4xx or 5xx status, not {status}")
        super().__init__(f"{status} {detail}".rstrip())
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class HandlerError(PeregrineError):
    """A handler class does not meet the handler contract.

    Raised when a :class:`~peregrine_rt.Server` is built, never later, with a
    message naming the class, the method and the expected signature.
    """


class HandshakeError(PeregrineError):
    """``upgrade()`` refused a request that is not an acceptable WebSocket handshake.

    The response has been set to the refusal (``status``: 400, 403 or 426) and
    is sent when ``handle`` returns; no WebSocket callback runs.  Handlers need
    not catch it.
    """

    def __init__(self, msg: str, status: int) -> None:
        super().__init__(msg)
        self.status = status


class ConnectionClosed(PeregrineError):
    """The WebSocket is closed: sending on it is no longer possible.

    Attributes:
        code: the close code (1006 when the connection dropped without a close frame).
        reason: the close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason

    @staticmethod
    def for_code(code: int, reason: str = "") -> ConnectionClosed:
        """The subclass that fits ``code``."""
        if code in (1000, 1001):
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, reason)


class ConnectionClosedOK(ConnectionClosed):
    """Closed normally: 1000 (normal closure) or 1001 (going away)."""


class ConnectionClosedError(ConnectionClosed):
    """Closed on an error: a protocol error, a policy, a timeout, or a dropped connection."""


class ClientDisconnected(PeregrineError):
    """The client went away (reset, broken pipe, EOF) while the handler read or sent.

    Raised by ``send`` of a streamed response and by request body reads.  A
    handler may catch it to stop work early; if it does not, the server ends
    the connection quietly (it is not logged as a handler error).
    """


class HubUnavailable(PeregrineError):
    """A message was delivered to this process's subscribers but not sent to the other nodes.

    Raised by :meth:`RedisHub.publish <peregrine_rt.RedisHub.publish>` when
    Redis cannot be reached (or the connection dropped before Redis answered):
    local subscribers have the message, subscribers on other processes and
    machines do not — and will not get it later, since nothing is retried.
    ``hub.lost`` counts these messages.

    Attributes:
        topic: the topic published to.
        delivered: how many local subscribers took the message.
    """

    def __init__(self, msg: str, topic: str, delivered: int) -> None:
        super().__init__(msg)
        self.topic = topic
        self.delivered = delivered


class LifespanFailure(PeregrineError, RuntimeError):
    """The ASGI app's lifespan startup failed: the server does not start.

    The message is the app's (``lifespan.startup.failed``), or names the
    exception the app raised (with ``ASGI(app, lifespan="on")``).  Also
    importable from :mod:`peregrine_rt.asgi`, and a ``RuntimeError`` as it
    was before it joined this tree.
    """
