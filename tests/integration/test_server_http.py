"""HTTP/1.x behaviour of the server, end to end, over memory streams and loopback sockets."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from examples.echo import Echo
from peregrine_rt.testing import open_client, wait_until
from peregrine_rt.testing import open_server as open_live_server

from .conftest import H11Client, Reader, client_over, exchange, get, h11_header, open_server


class App:
    """One handler with a route per behaviour under test."""

    def __init__(self) -> None:
        self.seen: list[pr.Request] = []
        self.pieces_out, self.pieces_in = trio.open_memory_channel[bytes](100)

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        self.seen.append(request)
        path = request.path
        if path == "/text":
            response.text("hello")
        elif path == "/html":
            response.html("<p>hi</p>", status=201)
        elif path == "/json":
            response.json({"got": await request.json(), "ünï": 1})
        elif path == "/pieces":
            count = 0
            async for piece in request.stream():
                count += 1
                await self.pieces_out.send(piece)
            response.text(f"pieces={count}")
        elif path == "/nocontent":
            response.status = 204
            response.headers["x-kind"] = "none"
        elif path == "/notmodified":
            response.status = 304
            response.headers["etag"] = '"v1"'
        elif path == "/noread":
            response.text("did not read")
        elif path == "/close":
            response.close_connection = True
            response.text("closing")
        elif path == "/stream":
            async with response.stream(content_type="text/plain") as send:
                parts: tuple[str | bytes, ...] = ("a", "bb", b"ccc")
                for part in parts:
                    await send(part)
        elif path == "/cookies":
            response.json(request.cookies)
            response.set_cookie("sid", "abc", max_age=60)
            response.set_cookie("pref", "dark", path=None, secure=True, samesite="strict")
            response.delete_cookie("gone")
        elif path == "/query":
            q = request.query
            response.json(
                {
                    "a": q.getlist("a"),
                    "first_a": q["a"],
                    "b": q.get("b"),
                    "c": q.get("c"),
                    "d": q.get("d"),
                    "missing": q.getlist("zz"),
                    "items": q.multi_items(),
                }
            )
        elif path == "/boom":
            response.headers["x-partial"] = "set before the error"
            raise RuntimeError("secret-detail from the handler")
        elif path == "/info":
            response.json(
                {
                    "client": list(request.client) if request.client else None,
                    "scheme": request.scheme,
                    "version": request.http_version,
                    "keep_alive": request.keep_alive,
                }
            )
        else:
            body = await request.body()
            response.text(f"method={request.method} target={request.target.decode()} n={len(body)}")


# -- keep-alive, close, versions ---------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection(transport: str) -> None:
    async with client_over(App, transport) as (client, server), client.connection() as conn:
        for i in range(5):
            resp = await conn.get(f"/n{i}")
            assert resp.status == 200
            assert resp.content == f"method=GET target=/n{i} n=0".encode()
            assert resp.headers.get("connection") is None
        assert len(server.connections) == 1
        assert len(server.handler_instance.seen) == 5


# needs to see the server close the socket (EOF), which the client does not expose
async def test_connection_close_is_honoured(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        stream = await h.connect()
        client = H11Client(stream)
        resp, body = await client.request("GET", "/text", [("Connection", "close")])
        assert resp.status_code == 200
        assert body == b"hello"
        assert h11_header(resp, "connection") == "close"
        assert await stream.receive_some(100) == b""  # the server closed


# raw bytes: pipelined requests, the second must go unanswered
async def test_handler_can_ask_to_close() -> None:
    async with open_server(App) as h:
        stream = await h.connect()
        await stream.send_all(get("/close") + get("/text"))
        reader = Reader(stream)
        responses = await reader.responses_until_eof()
        assert [r.body for r in responses] == [b"closing"]
        assert responses[0].header("connection") == "close"


# raw bytes: HTTP/1.0 requests (the client speaks HTTP/1.1 only)
async def test_http10_closes_by_default(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        stream = await h.connect()
        await stream.send_all(get("/text", version="1.0") + get("/text", version="1.0"))
        responses = await Reader(stream).responses_until_eof()
        assert len(responses) == 1
        assert responses[0].version == b"HTTP/1.1"  # the server's version (RFC 9110 §2.5)
        assert responses[0].body == b"hello"
        assert responses[0].header("connection") == "close"


# raw bytes: HTTP/1.0 requests (the client speaks HTTP/1.1 only)
async def test_http10_keep_alive_when_asked(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        stream = await h.connect()
        reader = Reader(stream)
        for _ in range(2):
            await stream.send_all(get("/text", "Connection: keep-alive", version="1.0"))
            resp = await reader.response()
            assert resp.version == b"HTTP/1.1"
            assert resp.header("connection") == "keep-alive"
            assert resp.header("content-length") == "5"
            assert resp.body == b"hello"
        await stream.send_all(get("/text", version="1.0"))
        assert (await reader.response()).header("connection") == "close"
        await reader.expect_eof()


# raw bytes: pipelined requests sent in one write
async def test_pipelined_requests_are_answered_in_order(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        stream = await h.connect()
        await stream.send_all(
            get("POST /1", body=b"one")
            + get("/2")
            + get("POST /3", "Transfer-Encoding: chunked", body=b"3\r\nthr\r\n2\r\nee\r\n0\r\n\r\n")
        )
        reader = Reader(stream)
        bodies = [(await reader.response()).body for _ in range(3)]
        assert bodies == [
            b"method=POST target=/1 n=3",
            b"method=GET target=/2 n=0",
            b"method=POST target=/3 n=5",
        ]


# raw bytes: requests trickled one byte at a time
async def test_pipelined_requests_trickled_one_byte_at_a_time() -> None:
    async with open_server(App) as h:
        stream = await h.connect()
        data = get("/a") + get("POST /b", body=b"xyz") + get("/c", "Connection: close")
        for i in range(len(data)):
            await stream.send_all(data[i : i + 1])
        responses = await Reader(stream).responses_until_eof()
        assert [r.body for r in responses] == [
            b"method=GET target=/a n=0",
            b"method=POST target=/b n=3",
            b"method=GET target=/c n=0",
        ]


# -- request bodies -----------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_echo_reads_the_body(transport: str, chunked: bool) -> None:
    body = bytes(range(256)) * 100  # 25,600 bytes
    async with client_over(Echo, transport) as (client, _), client.connection() as conn:
        # bytes go with a Content-Length; an iterable of bytes is sent chunked
        content = [body] if chunked else body
        resp = await conn.post("/upload?x=1", content=content)
        assert resp.status == 200
        assert resp.content == b"method=POST target=/upload?x=1 body_len=25600"
        resp = await conn.get("/after")
        assert resp.content == b"method=GET target=/after body_len=0"


async def test_request_stream_yields_pieces_as_they_arrive() -> None:
    app = App()

    async def upload() -> AsyncIterator[bytes]:  # sent chunked, one chunk per piece
        yield b"hello"
        with trio.fail_after(2):
            assert await app.pieces_in.receive() == b"hello"  # before the rest was sent
        yield b" world"
        with trio.fail_after(2):
            assert await app.pieces_in.receive() == b" world"

    async with open_client(app) as client:
        resp = await client.post("/pieces", content=upload())
        assert resp.content == b"pieces=2"


async def test_request_json() -> None:
    async with open_client(App) as client:
        payload = {"a": [1, 2], "s": "ünïcode"}
        resp = await client.post("/json", json=payload)
        assert resp.status == 200
        assert resp.headers.get("content-type") == "application/json"
        assert resp.json() == {"got": payload, "ünï": 1}
        assert b" " not in resp.content  # compact separators


# raw bytes: Expect: 100-continue and the interim response (the client skips 1xx)
async def test_100_continue_sent_only_when_the_handler_reads(transport: str) -> None:
    async with open_server(Echo, transport=transport) as h:
        stream = await h.connect()
        reader = Reader(stream)
        await stream.send_all(
            b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await reader.response("POST")
        assert interim.status == 100
        await stream.send_all(b"hello")
        final = await reader.response("POST")
        assert final.status == 200
        assert final.body == b"method=POST target=/up body_len=5"
        assert final.header("connection") is None
        # and the connection goes on
        await stream.send_all(get("/next"))
        assert (await reader.response()).body == b"method=GET target=/next body_len=0"


# raw bytes: Expect: 100-continue with the body held back, then EOF
async def test_no_100_continue_when_the_handler_does_not_read(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        stream = await h.connect()
        reader = Reader(stream)
        await stream.send_all(
            b"POST /noread HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        resp = await reader.response("POST")
        assert resp.status == 200  # the final answer straight away, no 100 before it
        assert resp.body == b"did not read"
        assert resp.header("connection") == "close"
        await reader.expect_eof()


# raw bytes: pipelined requests behind unread bodies, read until EOF
async def test_unread_small_body_is_drained_and_the_connection_goes_on(transport: str) -> None:
    async with open_server(App, transport=transport, max_drain=1000) as h:
        stream = await h.connect()
        await stream.send_all(
            get("POST /noread", body=b"x" * 1000)
            + get("POST /noread", body=b"y" * 10)
            + get("/after", "Connection: close")
        )
        responses = await Reader(stream).responses_until_eof()
        assert [r.body for r in responses] == [
            b"did not read",
            b"did not read",
            b"method=GET target=/after n=0",
        ]
        assert responses[0].header("connection") is None


# raw bytes: a smuggled pipelined request after an unread body, then EOF
async def test_unread_big_body_closes_the_connection(transport: str) -> None:
    async with open_server(App, transport=transport, max_drain=1000) as h:
        stream = await h.connect()
        reader = Reader(stream)
        # The client sends the whole request before reading, as a simple client does.
        await stream.send_all(get("POST /noread", body=b"x" * 1001) + get("/smuggled"))
        resp = await reader.response()
        assert resp.status == 200
        assert resp.body == b"did not read"
        assert resp.header("connection") == "close"
        rest = await reader.read_to_eof()
        assert b"smuggled" not in rest
        assert rest == b""


# raw socket: reads the response while still uploading (lingering close)
async def test_unread_large_upload_still_gets_its_response_over_tcp() -> None:
    """A client still sending a body the server will not read must get the response.

    Closing a socket with unread input makes the kernel send a RST, which can
    destroy the response before the client reads it; a server must half-close
    and discard input for a while ("lingering close") instead.
    """

    class Answering(App):
        answered = False

        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await super().handle(request, response)
            self.answered = True

    async with open_server(Answering, transport="tcp", max_drain=1000) as h:
        app = h.server.handler_instance
        stream = await h.connect()
        head = b"POST /noread HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
        got: list[bytes] = []

        async def upload() -> None:
            try:
                await stream.send_all(head)
                for _ in range(10):
                    await stream.send_all(b"x" * 100_000)
                    await trio.sleep(0.01)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            # The server has answered and closed before the client reads.
            await wait_until(lambda: app.answered and not h.server.connections)
            try:
                while data := await stream.receive_some(65536):
                    got.append(bytes(data))
            except trio.BrokenResourceError:
                pass
            nursery.cancel_scope.cancel()
        assert b"".join(got).startswith(b"HTTP/1.1 200 OK\r\n"), got


# raw bytes: the pipelined request past the limit must go unanswered
async def test_max_requests_per_connection(transport: str) -> None:
    async with open_server(App, transport=transport, max_requests_per_connection=2) as h:
        stream = await h.connect()
        await stream.send_all(get("/1") + get("/2") + get("/3"))
        responses = await Reader(stream).responses_until_eof()
        assert [r.body for r in responses] == [
            b"method=GET target=/1 n=0",
            b"method=GET target=/2 n=0",
        ]
        assert responses[0].header("connection") is None
        assert responses[1].header("connection") == "close"


# raw bytes: the pipelined request past the limit must go unanswered
async def test_max_requests_per_connection_applies_to_streamed_responses() -> None:
    async with open_server(App, max_requests_per_connection=1) as h:
        stream = await h.connect()
        await stream.send_all(get("/stream") + get("/text"))
        responses = await Reader(stream).responses_until_eof()
        assert [r.body for r in responses] == [b"abbccc"]
        assert responses[0].header("connection") == "close"


# -- response shapes ----------------------------------------------------------------


async def test_text_html_json_responses() -> None:
    async with open_client(App) as client:
        resp = await client.get("/text")
        assert (resp.status, resp.content) == (200, b"hello")
        assert resp.headers.get("content-type") == "text/plain; charset=utf-8"
        assert resp.headers.get("content-length") == "5"
        assert resp.headers.get("date") is not None
        resp = await client.get("/html")
        assert (resp.status, resp.content) == (201, b"<p>hi</p>")
        assert resp.headers.get("content-type") == "text/html; charset=utf-8"
        resp = await client.post("/json", content=b"[1]")
        assert resp.headers.get("content-type") == "application/json"
        assert resp.headers.get("content-length") == str(len(resp.content))
        assert resp.json() == {"got": [1], "ünï": 1}


async def test_head_gets_headers_and_no_body() -> None:
    async with open_client(App) as client, client.connection() as conn:
        head = await conn.head("/text")
        assert head.status == 200
        assert head.content == b""
        assert head.headers.get("content-length") == "5"
        assert head.headers.get("content-type") == "text/plain; charset=utf-8"
        # had the HEAD response carried a body, h11 would read it as the next response
        nxt = await conn.get("/text")
        assert nxt.status == 200
        assert nxt.content == b"hello"


@pytest.mark.parametrize(("path", "status"), [("/nocontent", 204), ("/notmodified", 304)])
async def test_204_and_304_have_no_body(path: str, status: int) -> None:
    async with open_client(App) as client, client.connection() as conn:
        # had the first response carried a body, h11 would read it as the next response
        responses = [await conn.get(path), await conn.get("/text")]
        assert [r.status for r in responses] == [status, 200]
        assert responses[0].content == b""
        assert responses[0].headers.get("transfer-encoding") is None
        if status == 204:
            assert responses[0].headers.get("content-length") is None
            assert responses[0].headers.get("x-kind") == "none"
        else:
            assert responses[0].headers.get("etag") == '"v1"'
        assert responses[1].content == b"hello"


async def test_streamed_response_is_chunked_for_http11(transport: str) -> None:
    async with client_over(App, transport) as (client, _), client.connection() as conn:
        resp = await conn.get("/stream")
        assert resp.status == 200
        assert resp.headers.get("transfer-encoding") == "chunked"
        assert resp.chunks == [b"a", b"bb", b"ccc"]
        assert resp.headers.get("content-length") is None
        assert resp.headers.get("content-type") == "text/plain"
        assert resp.headers.get("connection") is None
        # keep-alive after a chunked stream
        assert (await conn.get("/text")).content == b"hello"


# raw bytes: an HTTP/1.0 request (the client speaks HTTP/1.1 only)
async def test_streamed_response_is_close_delimited_for_http10(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        stream = await h.connect()
        await stream.send_all(get("/stream", "Connection: keep-alive", version="1.0"))
        reader = Reader(stream)
        resp = await reader.response()
        assert resp.version == b"HTTP/1.1"
        assert not resp.chunked
        assert resp.header("transfer-encoding") is None
        assert resp.header("content-length") is None
        assert resp.header("connection") == "close"
        assert resp.body == b"abbccc"  # read until EOF


async def test_head_with_streamed_response_sends_no_body() -> None:
    async with open_client(App) as client, client.connection() as conn:
        head = await conn.head("/stream")
        assert head.status == 200
        assert head.content == b""
        # had the HEAD response carried a body, h11 would read it as the next response
        nxt = await conn.get("/text")
        assert nxt.content == b"hello"


async def test_streamed_response_through_h11() -> None:
    async with open_client(App) as client, client.connection() as conn:
        for _ in range(2):
            resp = await conn.get("/stream")
            assert resp.status == 200
            assert resp.content == b"abbccc"


# -- cookies, query, request attributes ------------------------------------------------


async def test_cookies_are_parsed_and_set() -> None:
    async with open_client(App) as client:
        # a hand-written Cookie header: duplicates, quotes, junk (cookies= writes a clean one)
        resp = await client.get("/cookies", headers={"Cookie": 'a=1; b="two"; a=3;c=x; junk'})
        assert resp.json() == {"a": "1", "b": "two", "c": "x"}
        assert resp.headers.getlist("set-cookie") == [
            "sid=abc; Max-Age=60; Path=/; HttpOnly; SameSite=Lax",
            "pref=dark; Secure; HttpOnly; SameSite=Strict",
            "gone=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax",
        ]


async def test_cookie_names_and_values_are_trimmed_alike() -> None:
    # The value around '=' is trimmed; the name must be too, or the cookie is
    # stored under "c " and request.cookies["c"] misses it.
    async with open_client(App) as client:
        resp = await client.get("/cookies", headers={"Cookie": "c = x ;d=y"})
        assert resp.json() == {"c": "x", "d": "y"}


async def test_query_parameters() -> None:
    async with open_client(App) as client:
        resp = await client.get("/query?a=1&b=x+y&a=2&c=%E2%9C%93&d=")
        assert resp.json() == {
            "a": ["1", "2"],
            "first_a": "1",
            "b": "x y",
            "c": "✓",
            "d": "",
            "missing": [],
            "items": [["a", "1"], ["b", "x y"], ["a", "2"], ["c", "✓"], ["d", ""]],
        }


# needs the exact peer address: the client's own socket name, or one given to handle_stream
async def test_request_client_and_scheme(transport: str) -> None:
    async with open_server(App, transport=transport) as h:
        if transport == "tcp":
            stream = await h.connect()
            assert isinstance(stream, trio.SocketStream)
            host, port = stream.socket.getsockname()[:2]
            expected = [host, port]
        else:
            stream = await h.connect(client=("192.0.2.7", 4321))
            expected = ["192.0.2.7", 4321]
        resp = await exchange(stream, get("/info"))
        assert json.loads(resp.body) == {
            "client": expected,
            "scheme": "http",
            "version": "1.1",
            "keep_alive": True,
        }


async def test_tcp_nodelay_is_set_on_accepted_sockets() -> None:
    flags: list[int] = []

    class Probe:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            sock = request._conn.transport.sock  # type: ignore[attr-defined]
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            response.text("ok")

    async with open_live_server(Probe) as live, open_client(live.url) as client:
        assert (await client.get("/")).status == 200
    assert flags and flags[0] != 0


async def test_server_header_is_sent_when_configured() -> None:
    async with open_client(App, server_header="peregrine-test") as client:
        resp = await client.get("/text")
        assert resp.headers.get("server") == "peregrine-test"


async def test_no_server_header_by_default() -> None:
    async with open_client(App) as client:
        resp = await client.get("/text")
        assert resp.headers.get("server") is None


# -- errors in handlers -----------------------------------------------------------------


async def test_handler_exception_gives_500_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_client(App) as client, client.connection() as conn:
        resp = await conn.get("/boom?q=1")
        assert resp.status == 500
        assert len(resp.content) < 100
        assert b"500" in resp.content
        assert b"secret-detail" not in resp.content
        assert b"Traceback" not in resp.content
        assert resp.headers.get("x-partial") is None  # the failed response is discarded
        assert resp.headers.get("connection") is None
        # the same connection keeps working
        assert (await conn.get("/text")).content == b"hello"
        # and so does another one
        assert (await client.get("/text")).content == b"hello"
    records = [r for r in caplog.records if r.name == "peregrine_rt.error"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert "App" in record.getMessage()
    assert "GET /boom?q=1" in record.getMessage()
    assert record.exc_info is not None
    assert "secret-detail" in str(record.exc_info[1])


async def test_invalid_response_header_set_by_handler_gives_500() -> None:
    class Splitter:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.headers["x-ok"] = "1"
            response.headers["x-evil"] = "a\r\nSet-Cookie: owned=1"

    async with open_client(Splitter) as client:
        resp = await client.get("/")
        assert resp.status == 500
        assert resp.headers.get("set-cookie") is None
        assert resp.headers.get("x-evil") is None


@pytest.mark.parametrize("mistake", ["204-with-body", "status-1000"])
async def test_handler_mistake_found_when_encoding_gives_500(mistake: str) -> None:
    """A response the writer refuses is still a handler error: 500, not a dropped connection."""

    class Mistaken:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            if request.path == "/ok":
                response.text("ok")
            elif mistake == "204-with-body":
                response.status = 204
                response.body = b"not allowed"
            else:
                response.status = 1000

    async with open_client(Mistaken) as client, client.connection() as conn:
        resp = await conn.get("/bad")
        assert resp.status == 500
        assert (await conn.get("/ok")).content == b"ok"


# -- run_sync ----------------------------------------------------------------------------


async def test_run_sync_runs_in_a_thread_with_bounded_concurrency() -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    loop_thread = threading.get_ident()

    def blocking(n: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return threading.get_ident()

    class Worker:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            ident = await pr.run_sync(blocking, 1)
            response.json({"other_thread": ident != loop_thread})

    async with open_client(Worker, thread_pool_size=2) as client:
        results: list[Any] = []

        async def one() -> None:
            results.append((await client.get("/")).json())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
        elapsed = trio.current_time() - start
    assert results == [{"other_thread": True}] * 5
    assert state["max"] == 2
    assert elapsed >= 0.14  # 5 calls of 50 ms, two at a time: at least three rounds


async def test_run_sync_keeps_the_event_loop_free() -> None:
    release = threading.Event()

    class Blocker:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            if request.path == "/block":
                await pr.run_sync(release.wait, 5)
                response.text("unblocked")
            else:
                release.set()
                response.text("fast")

    async with open_client(Blocker) as client:
        slow: list[bytes] = []

        async def block() -> None:
            slow.append((await client.get("/block")).content)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(block)
            await trio.testing.wait_all_tasks_blocked()  # /block waits in its thread
            assert (await client.get("/fast")).content == b"fast"
        assert slow == [b"unblocked"]


# -- access log ---------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
async def test_access_log(caplog: pytest.LogCaptureFixture, enabled: bool) -> None:
    caplog.set_level(logging.INFO, logger="peregrine_rt.access")
    async with (
        open_client(App, access_log=enabled, client_host="192.0.2.1") as client,
        client.connection() as conn,
    ):
        await conn.get("/text")
        await conn.head("/text")
        await conn.get("/stream?x=1")
        # the port is the client's own, one for the connection
        assert {request.client for request in client.app.seen} == {
            ("192.0.2.1", port := client.app.seen[0].client[1])
        }
    lines = [r.getMessage() for r in caplog.records if r.name == "peregrine_rt.access"]
    if not enabled:
        assert lines == []
        return
    assert len(lines) == 3
    assert lines[0] == f'192.0.2.1:{port} - "GET /text HTTP/1.1" 200 5'
    assert lines[1].startswith(f'192.0.2.1:{port} - "HEAD /text HTTP/1.1" 200')
    assert lines[2].startswith(f'192.0.2.1:{port} - "GET /stream?x=1 HTTP/1.1" 200')


async def test_many_concurrent_connections_over_tcp() -> None:
    async with open_live_server(App) as live, open_client(live.url) as client:
        results: list[bytes] = []

        async def one(i: int) -> None:
            async with client.connection() as conn:
                for j in range(3):
                    resp = await conn.post(f"/c{i}/{j}", content=b"x" * i)
                    results.append(resp.content)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)
    assert sorted(results) == sorted(
        f"method=POST target=/c{i}/{j} n={i}".encode() for i in range(20) for j in range(3)
    )


async def test_large_bodies_both_ways_over_tcp() -> None:
    blob = bytes(range(256)) * 16_384  # 4 MiB

    class Big:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            if request.path == "/download":
                response.body = blob
            elif request.path == "/stream":
                async with response.stream() as send:
                    for i in range(0, len(blob), 1 << 20):
                        await send(blob[i : i + (1 << 20)])
            else:
                body = await request.body()
                response.text(f"{len(body)} {body == blob[: len(body)]}")

    async with (
        open_live_server(Big, max_body_size=None) as live,
        open_client(live.url) as client,
        client.connection() as conn,
    ):
        resp = await conn.get("/download")
        assert resp.headers.get("content-length") == str(len(blob))
        assert resp.content == blob
        resp = await conn.get("/stream")
        assert resp.content == blob
        resp = await conn.post("/upload", content=blob[:3_000_000])
        assert resp.content == b"3000000 True"


# needs the exact wire bytes: a chunked body cut short, then EOF
async def test_exception_mid_stream_truncates_and_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Breaks:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            async with response.stream() as send:
                await send("first")
                raise RuntimeError("mid-stream")

    async with open_server(Breaks) as h:
        stream = await h.connect()
        await stream.send_all(get("/") + get("/second"))
        data = await Reader(stream).read_to_eof()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.endswith(b"5\r\nfirst\r\n")  # no last chunk: the client sees the truncation
        assert data.count(b"HTTP/1.1") == 1
    assert any(r.name == "peregrine_rt.error" for r in caplog.records)


async def test_server_url_and_port() -> None:
    async with open_live_server(App) as live:
        assert live.server.url == f"http://127.0.0.1:{live.server.port}"
        assert 0 < live.server.port < 65536
