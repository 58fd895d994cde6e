"""Size limits, timeouts (autojump clock) and the connection limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from examples.echo import Echo
from peregrine_rt.testing import open_client

from .conftest import Reader, exchange, get, open_server


class Counting:
    """Echo that counts how often it was called."""

    calls = 0

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        Counting.calls += 1
        if request.path == "/sleep":
            await trio.sleep(10)
        body = await request.body()
        response.text(f"n={len(body)}")


async def expect_error_then_eof(stream: trio.abc.Stream, status: int) -> None:
    reader = Reader(stream)
    resp = await reader.response()
    assert resp.status == status, (resp.status, resp.body)
    assert resp.header("connection") == "close"
    assert resp.header("content-type") == "text/plain; charset=utf-8"
    await reader.expect_eof()


# -- sizes ------------------------------------------------------------------------------


# raw bytes: a pipelined request behind the refusal must go unanswered, then EOF
async def test_request_line_too_long_gives_414() -> None:
    Counting.calls = 0
    async with open_server(Counting, max_request_line=200) as h:
        stream = await h.connect()
        await stream.send_all(get("/" + "a" * 300) + get("/next"))
        await expect_error_then_eof(stream, 414)
        # a line just under the limit is fine
        stream = await h.connect()
        target = "/" + "a" * (200 - len("GET / HTTP/1.1") - 1)
        assert (await exchange(stream, get(target))).status == 200
    assert Counting.calls == 1


# raw bytes: an unfinished request line
async def test_unfinished_request_line_over_the_limit_gives_414_at_once() -> None:
    async with open_server(Counting, max_request_line=200, header_timeout=60) as h:
        stream = await h.connect()
        with trio.fail_after(5):  # long before the header timeout
            await stream.send_all(b"GET /" + b"a" * 400)
            await expect_error_then_eof(stream, 414)


# raw bytes: a pipelined request behind the refusal must go unanswered, then EOF
@pytest.mark.parametrize(
    ("headers", "config"),
    [
        ([f"X-Long: {'v' * 300}"], {"max_header_line": 200}),
        ([f"X-H{i}: v" for i in range(6)], {"max_header_count": 5}),
        ([f"X-H{i}: {'v' * 150}" for i in range(10)], {"max_headers_size": 1000}),
    ],
    ids=["header-line", "header-count", "head-size"],
)
async def test_header_limits_give_431(headers: list[str], config: dict[str, Any]) -> None:
    Counting.calls = 0
    async with open_server(Counting, **config) as h:
        stream = await h.connect()
        await stream.send_all(get("/", *headers) + get("/next"))
        await expect_error_then_eof(stream, 431)
    assert Counting.calls == 0


async def test_header_count_at_the_limit_is_accepted() -> None:
    async with open_client(Counting, max_header_count=5) as client:
        # Host plus four more: five header lines
        resp = await client.get("/", headers={f"X-H{i}": "v" for i in range(4)})
        assert resp.status == 200


# raw bytes: the head alone, the body never sent
async def test_content_length_over_max_body_size_gives_413_before_the_handler() -> None:
    Counting.calls = 0
    async with open_server(Counting, max_body_size=100) as h:
        stream = await h.connect()
        # The head alone: the server must not wait for the body to refuse it.
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
        await expect_error_then_eof(stream, 413)
        stream = await h.connect()
        assert (await exchange(stream, get("POST /", body=b"x" * 100))).body == b"n=100"
    assert Counting.calls == 1


# raw bytes: the refusal arrives mid-body, then EOF
async def test_chunked_body_over_max_body_size_gives_413_while_streaming() -> None:
    async with open_server(Echo, max_body_size=100) as h:
        stream = await h.connect()
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        await stream.send_all(b"40\r\n" + b"x" * 64 + b"\r\n")
        await stream.send_all(b"40\r\n" + b"x" * 64 + b"\r\n")  # 128 > 100: refused here
        await expect_error_then_eof(stream, 413)


async def test_no_body_limit_when_max_body_size_is_none() -> None:
    async with open_client(Echo, max_body_size=None) as client:
        resp = await client.post("/", content=b"x" * 2_000_000)
        assert resp.status == 200
        assert resp.content.endswith(b"body_len=2000000")


# -- timeouts (virtual time) -----------------------------------------------------------


# raw bytes: half a request head
async def test_half_a_head_gets_408_after_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Counting, header_timeout=3, keep_alive_timeout=10) as h:
        stream = await h.connect()
        start = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Half")
        await expect_error_then_eof(stream, 408)
        assert 3 <= trio.current_time() - start <= 4


# raw bytes: a head trickled byte by byte, never finished
async def test_slowloris_trickling_a_head_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Counting, header_timeout=3, keep_alive_timeout=10) as h:
        stream = await h.connect()
        start = trio.current_time()
        head = get("/", *(f"X-H{i}: {'v' * 20}" for i in range(20)))
        got = b""

        async def trickle() -> None:
            try:
                for byte in head[:-1]:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.25)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            got = await Reader(stream).read_to_eof()
            nursery.cancel_scope.cancel()
        assert got.startswith(b"HTTP/1.1 408 ")
        assert 3 <= trio.current_time() - start <= 4


# needs the moment of EOF on a connection that sent nothing
async def test_silent_connection_is_closed_after_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Counting, header_timeout=3, keep_alive_timeout=10) as h:
        stream = await h.connect()
        start = trio.current_time()
        await Reader(stream).expect_eof()  # no request under way: closed without a 408
        assert 3 <= trio.current_time() - start <= 4


# needs the moment of EOF, and that nothing (no 408) came before it
async def test_idle_keep_alive_connection_is_closed_without_408(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Counting, header_timeout=10, keep_alive_timeout=3) as h:
        stream = await h.connect()
        reader = Reader(stream)
        await stream.send_all(get("/"))
        assert (await reader.response()).status == 200
        start = trio.current_time()
        await reader.expect_eof()
        assert 3 <= trio.current_time() - start <= 4


async def test_keep_alive_connection_used_within_the_timeout_stays_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_client(Counting, header_timeout=10, keep_alive_timeout=3) as client,
        client.connection() as conn,
    ):
        for _ in range(4):  # 4 x 2 s idle: more than the timeout in total, never at once
            assert (await conn.get("/")).status == 200
            await trio.sleep(2)
        assert (await conn.get("/")).status == 200


# raw bytes: half the head of a second request
async def test_header_timeout_of_a_second_request_runs_from_its_first_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``header_timeout`` counts "from the first byte" (Config), not from the last response."""
    async with open_server(Counting, header_timeout=2, keep_alive_timeout=5) as h:
        stream = await h.connect()
        reader = Reader(stream)
        await stream.send_all(get("/"))
        assert (await reader.response()).status == 200
        await trio.sleep(1.5)  # idle, well within keep_alive_timeout
        first_byte = trio.current_time()
        await stream.send_all(b"GET /second HTTP/1.1\r\nHost: a\r\n")
        await expect_error_then_eof(stream, 408)
        assert trio.current_time() - first_byte >= 2


# raw bytes: a body cut short, and the 408 read while it is unfinished
async def test_body_timeout_while_the_handler_reads_gives_408(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Echo, header_timeout=10, body_timeout=3, keep_alive_timeout=10) as h:
        stream = await h.connect()
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        start = trio.current_time()
        await expect_error_then_eof(stream, 408)
        assert 3 <= trio.current_time() - start <= 4


async def test_body_timeout_is_silence_not_total_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slowly() -> AsyncIterator[bytes]:
        for byte in b"hello":
            await trio.sleep(2)
            yield bytes([byte])

    async with open_client(
        Echo, header_timeout=10, body_timeout=3, keep_alive_timeout=10
    ) as client:
        resp = await client.post(
            "/", headers={"Content-Length": "5"}, content=slowly(), timeout=None
        )
        assert resp.status == 200
        assert resp.content.endswith(b"body_len=5")


async def test_a_slow_handler_is_not_timed_out(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Counting, header_timeout=2, body_timeout=2) as client:
        start = trio.current_time()
        resp = await client.get("/sleep", timeout=None)
        assert resp.status == 200
        assert trio.current_time() - start >= 10


# raw bytes: a half-sent request holds the slow connection
async def test_a_slow_client_does_not_block_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Counting, header_timeout=5) as h:
        slow = await h.connect()
        await slow.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        await slow.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n")  # nonsense body bytes, slowly
        fast = await h.connect()
        start = trio.current_time()
        assert (await exchange(fast, get("/"))).status == 200
        assert trio.current_time() - start < 0.1  # virtual time: nothing waited


# raw bytes: a half-sent request holds the slow connection
async def test_a_slow_tcp_client_does_not_block_another() -> None:
    async with open_server(Counting, transport="tcp", header_timeout=5) as h:
        slow = await h.connect()
        await slow.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Partial: ")
        with trio.fail_after(2):
            for _ in range(3):
                fast = await h.connect()
                assert (await exchange(fast, get("/"))).status == 200
                await fast.aclose()
        await slow.send_all(b"1\r\n\r\n")
        assert (await Reader(slow).response()).status == 200


# -- the connection limit (real sockets) ---------------------------------------------------


# raw sockets: the 503 comes unasked on a connection over the limit, then EOF
async def test_max_connections_refuses_with_503_then_recovers() -> None:
    async with open_server(Counting, transport="tcp", max_connections=2) as h:
        first, second = await h.connect(), await h.connect()
        for stream in (first, second):  # both accepted and served
            assert (await exchange(stream, get("/"))).status == 200
        assert len(h.server.connections) == 2

        third = await h.connect()
        reader = Reader(third)
        resp = await reader.response()
        assert resp.status == 503
        assert resp.header("connection") == "close"
        assert resp.header("retry-after") == "1"
        await reader.expect_eof()
        assert len(h.server.connections) == 2

        await first.aclose()
        with trio.fail_after(2):
            await h.wait_connections(1)
        fourth = await h.connect()
        assert (await exchange(fourth, get("/"))).status == 200
        # the survivor still works too
        assert (await exchange(second, get("/"))).status == 200


# raw bytes: a body left unfinished after the response, then the moment of EOF
async def test_stalled_drain_after_a_response_sends_no_second_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server answered, then drains an unread body; if the client stalls there, it closes.

    A 408 at that point would be a second response to one request, which the
    client would take as the answer to its next one.
    """

    class NoRead:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.text("answered")

    async with open_server(NoRead, body_timeout=2, header_timeout=10, max_drain=1000) as h:
        stream = await h.connect()
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 500\r\n\r\n" + b"x" * 100
        )
        reader = Reader(stream)
        resp = await reader.response()
        assert resp.body == b"answered"
        start = trio.current_time()
        rest = await reader.read_to_eof()
        assert rest == b"", rest
        assert 2 <= trio.current_time() - start <= 3
