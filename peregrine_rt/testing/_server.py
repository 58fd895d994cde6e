"""Serving the app for a test: in memory to :func:`open_client`, on a socket by :func:`open_server`.

:func:`open_client` does not call the handler: it runs the app's real
:class:`~peregrine_rt.Server` and connects the client to it over
``trio.testing.memory_stream_pair()``, each connection served by
:meth:`Server.handle_stream <peregrine_rt.Server.handle_stream>` — the same
parser, limits, timeouts, keep-alive loop and handler calls as a socket gets,
with no socket and no port, so it works under trio's ``autojump_clock``.

:func:`open_server` is for the tests that need a socket: tests of the network
stack itself, and tests that drive the app with clients of other kinds (a
browser, the ``websockets`` library, ``curl`` in a subprocess).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio
import trio.testing

from .._config import Config
from .._server import Server
from ._client import TEST_HOST, Client
from ._websocket import DEFAULT_TIMEOUT

__all__ = [
    "LiveServer",
    "as_server",
    "is_serving",
    "open_client",
    "open_nursery",
    "open_server",
    "start_unwrapped",
]


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery from which the body's own exception comes out as itself.

    trio wraps every exception that leaves a nursery in an ``ExceptionGroup``,
    including a plain ``AssertionError`` raised by the test inside ``async with
    open_client(...)``.  Here, when the body's exception is the only one, it is
    re-raised unwrapped, so that pytest shows the assertion and
    ``pytest.raises`` matches it; anything else stays grouped.
    """
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body_error = exc
                raise
    except BaseExceptionGroup as group:
        if body_error is None or group.exceptions != (body_error,):
            raise
    else:
        return
    raise body_error


async def start_unwrapped(
    nursery: trio.Nursery, async_fn: Callable[..., Awaitable[Any]], *args: Any
) -> Any:
    """``nursery.start(async_fn, *args)``, a lone exception raised as itself.

    ``Server.serve()`` raises an exception of the handler's ``startup()`` inside
    the ``ExceptionGroup`` of its own nursery; a test should see the exception.
    """
    try:
        return await nursery.start(async_fn, *args)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        leaf = leaves[0]
        raise leaf from leaf.__cause__


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves += _leaves(exc)
        else:
            leaves.append(exc)
    return leaves


def as_server(app: Any, config: Config | None, overrides: dict[str, Any]) -> Server:
    """``app`` as a :class:`Server`: a handler class or instance gets one, a Server is kept."""
    if isinstance(app, Server):
        if config is not None or overrides:
            raise TypeError(
                "configure the Server you pass when you build it; "
                f"got config={config!r} and {sorted(overrides)} as well"
            )
        return app
    return Server(app, config, **overrides)


def is_serving(server: Server) -> bool:
    """Whether ``server`` is serving already (started by someone else)."""
    return server.serving


@dataclass(frozen=True)
class LiveServer:
    """A server listening on a real socket, as :func:`open_server` yields it.

    Attributes:
        server: the :class:`~peregrine_rt.Server`.
        host: the address it listens on (``127.0.0.1`` unless configured).
        port: the bound port.
        url: ``http://host:port`` (``https`` with TLS), for HTTP clients.
        ws_url: ``ws://host:port`` (``wss`` with TLS), for WebSocket clients.
    """

    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def host(self) -> str:
        return str(self.server.listeners[0].getsockname()[0])

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def app(self) -> Any:
        """The handler instance (to look at its state in assertions)."""
        return self.server.handler_instance

    def __str__(self) -> str:
        return self.url


@asynccontextmanager
async def open_server(
    app: Any, config: Config | None = None, **overrides: Any
) -> AsyncIterator[LiveServer]:
    """Serve ``app`` on a free port of 127.0.0.1 for the duration of the block.

    ``async with open_server(Echo) as live:`` then connect any client to
    ``live.url`` or ``live.ws_url``; :func:`~peregrine_rt.testing.open_client`
    accepts the URL too.

    Args:
        app: a handler class, a handler instance, or a
            :class:`~peregrine_rt.Server` (served as configured).
        config: a :class:`~peregrine_rt.Config` for a handler.
        **overrides: :class:`~peregrine_rt.Config` fields; ``port`` is 0 (a
            free port) unless given here.

    Resource handling:
        The server's listening socket, its connections and its tasks live in
        a nursery of the block; leaving the block shuts the server down the
        way SIGTERM does (``Server.aclose()``: connections still in use get
        ``Config.shutdown_grace`` seconds) and closes the socket.

    Error handling:
        An error binding the socket, or one raised by the handler's
        ``startup()``, is raised when entering the block.
    """
    if not isinstance(app, Server):
        overrides.setdefault("port", 0)
    server = as_server(app, config, overrides)
    async with open_nursery() as nursery:
        await start_unwrapped(nursery, server.serve)
        try:
            yield LiveServer(server)
        finally:
            with trio.CancelScope(shield=True):
                # Bounded: shutdown_grace, then everything left is cancelled.
                with trio.move_on_after(server.config.shutdown_grace + 5):
                    await server.aclose()
            nursery.cancel_scope.cancel()


# -- open_client ----------------------------------------------------------------------


class _MemoryConnector:
    """New memory-stream connections, each served by ``server.handle_stream``."""

    def __init__(self, server: Server, nursery: trio.Nursery, client_host: str | None) -> None:
        self.server = server
        self.nursery = nursery
        self.client_host = client_host
        self.next_port = 50000
        self.running = 0
        self.idle = trio.Event()
        self.idle.set()

    async def __call__(self) -> trio.abc.Stream:
        server = self.server
        if server.shutting_down or server.stopped:
            raise RuntimeError(f"the server of {server.spec.name} is shut down")
        client_side, server_side = trio.testing.memory_stream_pair()
        address = None
        if self.client_host is not None:
            address = (self.client_host, self.next_port)
            self.next_port = self.next_port + 1 if self.next_port < 65535 else 50000
        if self.running == 0:
            self.idle = trio.Event()
        self.running += 1
        self.nursery.start_soon(self._serve, server_side, address)
        await trio.lowlevel.checkpoint()
        return client_side

    async def _serve(self, stream: trio.abc.Stream, address: tuple[str, int] | None) -> None:
        try:
            await self.server.handle_stream(stream, address)
        except RuntimeError:  # the server stopped meanwhile: the client sees EOF
            await trio.aclose_forcefully(stream)
        finally:
            self.running -= 1
            if self.running == 0:
                self.idle.set()


@asynccontextmanager
async def open_client(
    app: Any,
    config: Config | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    client_host: str | None = "127.0.0.1",
    **overrides: Any,
) -> AsyncIterator[Client]:
    """A client of ``app`` for the duration of the block, without sockets.

    ::

        async with open_client(Echo) as client:
            response = await client.get("/hello", params={"x": "1"})
            assert response.status == 200
            async with client.websocket("/ws") as ws:
                await ws.send("hi")
                assert await ws.receive() == "hi"

    Args:
        app: a handler class (the server makes its one instance), a handler
            instance, or a :class:`~peregrine_rt.Server`.  A Server that is
            serving already (e.g. under :func:`open_server`) is used as it is
            and left running; any other is served for the block.  Or an
            ``http://host:port`` URL: the client then connects over TCP.
        config: a :class:`~peregrine_rt.Config` for a handler.
        timeout: the default number of seconds every wait of the client —
            a response, a WebSocket message, a close — gives up after, with a
            :class:`ReceiveTimeout` saying what was awaited and what came
            instead.  ``None`` waits forever.
        client_host: the address the handler sees in ``request.client`` (each
            connection gets its own port); ``None`` for no address, as for
            a Unix socket.
        **overrides: :class:`~peregrine_rt.Config` fields, as for ``Server``.

    Resource handling:
        The server runs in a nursery of the block, and so do the connections;
        ``startup()`` runs on entry.  Leaving the block drops every connection
        still open, then shuts the server down as SIGTERM would (``shutdown()``
        included); a handler still busy with a dropped connection gets
        ``Config.shutdown_grace`` seconds, as on a real server.

    Error handling:
        An exception raised in the block comes out as itself (not in an
        ``ExceptionGroup``).  One from ``startup()`` is raised on entry.
    """
    if isinstance(app, str):
        if config is not None or overrides:
            raise TypeError("a client of a URL takes no server configuration")
        async with _open_url_client(app, timeout) as client:
            yield client
        return
    server = as_server(app, config, overrides)
    owned = not is_serving(server)
    async with open_nursery() as nursery:
        if owned:
            await start_unwrapped(nursery, server.serve_listeners, [])
        connector = _MemoryConnector(server, nursery, client_host)
        client = Client(connector, nursery, server=server, host=TEST_HOST, timeout=timeout)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client._abort_all()
                grace = server.config.shutdown_grace
                with trio.move_on_after(grace + 5):
                    if owned:
                        await server.aclose()
                    else:
                        with trio.move_on_after(grace):
                            await connector.idle.wait()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _open_url_client(url: str, timeout: float | None) -> AsyncIterator[Client]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise ValueError(f"open_client() connects to http://host:port URLs, not {url!r}")
    host, port = parts.hostname, parts.port or 80

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    async with open_nursery() as nursery:
        client = Client(connect, nursery, server=None, host=parts.netloc, timeout=timeout)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client._abort_all()
            nursery.cancel_scope.cancel()
