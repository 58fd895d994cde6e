"""``upgrade()``: the WebSocket opening handshake (RFC 6455 §4.2), on our own parser.

The request was parsed by the HTTP core; here it is validated (method,
version, ``Upgrade``, ``Sec-WebSocket-Key`` and ``-Version``, Origin
allow-list), a subprotocol and permessage-deflate are negotiated, the
``101`` is written, and the connection gets its :class:`~peregrine_rt.WebSocket`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import server_extensions_handshake

from ._deflate import BoundedDeflate
from ._wsconn import LazyConnection
from .exceptions import HandshakeError, HTTPError
from .websocket import WebSocket

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._http import Headers
    from ._request import Request
    from ._response import Response

    Authenticate = Callable[[Request], Awaitable[Any]]

__all__ = ["offered_subprotocols", "origin_allowed", "upgrade"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT = b"text/plain; charset=utf-8"


_UNSET: Any = object()  # "use the Config value"


def offered_subprotocols(headers: Headers) -> list[str]:
    """The subprotocols a handshake offers, in order: every ``Sec-WebSocket-Protocol``
    line, split on commas, without blanks."""
    return [
        entry
        for line in headers.getlist("sec-websocket-protocol")
        for entry in (part.strip() for part in line.split(","))
        if entry
    ]


def _accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _refuse(
    response: Response, status: int, message: str, headers: dict[str, str] | None = None
) -> HandshakeError:
    response.status = status
    response.body = f"{status} {message}\n".encode()
    response.headers["content-type"] = _TEXT
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return HandshakeError(message, status)


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...] | None) -> bool:
    """Whether a handshake's ``Origin`` passes ``Config.ws_allowed_origins``.

    ``allowed`` is a list of origins (``https://app.example``), ``("*",)`` for
    any, or ``None`` for the page's own origin: no ``Origin`` header (not a
    browser), or one whose host and port are the request's ``Host`` (the
    scheme is not compared: behind a TLS-terminating proxy the server sees
    ``http`` where the browser saw ``https``).
    """
    if allowed is not None:
        return "*" in allowed or origin in allowed
    if origin is None:
        return True
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = name if port in (None, default) else f"{name}:{port}"
    host = host.lower()
    for candidate in (host, host.removesuffix(":80"), host.removesuffix(":443")):
        if netloc == candidate:
            return True
    return False


async def upgrade(
    request: Request,
    response: Response,
    *,
    subprotocols: tuple[str, ...] | list[str] = (),
    compression: bool | None = None,
    max_message_size: int | None = _UNSET,
    allowed_origins: tuple[str, ...] | None = _UNSET,
    authenticate: Authenticate | None = _UNSET,
    hooks: object | None = None,
) -> WebSocket:
    """Answer ``101 Switching Protocols`` and turn this connection into a WebSocket.

    Call it from ``handle``.  When ``handle`` returns, the server calls the
    handler's ``on_open(ws)``, then ``on_message(ws, message)`` for each message,
    in order, then ``on_close(ws, code, reason)`` once.  Code after
    ``await upgrade(...)`` in ``handle`` may prepare ``ws.state``.

    Args:
        subprotocols: the subprotocols this endpoint speaks, in order of
            preference; the first one the client offers is chosen
            (``ws.subprotocol``, ``None`` if there is no match).
        compression: negotiate permessage-deflate (default: ``Config.ws_compression``).
        max_message_size: overrides ``Config.ws_max_message_size`` for this socket.
        allowed_origins: overrides ``Config.ws_allowed_origins`` for this socket.
        authenticate: ``async def authenticate(request) -> identity``, run once
            the handshake is valid and the origin allowed, before the ``101``.
            What it returns becomes ``request.user`` and ``ws.user``; ``None``
            refuses with 401, and an :class:`~peregrine_rt.HTTPError` it raises
            (401, 403) refuses with that status.  The default is the
            ``authenticate`` method of the handler answering the request
            (``request.handler``, set by a router, else the server's), if it
            has one; pass ``None`` for no check.  :doc:`web/identity` tells the whole story.
        hooks: an object whose ``on_open``/``on_message``/``on_close`` serve this
            socket instead of the handler's (the server's own endpoints, such as
            the status page, use it); it needs ``on_open``, ``on_message`` and ``on_close``.

    Raises:
        HandshakeError: not an acceptable handshake; the response is already set
            to the refusal (400, 401, 403 or 426) and is sent when ``handle`` returns.
    """
    conn = request.connection
    config = conn.server.config
    if hooks is None and not conn.server.spec.has_websocket:
        raise RuntimeError(
            f"{conn.server.spec.name} calls upgrade() but has no on_message: "
            "define async def on_message(self, ws, message)"
        )
    headers = request.headers
    if request.method != "GET" or request.http_version != "1.1":
        raise _refuse(response, 400, "a WebSocket handshake is a GET over HTTP/1.1")
    upgrade_to = (request.upgrade or b"").lower()
    if b"websocket" not in [t.strip() for t in upgrade_to.split(b",")]:
        raise _refuse(response, 426, "Upgrade Required", {"upgrade": "websocket"})
    if (headers.get("sec-websocket-version") or "").strip() != "13":
        raise _refuse(
            response, 426, "unsupported WebSocket version", {"sec-websocket-version": "13"}
        )
    key = (headers.get("sec-websocket-key") or "").strip().encode("latin-1")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError("length")
    except (binascii.Error, ValueError):
        raise _refuse(response, 400, "invalid Sec-WebSocket-Key") from None
    if request.has_body:
        raise _refuse(response, 400, "a WebSocket handshake has no body")
    origins = config.ws_allowed_origins if allowed_origins is _UNSET else allowed_origins
    host = request.host.decode("latin-1") if request.host is not None else None
    if not origin_allowed(headers.get("origin"), host, origins):
        raise _refuse(response, 403, "origin not allowed")
    if authenticate is _UNSET:
        owner = request.handler or conn.server.handler_instance
        authenticate = getattr(owner, "authenticate", None)
    if authenticate is not None:
        try:
            identity = await authenticate(request)
        except HTTPError as exc:
            raise _refuse(response, exc.status, exc.detail or "not allowed", exc.headers) from None
        if identity is None:
            # RFC 9110 §15.5.2: a 401 names a scheme; the hook's carrier is the app's.
            challenge = {"www-authenticate": 'Bearer realm="websocket"'}
            raise _refuse(response, 401, "authentication required", challenge)
        request.user = identity

    chosen: str | None = None
    if subprotocols:
        offered = offered_subprotocols(headers)
        chosen = next((p for p in subprotocols if p in offered), None)
    extensions: list[PerMessageDeflate] = []
    accepted_extensions: bytes | None = None
    limit = config.ws_max_message_size if max_message_size is _UNSET else max_message_size
    if config.ws_compression if compression is None else compression:
        offers = [
            o.strip() for h in headers.getlist("sec-websocket-extensions") for o in h.split(",")
        ]
        deflate = BoundedDeflate(limit)
        accepted_extensions = server_extensions_handshake(offers, [deflate])
        if accepted_extensions is not None:
            extensions.append(deflate)

    fields: list[tuple[bytes, bytes]] = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", _accept_key(key)),
    ]
    if chosen is not None:
        fields.append((b"sec-websocket-protocol", chosen.encode("latin-1")))
    if accepted_extensions is not None:
        fields.append((b"sec-websocket-extensions", accepted_extensions))
    fields += response.headers.raw  # set-cookie from the handler, say
    head = conn.heads.head(101, fields, version="1.1", keep_alive=True)
    response.status = 101
    response.started = True
    ws = WebSocket(
        conn,
        request,
        LazyConnection(extensions),
        chosen,
        limit,
        scheduler=conn.server.scheduler,
        compressed=bool(extensions),
        initial=conn.parser.trailing_data,
    )
    ws.hooks = hooks
    conn.websocket = ws
    request.websocket = ws
    await conn.transport.send_all(head)
    return ws
