"""Testing Channels apps with the Python client (:mod:`peregrine_rt.client`).

:func:`open_channels_client` gives a :class:`~peregrine_rt.client.Socket` to
an app, over memory streams served by the app's real server (no port, so
trio's ``autojump_clock`` works), or to a URL over TCP.  Its reconnects reach
the same app; :meth:`ChannelsConnector.drop_all` cuts every connection, the
way a network failure or a server restart does, to test recovery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from .._config import Config
from .._server import Server
from ..client import Backoff, Socket, open_socket
from ._server import as_server, is_serving, open_nursery, start_unwrapped

__all__ = ["TEST_URL", "ChannelsConnector", "open_channels_client", "open_channels_connector"]

TEST_URL = "ws://testserver"
"""The URL a client of an in-memory app connects to (the host is never resolved)."""

FAST_BACKOFF = Backoff(initial=0.05, maximum=1.0)
"""The helpers' reconnect delays: quick, still with jitter."""


class ChannelsConnector:
    """Opens memory-stream connections to an app's server for a client; can cut them all.

    Attributes:
        server: the :class:`~peregrine_rt.Server`.
        connections: how many connections were opened.
        refuse: while true, new connections fail with ``OSError`` (a server
            that is down); set it back to let the client reconnect.
    """

    def __init__(self, server: Server, nursery: trio.Nursery) -> None:
        self.server = server
        self.connections = 0
        self.refuse = False
        self._nursery = nursery
        self._streams: list[trio.abc.Stream] = []

    async def __call__(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.refuse or self.server.shutting_down or self.server.stopped:
            raise ConnectionRefusedError("the test server is not accepting connections")
        client_side, server_side = trio.testing.memory_stream_pair()
        self.connections += 1
        self._streams.append(client_side)
        self._nursery.start_soon(self._serve, server_side, ("127.0.0.1", 50000 + self.connections))
        return client_side

    async def _serve(self, stream: trio.abc.Stream, address: tuple[str, int]) -> None:
        try:
            await self.server.handle_stream(stream, address)
        except RuntimeError:  # the server stopped meanwhile: the client sees EOF
            await trio.aclose_forcefully(stream)

    async def drop_all(self) -> None:
        """Cut every connection opened so far, without a close frame (a dropped network)."""
        streams, self._streams = self._streams, []
        for stream in streams:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def open_channels_client(
    app: Any,
    path: str = "/socket",
    *,
    config: Config | None = None,
    backoff: Backoff | None = None,
    **options: Any,
) -> AsyncIterator[Socket]:
    """A Channels client :class:`~peregrine_rt.client.Socket` to ``app`` for the block.

    ::

        async with open_channels_client(Chat, "/socket") as socket:
            room = socket.channel("room:lobby")
            await room.join()

    Args:
        app: a handler class or instance or a :class:`~peregrine_rt.Server`
            (served in memory for the block, unless already serving), or a
            ``ws://``/``http://`` URL (a real server: the client connects over TCP).
        path: the Channels endpoint's path (``/websocket`` is appended).
        config: a :class:`~peregrine_rt.Config` for a handler.
        backoff: reconnect delays (default: short ones, for tests).
        **options: more :func:`~peregrine_rt.client.open_socket` arguments
            (``params``, ``headers``, ``heartbeat``, ``timeout``...).

    A test that cuts connections (``connector.drop_all()``) or refuses them
    (``connector.refuse = True``) uses :func:`open_channels_connector` and
    ``open_socket(TEST_URL + path, connect=connector)`` instead.

    Resource handling:
        The server (when served here), the client and their tasks live in a
        nursery of the block; leaving it closes the client, then shuts the
        server down.
    """
    async with open_channels_connector(app, config=config) as connector:
        url = app.rstrip("/") + path if isinstance(app, str) else TEST_URL + path
        async with open_socket(
            url, connect=connector, backoff=backoff or FAST_BACKOFF, **options
        ) as socket:
            yield socket


@asynccontextmanager
async def open_channels_connector(
    app: Any, *, config: Config | None = None
) -> AsyncIterator[ChannelsConnector | None]:
    """Serve ``app`` in memory for the block; yield the connector (``None`` for a URL).

    Pass the connector as ``open_socket(..., connect=connector)``, with a URL
    of ``TEST_URL`` (``ws://testserver``); one connector serves any number of clients.
    """
    if isinstance(app, str):
        if config is not None:
            raise TypeError("a client of a URL takes no server configuration")
        yield None
        return
    server = as_server(app, config, {})
    owned = not is_serving(server)
    async with open_nursery() as nursery:
        if owned:
            await start_unwrapped(nursery, server.serve_listeners, [])
        connector = ChannelsConnector(server, nursery)
        try:
            yield connector
        finally:
            with trio.CancelScope(shield=True):
                await connector.drop_all()
                if owned:
                    with trio.move_on_after(server.config.shutdown_grace + 5):
                        await server.aclose()
            nursery.cancel_scope.cancel()
