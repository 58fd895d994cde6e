"""Graceful shutdown: aclose(), cancellation of serve(), and signals to a real process."""

from __future__ import annotations

import signal
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.testing import wait_until

from .conftest import Reader, exchange, get, open_server


class Slow:
    """``/slow`` sleeps 1 s, ``/forever`` never returns, ``/stream`` streams for 1 s."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.started = trio.Event()

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        path = request.path
        self.started.set()
        if path == "/slow":
            await trio.sleep(1)
            response.text("slow done")
        elif path == "/forever":
            try:
                await trio.sleep_forever()
            finally:
                self.events.append("forever cancelled")
        elif path == "/stream":
            async with response.stream() as send:
                for i in range(4):
                    await send(f"{i};")
                    await trio.sleep(0.25)
        else:
            response.text("fast")

    async def shutdown(self) -> None:
        self.events.append("shutdown")


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Connections made with :meth:`connect` are accepted by the server's own loop."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[trio.abc.Stream](10)

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self.send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self.receive.receive()

    async def aclose(self) -> None:
        await self.receive.aclose()
        await trio.lowlevel.checkpoint()


async def test_aclose_finishes_in_flight_closes_idle_and_refuses_new(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Slow, shutdown_grace=5, keep_alive_timeout=60) as h:
        idle = await h.connect()
        assert (await exchange(idle, get("/fast"))).body == b"fast"
        busy = await h.connect()
        await busy.send_all(get("/slow"))
        await trio.sleep(0.1)
        start = trio.current_time()
        closed_at: dict[str, float] = {}

        async def close_server() -> None:
            await h.server.aclose()
            closed_at["server"] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_server)
            await Reader(idle).expect_eof()  # the idle connection goes at once
            closed_at["idle"] = trio.current_time() - start
            reader = Reader(busy)
            resp = await reader.response()
            closed_at["busy"] = trio.current_time() - start
            await reader.expect_eof()
        assert resp.status == 200
        assert resp.body == b"slow done"
        assert resp.header("connection") == "close"
        assert closed_at["idle"] < 0.1
        assert 0.8 <= closed_at["busy"] <= 1.0
        assert closed_at["server"] <= 1.5  # not the whole grace
        assert h.server.handler_instance.events == ["shutdown"]
        with pytest.raises(RuntimeError, match="not serving"):
            await h.server.handle_stream(trio.testing.memory_stream_pair()[1])


async def test_aclose_over_tcp_lets_the_request_finish_then_refuses_connections() -> None:
    async with open_server(Slow, transport="tcp", shutdown_grace=5) as h:
        port = h.server.port
        busy = await h.connect()
        await busy.send_all(get("/slow"))
        await h.server.handler_instance.started.wait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.server.aclose)
            await wait_until(lambda: h.server.listeners[0].fileno() == -1)  # stopped accepting
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
            resp = await Reader(busy).response()
        assert resp.body == b"slow done"
        assert h.server.listeners[0].fileno() == -1


async def test_handler_that_never_finishes_is_cancelled_after_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Slow, shutdown_grace=2) as h:
        stuck = await h.connect()
        await stuck.send_all(get("/forever"))
        await trio.sleep(0.1)
        start = trio.current_time()
        await h.server.aclose()
        assert 2 <= trio.current_time() - start <= 2.5
        await Reader(stuck).expect_eof()
        assert h.server.handler_instance.events == ["forever cancelled", "shutdown"]
        assert not h.server.connections


async def test_streamed_response_in_flight_ends_the_connection_at_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stream begun before shutdown finishes; then the connection closes, not after the grace."""
    async with open_server(Slow, shutdown_grace=10, keep_alive_timeout=60) as h:
        stream = await h.connect()
        await stream.send_all(get("/stream"))
        reader = Reader(stream)
        await trio.sleep(0.1)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.server.aclose)
            resp = await reader.response()
            assert resp.body == b"0;1;2;3;"
            await reader.expect_eof()
            assert trio.current_time() - start < 2
        assert trio.current_time() - start < 2  # aclose() did not sit out the grace


async def test_cancelling_serve_drains_gracefully(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = pr.Server(Slow, pr.Config(shutdown_grace=5))
    listener = MemoryListener()
    cancel_scope = trio.CancelScope()
    finished: dict[str, float] = {}

    async def run_server(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with cancel_scope:
            await server.serve_listeners([listener], task_status=task_status)
        finished["at"] = trio.current_time()

    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_server)
            idle = await listener.connect()
            assert (await exchange(idle, get("/fast"))).body == b"fast"
            busy = await listener.connect()
            await busy.send_all(get("/slow"))
            await trio.sleep(0.1)
            start = trio.current_time()
            cancel_scope.cancel()
            await Reader(idle).expect_eof()
            resp = await Reader(busy).response()
            assert resp.body == b"slow done"
        assert cancel_scope.cancelled_caught  # serve re-raised the cancellation
        assert 0.8 <= finished["at"] - start <= 1.5
        assert server.handler_instance.events == ["shutdown"]
        for stream in (idle, busy):
            await stream.aclose()


async def test_cancelling_serve_over_tcp_drains_gracefully() -> None:
    server = pr.Server(Slow, pr.Config(port=0, shutdown_grace=5))
    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as server_nursery:
                await server_nursery.start(server.serve)
                busy = await trio.open_tcp_stream("127.0.0.1", server.port)
                outer.start_soon(busy.send_all, get("/slow"))
                await server.handler_instance.started.wait()
                server_nursery.cancel_scope.cancel()
            # serve() has returned: the in-flight response was written before that
            resp = await Reader(busy).response()
            assert resp.body == b"slow done"
            await busy.aclose()


@pytest.mark.parametrize("transport_", ["memory", "tcp"])
async def test_abort_stops_at_once(transport_: str) -> None:
    async with open_server(Slow, transport=transport_, shutdown_grace=10) as h:
        stuck = await h.connect()
        await stuck.send_all(get("/forever"))
        await h.server.handler_instance.started.wait()
        h.server.abort()
        closed = False
        with trio.move_on_after(1):
            await h.server.aclose()
            await Reader(stuck).expect_eof()
            closed = True
        assert closed, "abort() left the connection open"
        assert h.server.handler_instance.events == ["forever cancelled", "shutdown"]


# -- a real process and signals -----------------------------------------------------


APP = textwrap.dedent(
    """
    import logging
    import trio

    log = logging.getLogger("peregrine_rt.app")

    class Slow:
        async def handle(self, request, response):
            log.info("handling %s", request.path)
            await trio.sleep(float(request.query.get("t", "0")))
            response.text("done " + request.path)
    """
)


def http_request(port: int, target: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(get(target))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "slowapp.py").write_text(APP)
    return tmp_path


def test_sigterm_lets_the_in_flight_request_finish(spawn: Any, app_dir: Path) -> None:
    server = spawn("slowapp:Slow", "--port", "0", "--shutdown-grace", "3", cwd=app_dir)
    port = server.port
    idle = http_request(port, "/quick")
    first = b""
    while not first.endswith(b"done /quick"):
        chunk = idle.recv(65536)
        assert chunk, first
        first += chunk
    assert first.startswith(b"HTTP/1.1 200 ")
    busy = http_request(port, "/slow?t=1.5")
    server.wait_for_log("handling /slow")
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert read_all(idle) == b""  # idle keep-alive connection closed
    response = read_all(busy)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b"done /slow")
    assert b"connection: close" in response
    returncode, log = server.finish(timeout=3 + 1)
    assert time.monotonic() - start <= 3 + 1
    assert returncode == 0, log
    assert "received SIGTERM" in log
    assert "Traceback" not in log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_sigterm_exits_within_the_grace_when_a_handler_hangs(spawn: Any, app_dir: Path) -> None:
    server = spawn("slowapp:Slow", "--port", "0", "--shutdown-grace", "1", cwd=app_dir)
    busy = http_request(server.port, "/hang?t=60")
    server.wait_for_log("handling /hang")
    start = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    returncode, log = server.finish(timeout=1 + 2)
    assert time.monotonic() - start <= 1 + 1
    assert returncode == 0, log
    assert read_all(busy) == b""


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_second_signal_exits_at_once(spawn: Any, app_dir: Path, second: int) -> None:
    server = spawn("slowapp:Slow", "--port", "0", "--shutdown-grace", "30", cwd=app_dir)
    busy = http_request(server.port, "/hang?t=60")
    server.wait_for_log("handling /hang")
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for_log("received SIGTERM")
    assert server.proc.poll() is None  # still draining
    start = time.monotonic()
    server.proc.send_signal(second)
    returncode, log = server.finish(timeout=5)
    assert time.monotonic() - start < 1.5
    assert returncode == 0, log
    assert "second signal" in log
    assert read_all(busy) == b""
