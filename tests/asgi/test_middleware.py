"""peregrine_rt's middleware around an ASGI app: CORS headers and compression still apply.

The adapter sends an app's whole body as soon as the app gives it
(``response.finish()``), so that background work does not delay it; a
middleware that rewrites responses after ``handle`` holds the response
(``response.hold()``) and sees it whole, as for any handler.
"""

from __future__ import annotations

import gzip
from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt.asgi import ASGI
from peregrine_rt.testing import open_client

TEXT = b"a compressible line of text, over and over. " * 100


class Later:
    """An ASGI app that answers, then goes on working (a background task) until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.done = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"x-app", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": TEXT})
        await self.release.wait()
        self.done = True


async def test_cors_headers_reach_an_asgi_answer() -> None:
    app = Later()
    app.release.set()
    handler = pr.CORS(ASGI(app, lifespan="off"), allow_origins=["https://app.example"])
    async with open_client(handler) as client:
        response = await client.get("/", headers={"Origin": "https://app.example"})
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert response.headers["x-app"] == "1"  # the app's own headers kept
        assert response.content == TEXT
        plain = await client.get("/")  # no Origin: Vary added after the app answered
        assert "Origin" in plain.headers.get("vary", "")


async def test_compression_applies_and_the_app_finishes_first() -> None:
    app = Later()
    async with open_client(pr.Compress(ASGI(app, lifespan="off"))) as client:
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def get() -> None:
                got.append(await client.get("/", headers={"Accept-Encoding": "gzip"}))

            nursery.start_soon(get)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # held for Compress: it goes out when the app returns
            app.release.set()
        [response] = got
        assert response.headers["content-encoding"] == "gzip"
        assert gzip.decompress(response.content) == TEXT
        assert app.done


async def test_without_middleware_the_answer_does_not_wait() -> None:
    app = Later()
    async with open_client(ASGI(app, lifespan="off")) as client:
        with trio.fail_after(5):
            response = await client.get("/")
        assert response.content == TEXT
        assert not app.done
        app.release.set()
