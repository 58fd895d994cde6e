"""ASGI scopes built from a :class:`~peregrine_rt.Request` (ASGI 3, ``spec_version`` 2.4).

``path`` and ``raw_path`` are the whole path the client sent, ``root_path``
included: a handler mounted at ``/api`` gets ``root_path = "/api"`` and
``path = "/api/items"`` for ``/api/items``.  That is what the ASGI community
settled on (asgiref issue 229; uvicorn's ``--root-path`` and Starlette's
``Mount`` do the same, and Starlette routes on ``path`` minus ``root_path``).

The ``server`` key is the address of the server's first TCP listener (looked
up once per server), ``None`` on memory streams; ``client`` is the peer's
``(host, port)`` or ``None`` (Unix sockets).

``extensions`` carries ``"peregrine_rt": {"hub": hub}``, the serving server's
:class:`~peregrine_rt.Hub` (what :func:`peregrine_rt.asgi.hub` reads); for
HTTP ``"http.response.pathsend"`` (a file sent by the server: Starlette's
``FileResponse``), for WebSockets ``"websocket.http.response"`` (denial
responses).  These dicts are
made once per server and shared by every scope, as the ``asgi`` dicts are:
an app reads them, it does not change them.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from .._upgrade import offered_subprotocols
from ..exceptions import ClientDisconnected

if TYPE_CHECKING:
    from .._request import Request

__all__ = ["EXTENSION", "ClientGone", "PerServer", "http_scope", "websocket_scope"]

HTTP_ASGI = {"version": "3.0", "spec_version": "2.4"}
WEBSOCKET_ASGI = {"version": "3.0", "spec_version": "2.4"}
EXTENSION = "peregrine_rt"  # the key of peregrine_rt's own scope extension


class ClientGone(ClientDisconnected, OSError):
    """``send()`` after the client left: an ``OSError`` (as ASGI 2.4 asks), a ClientDisconnected."""


class PerServer:
    """What the scopes share for one server: its address and the ``extensions`` dicts.

    Looked up again only when a request comes from another server than the
    last one (one ``ASGI`` object may be served by several servers in turn).
    """

    __slots__ = ("_server", "address", "http_extensions", "ws_extensions")

    def __init__(self) -> None:
        self._server: object = None
        self.address: tuple[str, int] | None = None
        self.http_extensions: dict[str, dict[str, Any]] = {}
        self.ws_extensions: dict[str, dict[str, Any]] = {}

    def of(self, request: Request) -> PerServer:
        """Itself, up to date for the server ``request`` came to."""
        server = request.connection.server
        if server is not self._server:
            address = None
            for sock in server.listeners:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    host, port = sock.getsockname()[:2]
                    address = (host, port)
                    break
            own = {"hub": request.hub}
            self._server, self.address = server, address
            self.http_extensions = {EXTENSION: own, "http.response.pathsend": {}}
            self.ws_extensions = {EXTENSION: own, "websocket.http.response": {}}
        return self


def _headers(request: Request) -> list[tuple[bytes, bytes]]:
    return [(name.lower(), value) for name, value in request.headers.raw]


def _paths(request: Request) -> tuple[str, str, bytes]:
    root_path = request.root_path
    path = request.path
    raw_path = request.raw_path
    if root_path:
        # The mount point itself is "/" below it: whether the client wrote
        # /api or /api/ shows only in the raw path.
        if path != "/":
            path = root_path + path
        else:
            path = root_path + "/" if raw_path.endswith(b"/") else root_path
    return root_path, path, raw_path


def http_scope(request: Request, server: PerServer, state: dict[str, Any]) -> dict[str, Any]:
    """The ``http`` scope of ``request`` (``state``: the lifespan state, copied by the caller)."""
    root_path, path, raw_path = _paths(request)
    return {
        "type": "http",
        "asgi": HTTP_ASGI,
        "http_version": request.http_version,
        "method": request.method,
        "scheme": request.scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": request.raw_query,
        "root_path": root_path,
        "headers": _headers(request),
        "client": request.client,
        "server": server.address,
        "state": state,
        "extensions": server.http_extensions,
    }


def websocket_scope(request: Request, server: PerServer, state: dict[str, Any]) -> dict[str, Any]:
    """The ``websocket`` scope of the upgrade request ``request``."""
    root_path, path, raw_path = _paths(request)
    return {
        "type": "websocket",
        "asgi": WEBSOCKET_ASGI,
        "http_version": request.http_version,
        "scheme": "wss" if request.scheme == "https" else "ws",
        "path": path,
        "raw_path": raw_path,
        "query_string": request.raw_query,
        "root_path": root_path,
        "headers": _headers(request),
        "client": request.client,
        "server": server.address,
        "subprotocols": offered_subprotocols(request.headers),
        "state": state,
        "extensions": server.ws_extensions,
    }
