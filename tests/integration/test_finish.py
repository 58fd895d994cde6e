"""``response.finish()``: the response goes out at once, the handler goes on (background work)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.exceptions import LocalProtocolError
from peregrine_rt.testing import open_client, wait_until


class Later:
    """``/later`` answers at once, then works until ``release`` is set; ``/`` answers plainly."""

    def __init__(self, big: Path | None = None) -> None:
        self.big = big
        self.release = trio.Event()
        self.done: list[str] = []
        self.errors: list[str] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/later":
            response.json({"queued": True}, status=202)
            await response.finish()
            response.text("too late")  # changes nothing: it was sent
            await self.release.wait()
            self.done.append("work")
        elif request.path == "/twice":
            response.text("one")
            await response.finish()
            try:
                await response.finish()
            except LocalProtocolError as exc:
                self.errors.append(str(exc))
        elif request.path == "/file":
            assert self.big is not None
            response.file(self.big)  # large: sent from the file, after handle
            try:
                await response.finish()
            except LocalProtocolError as exc:
                self.errors.append(str(exc))
        elif request.path == "/bad":
            response.status = 204
            response.body = b"a body on a 204"
            await response.finish()
        else:
            response.text("plain")


async def test_the_client_has_the_answer_while_the_handler_works() -> None:
    app = Later()
    async with open_client(app, metrics=True) as client, client.connection() as conn:
        with trio.fail_after(5):
            response = await conn.get("/later")
        assert (response.status, response.json()) == (202, {"queued": True})
        assert app.done == []  # still working
        async with trio.open_nursery() as nursery:
            answers: list[str] = []

            async def next_request() -> None:
                answers.append((await conn.get("/")).text)

            nursery.start_soon(next_request)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # the next request waits for handle() to return
            app.release.set()
        assert answers == ["plain"]
        assert app.done == ["work"]
        metrics = (await client.get("/metrics")).text
        assert 'peregrine_http_requests_total{method="GET",status="202"} 1.0' in metrics


async def test_a_second_finish_or_a_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1_000_000)
    app = Later(big)
    async with open_client(app) as client:
        assert (await client.get("/twice")).text == "one"
        response = await client.get("/file")  # sent after handle, as usual
        assert (response.status, len(response.content)) == (200, 1_000_000)
        await wait_until(lambda: len(app.errors) == 2)
    assert app.errors[0] == "the response has already started"
    assert app.errors[1].startswith("finish() sends a body, not a file")


async def test_an_invalid_response_becomes_a_500_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async with open_client(Later()) as client:
        assert (await client.get("/bad")).status == 500
        assert (await client.get("/")).text == "plain"  # the connection went on
    assert "built an invalid response" in caplog.text


async def test_connection_close_is_kept() -> None:
    app = Later()
    app.release.set()
    async with open_client(app) as client:
        response = await client.get("/later", headers={"Connection": "close"})
        assert response.status == 202
        assert response.headers.get("connection") == "close"
