"""peregrine_rt.testing's HTTP client: requests, responses, streaming, limits, failures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.testing import (
    ReceiveTimeout,
    UnexpectedEvent,
    open_client,
    open_server,
)


class Inspect:
    """Answers every request with what it saw, as JSON; a few paths do something else."""

    def __init__(self) -> None:
        self.arrived = 0
        self.all_arrived = trio.Event()
        self.expected = 0
        self.events: list[str] = []

    async def startup(self) -> None:
        self.events.append("startup")

    async def shutdown(self) -> None:
        self.events.append("shutdown")

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        path = request.path
        if path == "/hang":
            await trio.sleep_forever()
        elif path == "/slow":
            await trio.sleep(60)
            response.text("slept")
        elif path == "/boom":
            raise RuntimeError("boom")
        elif path == "/together":
            self.arrived += 1
            if self.arrived == self.expected:
                self.all_arrived.set()
            await self.all_arrived.wait()
            response.text(str(self.arrived))
        elif path == "/cookies":
            response.set_cookie("a", "1")
            response.set_cookie("b", "2")
            response.headers["content-type"] = "text/plain; charset=latin-1"
            response.body = "café".encode("latin-1")
        elif path == "/stream":
            async with response.stream(content_type="text/event-stream") as send:
                for i in range(3):
                    await send(f"data: {i}\n\n")
        elif path == "/endless":
            async with response.stream(content_type="text/event-stream") as send:
                i = 0
                while True:
                    await send(f"data: {i}\n\n")
                    i += 1
                    await trio.sleep(1)
        else:
            body = await request.body()
            response.json(
                {
                    "method": request.method,
                    "path": request.path,
                    "target": request.target.decode(),
                    "query": request.query.multi_items(),
                    "headers": [[n.decode(), v.decode()] for n, v in request.headers.raw],
                    "cookies": request.cookies,
                    "body": body.decode("latin-1"),
                    "client": request.client,
                }
            )


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in seen["headers"] if n.lower() == name]


async def test_get_with_params_headers_and_cookies() -> None:
    async with open_client(Inspect) as client:
        response = await client.get(
            "/items?page=2",
            params={"tag": ["a", "b"], "q": "x y"},
            headers={"X-Test": "1"},
            cookies={"session": "abc"},
        )
    assert response.status == 200
    assert response.reason == "OK"
    assert response.http_version == "1.1"
    assert response.headers["content-type"] == "application/json"
    seen = response.json()
    assert seen["method"] == "GET"
    assert seen["target"] == "/items?page=2&tag=a&tag=b&q=x+y"
    assert seen["query"] == [["page", "2"], ["tag", "a"], ["tag", "b"], ["q", "x y"]]
    assert header(seen, "host") == ["testserver"]
    assert header(seen, "x-test") == ["1"]
    assert seen["cookies"] == {"session": "abc"}
    assert seen["client"][0] == "127.0.0.1"
    assert seen["client"][1] >= 50000
    assert repr(response) == "<ClientResponse 200 OK to GET /items?page=2&tag=a&tag=b&q=x+y>"


async def test_absolute_url_sets_the_host_and_client_host_none() -> None:
    async with open_client(Inspect, client_host=None) as client:
        seen = (await client.get("http://example.org:8080/x")).json()
    assert header(seen, "host") == ["example.org:8080"]
    assert seen["target"] == "/x"
    assert seen["client"] is None


async def _pieces() -> AsyncIterator[bytes]:
    for piece in (b"ab", b"", b"cd"):
        await trio.lowlevel.checkpoint()
        yield piece


def _sync_pieces() -> Iterator[bytes]:
    yield from (b"ab", b"cd")


@pytest.mark.parametrize(
    ("options", "body", "content_type", "framing"),
    [
        ({"json": {"k": [1, 2]}}, '{"k": [1, 2]}', "application/json", "content-length"),
        ({"json": None}, "null", "application/json", "content-length"),
        ({"data": {"a": "1", "b": ["2", "3"]}}, "a=1&b=2&b=3", "application/x-www-form-urlencoded",
         "content-length"),
        ({"content": b"raw"}, "raw", None, "content-length"),
        ({"content": "é"}, "Ã©", None, "content-length"),
        ({"content": _sync_pieces()}, "abcd", None, "transfer-encoding"),
        ({"content": _pieces()}, "abcd", None, "transfer-encoding"),
    ],
    ids=["json", "json-null", "form", "bytes", "str", "iterable", "async-iterable"],
)  # fmt: skip
async def test_post_bodies(
    options: dict[str, Any], body: str, content_type: str | None, framing: str
) -> None:
    async with open_client(Inspect) as client:
        seen = (await client.post("/", **options)).json()
    assert seen["body"] == body
    assert header(seen, "content-type") == ([content_type] if content_type else [])
    assert header(seen, framing)


async def test_any_method() -> None:
    async with open_client(Inspect) as client:
        for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
            response = await getattr(client, method.lower())("/m")
            assert response.json()["method"] == method
        assert (await client.request("PROPFIND", "/m")).json()["method"] == "PROPFIND"
        head = await client.head("/m")
    assert head.status == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) > 0


async def test_one_body_only() -> None:
    async with open_client(Inspect) as client:
        with pytest.raises(TypeError, match="give one body, not json and content"):
            await client.post("/", json=1, content=b"x")
        with pytest.raises(ValueError, match="a path"):
            await client.get("relative")


async def test_response_headers_text_and_charset() -> None:
    async with open_client(Inspect) as client:
        response = await client.get("/cookies")
    assert response.headers.getlist("set-cookie") == [
        "a=1; Path=/; HttpOnly; SameSite=Lax",
        "b=2; Path=/; HttpOnly; SameSite=Lax",
    ]
    assert response.charset == "latin-1"
    assert response.text == "café"
    assert response.content == "café".encode("latin-1")
    assert response.is_complete


async def test_streamed_response_chunk_by_chunk() -> None:
    async with open_client(Inspect) as client:
        async with client.stream("GET", "/stream") as response:
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["transfer-encoding"] == "chunked"
            with pytest.raises(RuntimeError, match="not read yet"):
                response.content  # noqa: B018
            assert await response.next_chunk() == b"data: 0\n\n"
            assert [line async for line in response.aiter_lines()] == [
                "data: 1",
                "",
                "data: 2",
                "",
            ]
            assert await response.next_chunk() is None
            assert response.content == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        # Without stream(), the chunks are kept as they came.
        response = await client.get("/stream")
        assert response.chunks == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
        async with client.stream("GET", "/stream") as response:
            assert await response.aread() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            assert [chunk async for chunk in response.aiter_bytes()] == []


async def test_leaving_an_endless_stream(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Inspect) as client:
        async with client.stream("GET", "/endless") as response:
            texts = []
            async for text in response.aiter_text():
                texts.append(text)
                if len(texts) == 3:
                    break
        assert texts == ["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]
        # The handler's next send finds the connection gone and the handler ends.
        await trio.sleep(2)
        assert not client.server.connections  # type: ignore[union-attr]


async def test_an_endless_stream_read_whole_times_out_saying_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_client(Inspect, timeout=2.5) as client:
        with pytest.raises(ReceiveTimeout) as info:
            await client.get("/endless")
        async with client.stream("GET", "/endless") as response:
            assert await response.next_chunk() == b"data: 0\n\n"
            with pytest.raises(ReceiveTimeout) as next_info:
                await response.next_chunk(timeout=0.5)
    assert str(info.value) == (
        "waited 2.5 s for the end of the response to GET /endless (200 OK); received instead: "
        "27 bytes of body in 3 chunks so far (a streamed response: read it with client.stream())"
    )
    assert str(next_info.value) == (
        "waited 0.5 s for the next chunk of the response to GET /endless (200 OK); "
        "received instead: nothing"
    )


async def test_a_response_that_never_comes(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Inspect) as client:
        with pytest.raises(ReceiveTimeout) as info:
            await client.get("/hang")
    assert isinstance(info.value, AssertionError)
    assert str(info.value) == (
        "waited 5.0 s for the response to GET /hang; received instead: nothing"
    )
    assert info.value.timeout == 5.0


async def test_virtual_time_passes_at_once(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    async with open_client(Inspect) as client:
        response = await client.get("/slow", timeout=None)
    assert response.text == "slept"
    assert trio.current_time() - start >= 60


async def test_requests_run_concurrently_each_on_its_connection() -> None:
    app = Inspect()
    app.expected = 20
    results: list[str] = []
    async with open_client(app) as client:

        async def one() -> None:
            results.append((await client.get("/together")).text)

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        ports = {(await client.get("/")).json()["client"][1] for _ in range(3)}
    assert results == ["20"] * 20
    assert len(ports) == 3


async def test_keep_alive_connection_carries_several_requests() -> None:
    async with open_client(Inspect) as client, client.connection() as conn:
        first = (await conn.get("/a")).json()
        second = (await conn.post("/b", json=[1])).json()
        third = (await conn.get("/c")).json()
    assert first["client"] == second["client"] == third["client"]
    assert second["body"] == "[1]"


async def test_keep_alive_connection_closed_by_the_server() -> None:
    async with (
        open_client(Inspect, max_requests_per_connection=1) as client,
        client.connection() as conn,
    ):
        response = await conn.get("/a")
        assert response.headers["connection"] == "close"
        with pytest.raises(UnexpectedEvent, match="a connection the server closed"):
            await conn.get("/b")


async def test_keep_alive_timeout_applies(autojump_clock: trio.testing.MockClock) -> None:
    async with open_client(Inspect, keep_alive_timeout=3) as client, client.connection() as conn:
        await conn.get("/a")
        await trio.sleep(2)
        await conn.get("/b")  # still open
        await trio.sleep(5)
        with pytest.raises(UnexpectedEvent) as info:
            await conn.get("/c")
    assert str(info.value) == (
        "expected the response to GET /c; received instead: "
        "the server closed the connection (having sent nothing)"
    )


async def test_the_servers_limits_apply() -> None:
    async with open_client(Inspect, max_body_size=10, max_header_line=100) as client:
        assert (await client.post("/", content=b"x" * 10)).status == 200
        too_big = await client.post("/", content=b"x" * 11)
        assert too_big.status == 413
        assert too_big.headers["connection"] == "close"
        streamed = await client.post("/", content=_pieces_of(b"x" * 100, 20))
        assert streamed.status == 413
        assert (await client.get("/", headers={"x-long": "y" * 100})).status == 431


async def _pieces_of(data: bytes, n: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i : i + n]
        await trio.testing.wait_all_tasks_blocked()  # the server takes each piece apart


async def test_handler_error_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async with open_client(Inspect) as client:
        response = await client.get("/boom")
        assert response.status == 500
        assert (await client.get("/")).status == 200  # the server goes on
    assert "handler Inspect raised on GET /boom" in caplog.text


async def test_startup_and_shutdown_run() -> None:
    app = Inspect()
    async with open_client(app) as client:
        assert client.app is app
        assert app.events == ["startup"]
    assert app.events == ["startup", "shutdown"]


async def test_an_error_in_the_block_is_not_wrapped() -> None:
    with pytest.raises(ZeroDivisionError):
        async with open_client(Inspect) as client:
            await client.get("/")
            1 / 0  # noqa: B018


async def test_cancelled_from_outside(autojump_clock: trio.testing.MockClock) -> None:
    app = Inspect()
    with trio.move_on_after(1) as scope:
        async with open_client(app) as client:
            await client.get("/hang", timeout=None)
    assert scope.cancelled_caught
    assert app.events == ["startup", "shutdown"]
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(1):
            async with open_client(Inspect) as client:
                await client.get("/hang", timeout=None)


async def test_a_failing_startup_is_raised_on_entry() -> None:
    class Broken:
        async def startup(self) -> None:
            raise OSError("no database")

        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

    with pytest.raises(OSError, match="no database"):
        async with open_client(Broken):
            raise AssertionError("not reached")


async def test_a_server_instance_and_its_config() -> None:
    server = pr.Server(Inspect, max_body_size=3)
    async with open_client(server) as client:
        assert client.server is server
        assert (await client.post("/", content=b"1234")).status == 413
    assert server.shutting_down
    with pytest.raises(TypeError, match="configure the Server"):
        async with open_client(pr.Server(Inspect), max_body_size=3):
            pass


async def test_memory_and_tcp_clients_of_one_running_server() -> None:
    async with open_server(Inspect) as live:
        assert live.url == f"http://127.0.0.1:{live.port}"
        assert live.ws_url == f"ws://127.0.0.1:{live.port}"
        assert str(live) == live.url
        assert live.host == "127.0.0.1"
        async with open_client(live.server) as memory:
            assert (await memory.get("/m")).json()["path"] == "/m"
        assert not live.server.shutting_down  # not ours to stop
        async with open_client(live.url) as tcp:
            seen = (await tcp.get("/t")).json()
            assert header(seen, "host") == [f"127.0.0.1:{live.port}"]
            with pytest.raises(RuntimeError, match="does not see the app"):
                tcp.app  # noqa: B018
        assert isinstance(live.app, Inspect)
    with pytest.raises(TypeError, match="takes no server configuration"):
        async with open_client("http://127.0.0.1:1", max_body_size=1):
            pass
    with pytest.raises(ValueError, match="http://host:port"):
        async with open_client("https://example.org"):
            pass


async def _raw_server(answer: bytes, task_status: trio.TaskStatus[int]) -> None:
    async def reply(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(answer)
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(reply, listeners)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "expected a valid HTTP/1.1 response to GET /; received instead: "
            "38 bytes: b'HTTP/1.1 200 OK\\r\\nContent-Length: x\\r\\n\\r\\n', which h11 refuses:",
        ),
        (
            b"",
            "expected the response to GET /; received instead: "
            "the server closed the connection (having sent nothing)",
        ),
    ],
    ids=["invalid", "closed"],
)
async def test_h11_judges_what_the_server_sends(answer: bytes, message: str) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_raw_server, answer)
        async with open_client(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(UnexpectedEvent) as info:
                await client.get("/")
        nursery.cancel_scope.cancel()
    assert str(info.value).startswith(message)


async def test_no_new_connection_once_the_server_stopped() -> None:
    async with open_client(Inspect) as client:
        await client.server.aclose()  # type: ignore[union-attr]
        with pytest.raises(RuntimeError, match="the server of Inspect is shut down"):
            await client.get("/")


def test_no_errors_logged_by_the_suite_helpers(caplog: pytest.LogCaptureFixture) -> None:
    # The client closes connections the way a browser does: nothing to log.
    async def main() -> None:
        async with open_client(Inspect) as client:
            await client.get("/")

    with caplog.at_level(logging.DEBUG):
        trio.run(main)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_an_early_answer_to_a_slow_body_is_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server times the body out (408) and closes while the client still sends."""

    class ReadsBody:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await request.body()
            response.text("ok")

    async def slowly() -> AsyncIterator[bytes]:
        for byte in b"hello":
            await trio.sleep(2)
            yield bytes([byte])

    async with open_client(ReadsBody, body_timeout=1) as client:
        response = await client.post(
            "/", headers={"Content-Length": "5"}, content=slowly(), timeout=None
        )
    assert response.status == 408
