"""ASGI scopes built from a :class:`~peregrine_rt.Request` (ASGI 3, ``spec_version`` 2.4).

``path`` and ``raw_path`` are the whole path the client sent, ``root_path``
included: a handler mounted at ``/api`` gets ``root_path = "/api"`` and
``path = "/api/items"`` for ``/api/items``.  That is what the ASGI community
settled on (asgiref issue 229; uvicorn's ``--root-path`` and Starlette's
``Mount`` do the same, and Starlette routes on ``path`` minus ``root_path``).

The ``server`` key is the address of the server's first TCP listener (looked
up once per server), ``None`` on memory streams; ``client`` is the peer's
``(host, port)`` or ``None`` (Unix sockets).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from ..exceptions import ClientDisconnected

if TYPE_CHECKING:
    from .._request import Request

__all__ = ["ClientGone", "ServerAddress", "http_scope", "websocket_scope"]

HTTP_ASGI = {"version": "3.0", "spec_version": "2.4"}
WEBSOCKET_ASGI = {"version": "3.0", "spec_version": "2.4"}
# The extensions a WebSocket scope announces: denial responses (websocket.http.response).
WEBSOCKET_EXTENSIONS: dict[str, dict[str, Any]] = {"websocket.http.response": {}}


class ClientGone(ClientDisconnected, OSError):
    """``send()`` after the client left: an ``OSError`` (as ASGI 2.4 asks), a ClientDisconnected."""


class ServerAddress:
    """The ``server`` value of the scopes, looked up once for each server object."""

    __slots__ = ("_address", "_server")

    def __init__(self) -> None:
        self._server: object = None
        self._address: tuple[str, int] | None = None

    def of(self, request: Request) -> tuple[str, int] | None:
        server = request.connection.server
        if server is not self._server:
            address = None
            for sock in server.listeners:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    host, port = sock.getsockname()[:2]
                    address = (host, port)
                    break
            self._server, self._address = server, address
        return self._address


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


def http_scope(
    request: Request, server: tuple[str, int] | None, state: dict[str, Any]
) -> dict[str, Any]:
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
        "server": server,
        "state": state,
    }


def websocket_scope(
    request: Request, server: tuple[str, int] | None, state: dict[str, Any]
) -> dict[str, Any]:
    """The ``websocket`` scope of the upgrade request ``request``."""
    root_path, path, raw_path = _paths(request)
    offered = [
        p.strip()
        for h in request.headers.getlist("sec-websocket-protocol")
        for p in h.split(",")
        if p.strip()
    ]
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
        "server": server,
        "subprotocols": offered,
        "state": state,
        "extensions": WEBSOCKET_EXTENSIONS,
    }
