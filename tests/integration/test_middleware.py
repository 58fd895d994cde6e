"""Middleware, CORS and Compress in a real server (the in-memory test client).

The unit tests (tests/unit/test_cors.py, test_compress.py) cover the rules;
here what only a server shows: the contract check sees the wrapped
handler's hooks, WebSockets and lifecycle hooks pass through any number of
wrappers, HTTPError and 500 answers, streams and files, and the bytes on the
wire (Content-Length of compressed bodies, HEAD).
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import brotli  # type: ignore[import-untyped]  # brotli ships no type stubs
import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._compress import Compress
from peregrine_rt._cors import CORS
from peregrine_rt._handler import check_handler
from peregrine_rt._middleware import Middleware
from peregrine_rt._routing import Router
from peregrine_rt.exceptions import HandlerError, HTTPError
from peregrine_rt.testing import ClientResponse, WebSocketRejected, open_client, wait_until

SITE = "http://localhost:5173"
BIG = {"items": [{"id": i, "name": f"item number {i}"} for i in range(100)]}


class Api:
    """HTTP only: JSON, errors, a stream, a file."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self.started = False

    async def startup(self) -> None:
        self.started = True

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/items":
            response.json(BIG)
        elif request.path == "/missing":
            raise HTTPError(404, "no such item")
        elif request.path == "/method":
            raise HTTPError(405, headers={"Allow": "GET"})
        elif request.path == "/bug":
            raise RuntimeError("a bug")
        elif request.path == "/stream":
            async with response.stream(content_type="text/plain") as send:
                for _ in range(3):
                    await send("a line that repeats itself, " * 30 + "\n")
        elif request.path == "/file" and self.file is not None:
            response.file(self.file, precompressed=False)
        else:
            response.text("hello\n")


class Echo:
    """A WebSocket handler with every hook, which records what reached it."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.hub: pr.Hub | None = None

    def attach_hub(self, hub: pr.Hub) -> None:
        self.hub = hub

    async def startup(self) -> None:
        self.events.append("startup")

    async def shutdown(self) -> None:
        self.events.append("shutdown")

    async def background(self, *, task_status: Any) -> None:
        self.events.append("background")
        task_status.started()

    async def authenticate(self, request: pr.Request) -> str | None:
        return request.query.get("user")

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
        else:
            response.json(BIG)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.events.append(("open", ws.user))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.events.append(("close", code))


def decoded(response: ClientResponse) -> bytes:
    coding = response.headers.get("content-encoding")
    if coding == "gzip":
        return gzip.decompress(response.content)
    if coding == "br":
        return bytes(brotli.decompress(response.content))
    assert coding is None, coding
    return response.content


# -- the wrapper and the handler contract ----------------------------------------------


def test_a_wrapper_has_the_hooks_of_what_it_wraps() -> None:
    plain = check_handler(Compress(CORS(Api, allow_origins=[SITE])))
    assert plain.name == "Compress(CORS(Api))"
    assert (plain.has_websocket, plain.has_startup, plain.has_background) == (False, True, False)
    full = check_handler(Compress(CORS(Echo, allow_origins=[SITE])))
    assert full.has_websocket and full.has_on_open and full.has_on_close
    assert full.has_startup and full.has_shutdown and full.background_reports_ready
    assert isinstance(Compress(Api), Compress)


def test_a_broken_inner_handler_fails_when_the_wrapper_is_built() -> None:
    class Broken:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

    with pytest.raises(
        HandlerError, match=r"Broken.handle calls upgrade\(\) but .*Broken has no on_message"
    ):
        CORS(Broken, allow_origins=[SITE])


def test_a_subclass_keeps_the_hooks_it_defines() -> None:
    class Counting(Middleware):
        def __init__(self, app: Any) -> None:
            super().__init__(app)
            self.messages = 0

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            self.messages += 1
            await self.app.on_message(ws, message)

    wrapper = Counting(Echo)
    assert type(wrapper).on_message is Counting.on_message  # not replaced by a forwarder
    assert wrapper.on_message.__func__ is Counting.on_message  # type: ignore[attr-defined]  # a bound method: not replaced by the shortcut either
    assert getattr(wrapper, "on_open") == wrapper.app.on_open  # noqa: B009  # the inner's, bound
    assert check_handler(wrapper).has_on_open


async def test_the_server_builds_and_answers_through_a_wrapper_without_websockets() -> None:
    app = Compress(CORS(Api, allow_origins=[SITE]))
    async with open_client(app) as client:
        assert app.app.app.started  # startup() reached the inner handler
        response = await client.get("/")
        assert response.text == "hello\n"
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/"):
                pass
        assert refused.value.response.status == 200  # not a WebSocket endpoint


async def test_websockets_and_every_hook_pass_through_two_wrappers() -> None:
    echo = Echo()
    app = Compress(CORS(echo, allow_origins=[SITE]))
    async with open_client(app) as client:
        assert echo.events == ["startup", "background"]
        assert echo.hub is not None
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/ws"):
                pass
        assert refused.value.response.status == 401  # the inner authenticate said no
        async with client.websocket("/ws?user=ada") as ws:
            await ws.send("hello")
            assert await ws.receive() == "hello"
        await wait_until(lambda: ("close", 1000) in echo.events)
    assert echo.events == ["startup", "background", ("open", "ada"), ("close", 1000), "shutdown"]


class Served(CORS):
    """A middleware class served as a class: it names what it wraps."""

    wraps = Echo

    def __init__(self) -> None:
        super().__init__(Echo, allow_origins=[SITE])


async def test_a_middleware_class_with_wraps_is_served_as_a_class() -> None:
    spec = check_handler(Served)  # the class, before any instance: Echo's hooks
    assert spec.has_websocket and spec.has_on_open and spec.has_on_close
    assert spec.has_startup and spec.background_reports_ready
    server = pr.Server(Served)
    async with open_client(server) as client:
        echo = server.handler_instance.app
        async with client.websocket("/ws?user=ada") as ws:
            await ws.send("hello")
            assert await ws.receive() == "hello"
        await wait_until(lambda: ("close", 1000) in echo.events)
        preflight = await client.options(
            "/", headers={"Origin": SITE, "Access-Control-Request-Method": "GET"}
        )
        assert preflight.headers["access-control-allow-origin"] == SITE
    assert echo.events[:3] == ["startup", "background", ("open", "ada")]


def test_wraps_is_checked_where_it_is_written_and_kept_to() -> None:
    class Broken:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

    with pytest.raises(HandlerError, match="Broken has no on_message"):

        class Wrapper(Middleware):
            wraps = Broken

    class Other(CORS):
        wraps = Echo

        def __init__(self) -> None:
            super().__init__(Api, allow_origins=[SITE])

    with pytest.raises(HandlerError, match="declares wraps = Echo but was given"):
        Other()


class Timing(Middleware):
    """A middleware of one's own: a header on every answer."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await self.app.handle(request, response)
        response.headers["x-wrapped"] = type(self.app).__name__


async def test_a_middleware_of_ones_own() -> None:
    async with open_client(Timing(Api)) as client:
        response = await client.get("/")
        assert response.headers["x-wrapped"] == "Api"


# -- CORS in a server -----------------------------------------------------------------------------


def cors(**options: Any) -> CORS:
    return CORS(Api, allow_origins=[SITE], **options)


async def test_cors_simple_request_and_preflight() -> None:
    app = cors(allow_methods=["GET", "PUT"], allow_headers=["x-token"], allow_credentials=True)
    async with open_client(app) as client:
        response = await client.get("/", headers={"Origin": SITE})
        assert response.headers["access-control-allow-origin"] == SITE
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["vary"] == "Origin"
        preflight = await client.options(
            "/anything",
            headers={
                "Origin": SITE,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "x-token",
            },
        )
        assert preflight.status == 204
        assert preflight.content == b""
        assert preflight.headers["access-control-allow-methods"] == "GET, PUT"
        assert preflight.headers["access-control-allow-headers"] == "x-token"
        refused = await client.options(
            "/", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"}
        )
        assert refused.status == 400
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/method", 405)])
async def test_cors_headers_on_http_error_answers(path: str, status: int) -> None:
    async with open_client(cors(expose_headers=["Allow"])) as client:
        response = await client.get(path, headers={"Origin": SITE})
        assert response.status == status
        assert response.headers["access-control-allow-origin"] == SITE
        assert response.headers["access-control-expose-headers"] == "Allow"
        assert response.headers["vary"] == "Origin"
        if status == 405:
            assert response.headers["allow"] == "GET"  # the error's own headers stay


async def test_no_cors_headers_on_the_500_of_a_bug(caplog: pytest.LogCaptureFixture) -> None:
    # Documented: the server answers an unhandled exception without the app's
    # headers, so a page sees a failed fetch, not the 500.
    async with open_client(cors()) as client:
        response = await client.get("/bug", headers={"Origin": SITE})
        assert response.status == 500
        assert "access-control-allow-origin" not in response.headers
    assert "a bug" in caplog.text


async def test_cors_headers_on_a_streamed_response() -> None:
    async with (
        open_client(cors()) as client,
        client.stream("GET", "/stream", headers={"Origin": SITE}) as response,
    ):
        assert response.headers["access-control-allow-origin"] == SITE
        await response.aread()


# -- Compress in a server ---------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["gzip", "br", "gzip;q=0.5, br;q=0.4", "identity"])
async def test_compressed_json_round_trips_with_its_length(accept: str) -> None:
    async with open_client(Compress(Api)) as client:
        response = await client.get("/items", headers={"Accept-Encoding": accept})
        expected = {"identity": None, "br": "br"}.get(accept, "gzip")
        assert response.headers.get("content-encoding") == expected
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.headers["vary"] == "Accept-Encoding"
        assert json.loads(decoded(response)) == BIG
        assert decoded(response) == (await client.get("/items")).content


async def test_head_answers_with_the_headers_of_get() -> None:
    async with open_client(Compress(Api)) as client:
        get = await client.get("/items", headers={"Accept-Encoding": "br"})
        head = await client.head("/items", headers={"Accept-Encoding": "br"})
        assert head.content == b""
        for name in ("content-encoding", "content-length", "vary", "content-type"):
            assert head.headers[name] == get.headers[name]


async def test_streams_and_files_pass_untouched(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"the same line again\n" * 10_000)  # 200 kB: sent from the file
    async with open_client(Compress(Api(path))) as client:
        async with client.stream("GET", "/stream", headers={"Accept-Encoding": "gzip"}) as stream:
            body = await stream.aread()
            assert "content-encoding" not in stream.headers
            assert body.count(b"\n") == 3
        response = await client.get("/file", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in response.headers
        assert response.content == path.read_bytes()


class Ticker:
    """A stream of JSON lines and an SSE feed, each piece sent while the client waits."""

    def __init__(self) -> None:
        self.go = trio.Event()

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/events":
            async with response.sse(ping_interval=None) as events:
                for i in range(3):
                    await events.send(json.dumps({"tick": i, "pad": "x" * 200}))
            return
        async with response.stream(content_type="application/x-ndjson") as send:
            for i in range(3):
                await send(json.dumps({"tick": i, "pad": "x" * 200}) + "\n")


def _decoder(coding: str) -> Any:
    if coding == "gzip":
        inflate = zlib.decompressobj(31)
        return inflate.decompress
    return brotli.Decompressor().process


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_streams_compress_piece_by_piece_when_asked(coding: str) -> None:
    async with open_client(Compress(Ticker, streams=True)) as client:
        for path, marker in (("/lines", b'{"tick": '), ("/events", b'data: {"tick": ')):
            headers = {"Accept-Encoding": coding}
            async with client.stream("GET", path, headers=headers) as stream:
                assert stream.headers["content-encoding"] == coding
                assert "accept-encoding" in stream.headers["vary"].lower()
                decode = _decoder(coding)
                pieces = []
                while (chunk := await stream.next_chunk()) is not None:
                    pieces.append(bytes(decode(chunk)))
                # Every piece decodes on arrival (flushed), and each is smaller on the wire.
                assert [p.count(marker) for p in pieces[:3]] == [1, 1, 1]
                assert b"".join(pieces).count(marker) == 3
            plain = await client.get(path)  # no Accept-Encoding: as it was
            assert "content-encoding" not in plain.headers
            assert plain.content.count(marker) == 3


async def test_streams_stay_untouched_without_streams_true() -> None:
    headers = {"Accept-Encoding": "gzip"}
    async with (
        open_client(Compress(Ticker)) as client,
        client.stream("GET", "/events", headers=headers) as stream,
    ):
        assert "content-encoding" not in stream.headers
        assert (await stream.aread()).count(b"data: ") == 3


async def test_compress_of_cors_preflight_errors_and_json() -> None:
    app = Compress(CORS(Api, allow_origins=[SITE], allow_methods=["PUT"]), minimum_size=10)
    headers = {"Origin": SITE, "Accept-Encoding": "gzip"}
    async with open_client(app) as client:
        response = await client.get("/items", headers=headers)
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["vary"] == "Origin, Accept-Encoding"
        assert response.headers["access-control-allow-origin"] == SITE
        missing = await client.get("/missing", headers=headers)
        assert missing.status == 404
        assert "content-encoding" not in missing.headers  # the server's own short answer
        assert missing.text == "404 Not Found\nno such item\n"
        preflight = await client.options(
            "/items", headers={**headers, "Access-Control-Request-Method": "PUT"}
        )
        assert preflight.status == 204
        assert "content-encoding" not in preflight.headers


async def test_large_bodies_compress_on_the_thread_pool_while_others_are_served() -> None:
    class Large:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            if request.path == "/large":
                response.text("".join(f"{i:08d}\n" for i in range(60_000)))  # 540 kB
            else:
                response.text("small")

    async with open_client(Compress(Large)) as client:
        results: dict[str, ClientResponse] = {}

        async def fetch(path: str) -> None:
            results[path] = await client.get(path, headers={"Accept-Encoding": "gzip"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, "/large")
            nursery.start_soon(fetch, "/small")
        assert decoded(results["/large"]).count(b"\n") == 60_000
        assert results["/small"].text == "small"


# -- a Router inside the wrappers ---------------------------------------------------------------


class Guarded(Echo):
    """Mounted under a router: it calls upgrade() itself, relying on its own authenticate."""

    async def authenticate(self, request: pr.Request) -> str | None:
        return "mounted" if request.query.get("key") == "k" else None


def make_router() -> Router:
    router = Router()

    @router.get("/items")
    async def items(request: pr.Request, response: pr.Response) -> None:
        response.json(BIG)

    router.websocket("/echo", Echo)  # Echo's authenticate: ?user=
    router.mount("/guarded", Guarded)
    return router


async def test_compress_of_cors_of_a_router() -> None:
    app = Compress(CORS(make_router(), allow_origins=[SITE]))
    assert check_handler(app).has_websocket
    async with open_client(app) as client:
        response = await client.get("/items", headers={"Origin": SITE, "Accept-Encoding": "br"})
        assert response.headers["content-encoding"] == "br"
        assert response.headers["access-control-allow-origin"] == SITE
        assert json.loads(decoded(response)) == BIG
        wrong = await client.delete("/items", headers={"Origin": SITE})
        assert wrong.status == 405  # the router's HTTPError, with CORS headers added
        assert wrong.headers["allow"] == "GET, HEAD"
        assert wrong.headers["access-control-allow-origin"] == SITE
        async with client.websocket("/echo?user=ada") as ws:
            await ws.send("through a route")
            assert await ws.receive() == "through a route"


async def test_a_mounted_handlers_authenticate_still_runs_through_the_wrappers() -> None:
    # upgrade() looks authenticate up on the server's handler, the outer wrapper;
    # the router answers it only while it delegates to the mounted handler.
    async with open_client(Compress(CORS(make_router(), allow_origins=[SITE]))) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/guarded/ws"):
                pass
        assert refused.value.response.status == 401
        async with client.websocket("/guarded/ws?key=k") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"
