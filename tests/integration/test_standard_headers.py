"""Every answer the server writes carries the same standard headers as a normal response.

One function builds every head (``_answers.ResponseHeads``): a handler's
response, a file's, a stream's, the 101 of a handshake and the server's own
400-503 answers.  Before, the 500 for an invalid handler response had no
``Server`` header although the other answers had one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import peregrine_rt as pr
from tests.integration.conftest import RawResponse, Reader, get, open_server
from tests.integration.ws_helpers import handshake, new_key

SERVER = "peregrine-test"


class App:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        path = request.path
        if path == "/ok":
            response.text("ok")
        elif path == "/raise":
            raise RuntimeError("boom")
        elif path == "/invalid":
            response.status = 204
            response.body = b"a body on a 204"  # only the writer can refuse this: 500
        elif path == "/file":
            response.file(self.root / "f.txt")
        elif path == "/stream":
            async with response.stream() as send:
                await send("piece")
        elif path == "/ws":
            await pr.upgrade(request, response)
        elif path == "/body":
            await request.body()
            response.text("read")
        elif path == "/json":
            await request.json()
        else:
            response.status = 404

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


def standard(resp: RawResponse) -> tuple[str | None, bool]:
    return resp.header("server"), resp.header("date") is not None


REQUESTS = {
    "200": get("/ok"),
    "404": get("/nowhere"),
    "500 handler raised": get("/raise"),
    "500 invalid response": get("/invalid"),
    "file": get("/file"),
    "stream": get("/stream"),
    "101": handshake("/ws", key=new_key()),
    "426 refused upgrade": get("/ws", "Upgrade: websocket", "Connection: Upgrade"),
    "400 malformed": b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
    "400 bad json": get("POST /json", body=b"{bad"),
    "413 body": get("POST /body", "Content-Length: 5000000"),
    "414 request line": get("/" + "a" * 10_000),
    "431 head": get("/ok", *(f"X-{i}: {'v' * 100}" for i in range(700))),
    "505 version": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("case", list(REQUESTS), ids=list(REQUESTS))
async def test_every_answer_carries_the_standard_headers(case: str, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("a file")
    async with open_server(App(tmp_path), server_header=SERVER) as h:
        stream = await h.connect()
        await stream.send_all(REQUESTS[case])
        resp = await Reader(stream).response()
        assert standard(resp) == (SERVER, True), (case, resp.status, resp.headers)
        if case[:3].isdigit():
            assert resp.status == int(case[:3])


# raw bytes: a 408 after half a head
async def test_the_408_carries_them(autojump_clock: trio.testing.MockClock) -> None:
    async with open_server(Hello, server_header=SERVER, header_timeout=2) as h:
        stream = await h.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        resp = await Reader(stream).response()
        assert resp.status == 408
        assert standard(resp) == (SERVER, True)


async def test_the_503_at_the_limit_carries_them() -> None:
    async with open_server(Hello, transport="tcp", server_header=SERVER, max_connections=1) as h:
        kept = await h.connect()
        await h.wait_connections(1)
        refused = await h.connect()
        resp = await Reader(refused).response()
        assert resp.status == 503
        assert standard(resp) == (SERVER, True)
        await kept.aclose()


async def test_no_server_header_unless_configured() -> None:
    async with open_server(Hello) as h:
        stream = await h.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n")
        resp = await Reader(stream).response()
        assert resp.status == 400
        assert standard(resp) == (None, True)


class Hello:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("hello")
