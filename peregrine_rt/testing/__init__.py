"""Test your app as you wrote it: an in-memory client, a real-socket server, pytest fixtures.

::

    from peregrine_rt.testing import open_client

    async def test_echo():
        async with open_client(Echo) as client:
            response = await client.get("/")
            assert response.status == 200
            async with client.websocket("/ws") as ws:
                await ws.send("hello")
                assert await ws.receive() == "hello"

* :func:`open_client` runs the app's real :class:`~peregrine_rt.Server` and
  talks to it over memory streams: the same parser, limits, timeouts and
  handler calls as over a socket, without one (so trio's ``autojump_clock``
  works).  HTTP requests (h11) and WebSockets (wsproto).
* :func:`open_server` serves the app on a free port of 127.0.0.1, for tests
  that need the network stack or clients of other kinds.
* :func:`wait_until` waits for a condition (``lambda: len(server.connections)
  == 0``) instead of sleeping a fixed time, and fails naming it.
* The pytest plugin (:mod:`peregrine_rt.testing.plugin`, registered as the
  ``peregrine_rt`` pytest11 entry point; needs pytest-trio) provides the
  ``peregrine_client`` factory, ``peregrine_server``, and a throwaway
  ``redis_server``.

Failures are ``AssertionError`` subclasses that say what was awaited and what
arrived instead: ``waited 5.0 s for a WebSocket message; received instead: nothing``.

::

    AssertionError
    └── UnexpectedEvent           .expected, .received
        ├── ReceiveTimeout        .timeout
        └── WebSocketClosed       also a peregrine_rt.ConnectionClosed (.code, .reason)
    peregrine_rt.HandshakeError
    └── WebSocketRejected         .response: the refusal (status, headers, body)
"""

from __future__ import annotations

from ._channels import ChannelsConnector, open_channels_client, open_channels_connector
from ._client import (
    Client,
    ClientResponse,
    KeepAliveConnection,
    RequestOptions,
    WebSocketRejected,
)
from ._redis import (
    RedisReplyError,
    RedisServer,
    redis_server_path,
    sentinel_url,
    start_redis_sentinel,
    start_redis_server,
)
from ._server import LiveServer, open_client, open_server
from ._wait import wait_until, wait_until_blocking
from ._websocket import (
    DEFAULT_TIMEOUT,
    UNSET,
    ClientWebSocket,
    Close,
    ReceiveTimeout,
    UnexpectedEvent,
    WebSocketClosed,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "UNSET",
    "ChannelsConnector",
    "Client",
    "ClientResponse",
    "ClientWebSocket",
    "Close",
    "KeepAliveConnection",
    "LiveServer",
    "ReceiveTimeout",
    "RedisReplyError",
    "RedisServer",
    "RequestOptions",
    "UnexpectedEvent",
    "WebSocketClosed",
    "WebSocketRejected",
    "open_channels_client",
    "open_channels_connector",
    "open_client",
    "open_server",
    "redis_server_path",
    "sentinel_url",
    "start_redis_sentinel",
    "start_redis_server",
    "wait_until",
    "wait_until_blocking",
]
