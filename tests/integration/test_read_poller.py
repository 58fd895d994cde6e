"""Config.read_poller through a real server: connections wait in the server's epoll."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt._poller import make_poller
from peregrine_rt.testing import open_client, open_server, wait_until

from .test_write_batch import CLIENTS, Echo, expected, load, read_response

pytestmark = pytest.mark.skipif(make_poller() is None, reason="epoll is Linux's")


class Chat:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


@pytest.mark.parametrize("option", [True, False])
async def test_keep_alive_clients_get_every_answer_with_and_without_the_poller(
    option: bool,
) -> None:
    server = pr.Server(Echo, read_poller=option)
    assert (server.poller is not None) is option
    async with open_server(server):
        answers = await load(server.port)
        if option:
            assert server.poller is not None and server.poller.open
    assert all(answers[n] == expected(n) for n in range(CLIENTS))


async def test_a_keep_alive_connection_waits_in_the_servers_epoll() -> None:
    server = pr.Server(Echo)
    async with open_server(server):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            buffer = bytearray()
            for path in ("/a", "/b"):  # the second request is read after a wait
                await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert await read_response(stream, buffer) == path.encode()
            (conn,) = server.connections
            assert getattr(conn.transport, "poller", None) is server.poller


async def test_a_request_sent_with_the_end_of_the_stream_is_answered_and_closed() -> None:
    """Bytes and FIN in one event: the request is answered and the connection ends at once.

    Edge-triggered, the end would otherwise wait for an event that never comes
    (until the keep-alive timeout).
    """
    server = pr.Server(Echo, keep_alive_timeout=30)
    async with open_server(server):
        plain = socket.create_connection(("127.0.0.1", server.port))
        plain.setblocking(False)
        sock = trio.socket.from_stdlib_socket(plain)
        with sock:
            await sock.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"/first" in await sock.recv(65536)  # registered in the poller by now
            await trio.testing.wait_all_tasks_blocked()  # the connection waits again
            # No schedule point between the two: one event for the request and the end.
            plain.send(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
            plain.shutdown(socket.SHUT_WR)
            await wait_until(lambda: not server.connections, timeout=5)
            rest = b""
            while chunk := await sock.recv(65536):
                rest += chunk
            assert b"/last" in rest


async def test_websocket_messages_and_a_large_one_go_through_the_poller() -> None:
    server = pr.Server(Chat, ws_max_message_size=4 << 20)
    async with (
        open_server(server) as live,
        open_client(live.url) as client,
        client.websocket("/") as ws,
    ):
        for n in range(20):
            await ws.send(f"m{n}")
            assert await ws.receive() == f"m{n}"
        big = "x" * (2 << 20)  # many recv() that fill the buffer: read on before waiting
        await ws.send(big)
        assert await ws.receive() == big
