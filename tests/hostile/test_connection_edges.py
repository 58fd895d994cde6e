"""The small ones from the hostile-input review, each with its test.

* the first request's ``header_timeout`` counts from the connection's start (as
  the configuration page says), not from its first byte;
* refusals at ``max_connections`` are logged, at most once per interval, with a count;
* the 503 at the limit is followed by an orderly close (no reset that could
  destroy it while the client is still sending);
* HTTP/1.0 requests are answered with an ``HTTP/1.1`` status line (RFC 9110 §2.5).
"""

from __future__ import annotations

import logging
import socket

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt import _admission
from tests.integration.conftest import Reader, get, open_server


class Hello:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("hello")


# raw bytes: the first byte of the first request, late
async def test_the_first_requests_header_timeout_counts_from_connecting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Hello, header_timeout=3, keep_alive_timeout=10) as h:
        stream = await h.connect()
        start = trio.current_time()
        await trio.sleep(2)  # silent for 2 of the 3 seconds
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n")  # then half a head
        resp = await Reader(stream).response()
        assert resp.status == 408
        assert 3 <= trio.current_time() - start <= 4  # 3 s after connecting, not 5


# raw bytes: the whole head in time, though its first byte came late
async def test_a_head_finished_in_time_is_served(autojump_clock: trio.testing.MockClock) -> None:
    async with open_server(Hello, header_timeout=3, keep_alive_timeout=10) as h:
        stream = await h.connect()
        await trio.sleep(2.5)
        await stream.send_all(get("/"))
        assert (await Reader(stream).response()).status == 200


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


async def test_refusals_at_the_limit_are_counted_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_admission, "REFUSAL_LOG_INTERVAL", 3600.0)
    caplog.set_level(logging.WARNING, logger="peregrine_rt.error")
    async with open_server(Hello, transport="tcp", max_connections=1) as h:
        kept = await h.connect()
        await h.wait_connections(1)
        for _ in range(5):
            refused = await h.connect()
            resp = await Reader(refused).response()
            assert resp.status == 503
        assert h.server.refused_connections == 5
        lines = [r.getMessage() for r in caplog.records if "connection limit" in r.getMessage()]
        assert len(lines) == 1, lines  # the first refusal is reported; the rest wait
        assert "max_connections=1" in lines[0] and "1 connection(s) refused" in lines[0]
        monkeypatch.setattr(_admission, "REFUSAL_LOG_INTERVAL", 0.0)
        refused = await h.connect()
        assert (await Reader(refused).response()).status == 503
        lines = [r.getMessage() for r in caplog.records if "connection limit" in r.getMessage()]
        assert len(lines) == 2
        assert "5 connection(s) refused" in lines[1] and "(6 in all)" in lines[1]
        await kept.aclose()


def _refused_while_sending(port: int, size: int) -> tuple[bytes, str]:
    """Connect over the limit and send a big request at once; read the answer to its end."""
    sock = _connect(port)
    body = b"x" * size
    try:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size + body
        )
    except OSError:
        pass  # the server may have half-closed already; what counts is what we read
    data = b""
    ending = "eof"
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        ending = "reset"
    finally:
        sock.close()
    return data, ending


async def test_the_503_at_the_limit_is_followed_by_an_orderly_close() -> None:
    """The refused client is still sending its request: it reads the 503, then EOF, not a reset."""
    async with open_server(Hello, transport="tcp", max_connections=1) as h:
        kept = await h.connect()
        await h.wait_connections(1)
        for _ in range(3):
            data, ending = await trio.to_thread.run_sync(
                _refused_while_sending, h.server.port, 200_000
            )
            assert data.startswith(b"HTTP/1.1 503 "), data[:100]
            assert ending == "eof"
        await kept.aclose()


# raw bytes: HTTP/1.0 requests
@pytest.mark.parametrize("keep_alive", [False, True])
async def test_http10_requests_get_an_http11_status_line(keep_alive: bool) -> None:
    async with open_server(Hello) as h:
        stream = await h.connect()
        extra = ("Connection: keep-alive",) if keep_alive else ()
        await stream.send_all(get("/", *extra, version="1.0"))
        resp = await Reader(stream).response()
        assert (resp.version, resp.status) == (b"HTTP/1.1", 200)
        # the framing still follows the request's version
        assert resp.header("connection") == ("keep-alive" if keep_alive else "close")
        assert resp.header("transfer-encoding") is None


# raw bytes: 200 short header lines, well within the head's size limit
async def test_200_short_headers_are_served() -> None:
    """The head's size is the guard: nginx, Go and h11 accept this; it used to get 431."""
    async with open_server(Hello) as h:
        stream = await h.connect()
        head = get("/", *(f"X-H{i}: v" for i in range(200)))
        assert len(head) < 4096
        await stream.send_all(head)
        assert (await Reader(stream).response()).status == 200


# raw bytes: more lines than the count limit, and a head over the size limit
@pytest.mark.parametrize(
    ("lines", "width", "config"),
    [(1001, 4, {}), (600, 200, {})],
    ids=["count", "size"],
)
async def test_the_head_limits_still_hold(lines: int, width: int, config: dict[str, int]) -> None:
    async with open_server(Hello, **config) as h:
        stream = await h.connect()
        await stream.send_all(get("/", *(f"X-H{i}: {'v' * width}" for i in range(lines))))
        assert (await Reader(stream).response()).status == 431
