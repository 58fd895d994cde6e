"""Shutdown and serving edges: a request on its way when shutdown starts, SIGHUP with one
process, and serving on sockets bound elsewhere (a supervisor, socket activation)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import trio
import trio.testing

import peregrine_rt as pr
from tests.integration.conftest import Reader, ServerProcess, get, open_server

REPO = Path(__file__).resolve().parents[2]


class Hello:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("hello")


# raw bytes: the first request of a new connection arrives just after shutdown began
async def test_a_request_on_its_way_when_shutdown_starts_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Hello, shutdown_grace=5) as h:
        stream = await h.connect()
        await h.wait_connections(1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.server.aclose)
            await trio.sleep(0.3)  # the client's request is still on its way
            await stream.send_all(get("/"))
            resp = await Reader(stream).response()
        assert (resp.status, resp.body) == (200, b"hello")
        assert resp.header("connection") == "close"


# needs the moment of EOF of a silent new connection at shutdown
async def test_a_silent_new_connection_is_closed_a_second_into_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Hello, shutdown_grace=30, header_timeout=60) as h:
        stream = await h.connect()
        await h.wait_connections(1)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.server.aclose)
            await Reader(stream).expect_eof()
        assert 1 <= trio.current_time() - start < 2  # not the whole 30 s grace


async def test_serve_on_sockets_bound_elsewhere() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = pr.Server(Hello)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: server.serve(sockets=[sock], task_status=task_status)
        )
        assert server.port == port
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(get("/"))
        assert (await Reader(stream).response()).body == b"hello"
        await stream.aclose()
        await server.aclose()
    assert sock.fileno() == -1  # closed with the server


def test_sighup_to_a_single_process_is_ignored_with_a_warning() -> None:
    proc = ServerProcess("examples.counter:Counter", "--port", "0", cwd=REPO)
    try:
        port = proc.port
        proc.proc.send_signal(signal.SIGHUP)
        proc.wait_for_log("SIGHUP ignored")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 200")
        assert proc.proc.poll() is None  # still serving
    finally:
        proc.kill()
