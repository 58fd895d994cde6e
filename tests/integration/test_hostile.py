"""Hostile and malformed input through the real server: the right 4xx, then EOF, never a desync.

Every case is followed by a pipelined request for ``/smuggled``: a server that
lost track of the framing would answer it.  The client must see exactly one
response (the error) and then the end of the stream.
"""

from __future__ import annotations

import logging
import ssl

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from examples.echo import Echo

from .conftest import Reader, exchange, get, open_server

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="example.com")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


POST = b"POST / HTTP/1.1\r\nHost: a\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

CASES: list[tuple[str, bytes, int]] = [
    # framing conflicts (request smuggling)
    ("cl-te", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("cl-cl-differ", POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("cl-list-differ", POST + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("cl-negative", POST + b"Content-Length: -1\r\n\r\n", 400),
    ("cl-plus", POST + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-hex", POST + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("cl-huge", POST + b"Content-Length: 9999999999999999999\r\n\r\n", 413),
    ("cl-absurd", POST + b"Content-Length: 99999999999999999999999999\r\n\r\n", 400),
    ("te-not-final-chunked", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te-gzip-only", POST + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("te-chunked-twice", POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("te-space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    # header syntax
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400),
    ("nul-in-name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x00A: b\r\n\r\n", 400),
    ("cr-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400),
    ("bad-name-char", b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\nHost: a\r\nJustAName\r\n\r\n", 400),
    ("no-host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("bad-host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    # chunked framing
    ("chunk-size-garbage", CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-negative", CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-0x", CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-empty", CHUNKED + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", CHUNKED + b"f" * 40 + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk-size-bare-lf", CHUNKED + b"5\nhello\r\n0\r\n\r\n", 400),
    ("chunk-data-bare-lf", CHUNKED + b"5\r\nhello\n0\r\n\r\n", 400),
    ("chunk-data-too-long", CHUNKED + b"5\r\nhello!!\r\n0\r\n\r\n", 400),
    ("chunk-ext-too-long", CHUNKED + b"5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400),
    ("last-chunk-bare-lf", CHUNKED + b"5\r\nhello\r\n0\n\n", 400),
    ("too-many-trailers", CHUNKED + b"0\r\n" + b"X-T: v\r\n" * 1001 + b"\r\n", 431),
    # request line
    ("request-line-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (
        "header-line-too-long",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"v" * 9000 + b"\r\n\r\n",
        431,
    ),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("lowercase-version", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("missing-version", b"GET /\r\nHost: a\r\n\r\n", 400),
    ("http-3", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("garbage", b"\x00\xff\xfe\x80 garbage garbage\r\n\r\n", 400),
    (
        "binary-line",
        bytes(range(1, 256)).replace(b"\n", b"").replace(b"\r", b"") + b"\r\n\r\n",
        400,
    ),
]


async def send_tolerant(stream: trio.abc.Stream, data: bytes, bytewise: bool) -> None:
    """Send ``data`` (one byte per write if ``bytewise``), stopping if the server hung up."""
    try:
        if bytewise:
            for i in range(len(data)):
                await stream.send_all(data[i : i + 1])
        else:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("data", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_hostile_request_gets_one_error_then_eof(
    data: bytes, status: int, bytewise: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_server(Echo, header_timeout=30) as h:
        stream = await h.connect()
        with trio.fail_after(5):  # an answer, not a timeout
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_tolerant, stream, data + SMUGGLED, bytewise)
                reader = Reader(stream)
                responses = await reader.responses_until_eof()
        assert [r.status for r in responses] == [status]
        assert responses[0].header("connection") == "close"
        assert b"target=/smuggled" not in responses[0].body
        # the server is unharmed
        fresh = await h.connect()
        assert (await exchange(fresh, get("/ok"))).body == b"method=GET target=/ok body_len=0"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_tls_client_hello_on_a_plain_port_is_refused_promptly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A 400 at once, not a 408 after the header timeout: the first line is
    # already invalid (a real ClientHello has LF bytes in fixed places).
    async with open_server(Echo, header_timeout=10) as h:
        stream = await h.connect()
        start = trio.current_time()
        await stream.send_all(client_hello())
        responses = await Reader(stream).responses_until_eof()
        assert [r.status for r in responses] == [400]
        assert trio.current_time() - start < 1


async def test_smuggling_example_from_the_brief_over_tcp() -> None:
    async with open_server(Echo, transport="tcp") as h:
        stream = await h.connect()
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        with trio.fail_after(5):
            received = await Reader(stream).read_to_eof()
        assert received.startswith(b"HTTP/1.1 400 ")
        assert received.count(b"HTTP/1.1") == 1
        assert b"/smuggled" not in received


async def test_error_after_good_pipelined_requests_keeps_the_good_answers() -> None:
    async with open_server(Echo) as h:
        stream = await h.connect()
        await stream.send_all(
            get("/one")
            + get("POST /two", body=b"xy")
            + b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"
            + SMUGGLED
        )
        responses = await Reader(stream).responses_until_eof()
        assert [r.status for r in responses] == [200, 200, 400]
        assert responses[1].body == b"method=POST target=/two body_len=2"


class Mixed:
    def __init__(self) -> None:
        self.release = trio.Event()

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/boom":
            raise ValueError("kaboom")
        if request.path == "/wait":
            await self.release.wait()
            body = await request.body()
            response.text(f"waited {len(body)}")
        elif request.path == "/release":
            self.release.set()
            response.text("released")


async def test_failures_on_one_connection_do_not_affect_a_concurrent_one() -> None:
    async with open_server(Mixed) as h:
        waiting = await h.connect()
        await waiting.send_all(get("POST /wait", body=b"abc"))
        await trio.testing.wait_all_tasks_blocked()  # its handler waits for the release
        # a handler exception on another connection
        boom = await h.connect()
        assert (await exchange(boom, get("/boom"))).status == 500
        # a protocol error on a third
        bad = await h.connect()
        await bad.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n")
        assert [r.status for r in await Reader(bad).responses_until_eof()] == [400]
        assert not h.server.handler_instance.release.is_set()
        # the in-flight request is still there and completes
        release = await h.connect()
        assert (await exchange(release, get("/release"))).body == b"released"
        resp = await Reader(waiting).response()
        assert resp.body == b"waited 3"
        # and the boom connection is still usable
        assert (await exchange(boom, get("/release"))).status == 200


async def test_plain_http_on_a_closed_client_mid_response_does_not_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client that disconnects mid-request is not an error worth a traceback."""
    async with open_server(Echo) as h:
        stream = await h.connect()
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        await trio.testing.wait_all_tasks_blocked()  # the server waits for the rest of the body
        await stream.aclose()
        await h.wait_connections(0)
        fresh = await h.connect()
        assert (await exchange(fresh, get("/"))).status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
