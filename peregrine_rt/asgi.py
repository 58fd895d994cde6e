"""Serve an ASGI 3 application (Starlette, FastAPI, ...) with peregrine_rt.

:class:`ASGI` wraps the app in a handler, so the same server, parser,
limits, timeouts, connection code and WebSocket machinery serve it:
``Server(ASGI(app))``, ``router.mount("/api", ASGI(app))``, or
``peregrine-rt --asgi module:app`` from the command line.  docs/asgi.rst
tells what is supported; in short:

* ``http``: the body in ``http.request`` messages with ``more_body``,
  ``http.disconnect`` once the response is complete or the client left; a
  whole body in one write with ``Content-Length``, a body in several
  messages streamed (chunked); ``http.response.trailers`` refused;
* ``websocket``: accept (subprotocol, headers), close before accept (403),
  denial responses (``websocket.http.response``), messages both ways,
  disconnect codes; the app runs in a task of
  :meth:`ASGI.background() <peregrine_rt.ASGI.background>`;
* ``lifespan``: startup and shutdown, failures reported, ``state`` shared
  into every scope (a shallow copy each).

Every ``http`` and ``websocket`` scope carries the serving server's hub in
``scope["extensions"]["peregrine_rt"]["hub"]``; :func:`hub` reads it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._asgi._http import HTTPCycle
from ._asgi._lifespan import Lifespan
from ._asgi._scope import EXTENSION, PerServer, http_scope, websocket_scope
from ._asgi._websocket import WebSocketSession
from .exceptions import LifespanFailure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ._hub import Hub
    from ._request import Request
    from ._response import Response

__all__ = ["ASGI", "LifespanFailure", "hub"]

log = logging.getLogger("peregrine_rt.server")

WS_QUEUE_SIZE = 16  # messages a WebSocket's app has not received yet, before reading waits
LIFESPAN_SHUTDOWN_TIMEOUT = 10.0  # seconds the app's lifespan shutdown may take


def hub(scope: Mapping[str, Any]) -> Hub:
    """The :class:`~peregrine_rt.Hub` of the peregrine_rt server serving this ASGI scope.

    For ASGI endpoints that publish to WebSockets or SSE streams the server
    holds: ``hub(request.scope)`` in Starlette or FastAPI (their ``Request``
    and ``WebSocket`` are mappings over the scope, so ``hub(request)`` works
    too).  It reads ``scope["extensions"]["peregrine_rt"]["hub"]``, which
    :class:`ASGI` puts in every ``http`` and ``websocket`` scope.

    Raises:
        LookupError: the scope has no such extension: the app is not served by
            peregrine_rt (another ASGI server, or a test client that calls the
            app directly).
    """
    try:
        found: Hub = scope["extensions"][EXTENSION]["hub"]
    except (KeyError, TypeError):
        raise LookupError(
            "this ASGI scope has no peregrine_rt hub: the app is not served by peregrine_rt "
            "(serve it with peregrine_rt.Server(ASGI(app)) or peregrine-rt --asgi)"
        ) from None
    return found


class ASGI:
    """A handler that serves the ASGI 3 application ``app``.

    Args:
        app: ``async def app(scope, receive, send)`` (an ASGI 3 callable; an
            ASGI 2 class, called with the scope alone, is not supported).
        lifespan: ``"auto"`` (default) runs the lifespan scope and goes on
            without it if the app raises or returns before completing startup,
            as uvicorn does; ``"on"`` makes that a :class:`LifespanFailure`;
            ``"off"`` never runs it.
        ws_queue_size: WebSocket messages received but not yet taken by the
            app's ``receive()``; when that many wait, the socket is not read
            until the app takes one (TCP pushes back on the client).  0: no bound.

    Attributes:
        app: the application.
        state: the lifespan ``state``: what the app put there at startup is in
            every request's ``scope["state"]`` (a shallow copy per request).

    Resource handling:
        The WebSocket apps and the lifespan run in a nursery of
        :meth:`background`, which the server runs for its whole life (a
        :class:`~peregrine_rt.Router` runs its mounted handlers' own):
        nothing outlives the server.

    Error handling:
        An exception from the app before its response started is a 500
        (logged, as for any handler); after it started, the connection is
        closed.  An app that returns without a complete response: the same.
        A failed lifespan startup stops the server from starting.
    """

    def __init__(
        self,
        app: Callable[[dict[str, Any], Any, Any], Awaitable[None]],
        *,
        lifespan: Literal["auto", "on", "off"] = "auto",
        ws_queue_size: int = WS_QUEUE_SIZE,
    ) -> None:
        if not callable(app):
            raise TypeError(f"ASGI(app): app must be an ASGI callable, not {app!r}")
        if lifespan not in ("auto", "on", "off"):
            raise ValueError(f"ASGI(lifespan=...) is 'auto', 'on' or 'off', not {lifespan!r}")
        self.app = app
        self.state: dict[str, Any] = {}
        self._lifespan_mode = lifespan
        self._ws_queue_size = ws_queue_size
        self._server = PerServer()
        self._nursery: trio.Nursery | None = None

    async def background(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the lifespan and hold the nursery of the WebSocket apps (the server calls it).

        Ready once the lifespan startup completed; cancelled by the server
        after the last connection closed, when the lifespan shutdown runs.
        """
        async with trio.open_nursery() as nursery:
            lifespan = None
            mode = self._lifespan_mode
            if mode != "off":
                lifespan = Lifespan(self.app, self.state, mode)
                await lifespan.startup(nursery)
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                if lifespan is not None:
                    with trio.CancelScope(shield=True):
                        await lifespan.shutdown(LIFESPAN_SHUTDOWN_TIMEOUT)

    async def handle(self, request: Request, response: Response) -> None:
        """Answer ``request`` with the app: an ``http`` scope, or ``websocket`` for an upgrade."""
        upgrade = request.upgrade
        if upgrade is not None and b"websocket" in upgrade.lower():
            await self._websocket(request, response)
            return
        cycle = HTTPCycle(request, response)
        scope = http_scope(request, self._server.of(request), self.state.copy())
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception as exc:
            cycle.close(exc)
            raise
        cycle.close(None)

    async def _websocket(self, request: Request, response: Response) -> None:
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError(
                "ASGI WebSockets run in ASGI.background(): serve the handler with a "
                "peregrine_rt Server (or a Router it is mounted in)"
            )
        scope = websocket_scope(request, self._server.of(request), self.state.copy())
        session = WebSocketSession(self.app, scope, self._ws_queue_size)
        await session.handshake(nursery, request, response)
