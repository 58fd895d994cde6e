"""Edges found while building the testing utilities, each tested through them."""

from __future__ import annotations

import logging

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_client, wait_until


class Ticker:
    def __init__(self) -> None:
        self.ended: list[str] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        try:
            async with response.stream(content_type="text/event-stream") as send:
                while True:
                    await send("data: tick\n\n")
                    await trio.sleep(0.01)
        except pr.ClientDisconnected:
            self.ended.append("client left")
            raise


async def test_a_client_leaving_a_stream_is_not_a_handler_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="peregrine_rt.error")
    app = Ticker()
    async with open_client(app) as client:
        async with client.stream("GET", "/events") as response:
            assert response.status == 200
            assert b"data: tick" in await response.next_chunk()
        await wait_until(lambda: app.ended)
    assert app.ended == ["client left"]  # the handler saw the public exception
    assert [r for r in caplog.records if r.name == "peregrine_rt.error"] == []


class Counter:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("ok")


async def test_handle_stream_honours_max_connections() -> None:
    async with (
        open_client(Counter, max_connections=1) as client,
        client.connection() as first,
        client.connection() as second,
    ):
        assert (await first.get("/")).status == 200
        busy = await second.get("/")
        assert busy.status == 503
        assert (await first.get("/")).status == 200


class BrokenStartup:
    async def startup(self) -> None:
        raise OSError("no database")

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("never")


async def test_startup_failure_comes_out_of_serve_unwrapped() -> None:
    server = pr.Server(BrokenStartup, port=0)
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="no database"):
            await nursery.start(server.serve)


class Closes:
    def __init__(self) -> None:
        self.closes: list[object] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closes.append(code)


async def test_on_close_gets_a_plain_int_code_from_the_peer() -> None:
    app = Closes()
    async with open_client(app) as client, client.websocket("/ws") as ws:
        await ws.send("x")
        assert await ws.receive() == "x"
        await ws.close(1000)
    assert app.closes == [1000]
    assert type(app.closes[0]) is int
