"""The handler's optional ``background()``: a task for the server's whole life."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.testing import open_client, open_server, wait_until


class Ticking:
    """background() counts ticks; the events record the lifecycle order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.ticks = 0

    async def startup(self) -> None:
        self.events.append("startup")

    async def background(self) -> None:
        self.events.append("background")
        try:
            while True:
                await trio.sleep(0.01)
                self.ticks += 1
        finally:
            self.events.append("background cancelled")

    async def shutdown(self) -> None:
        self.events.append("shutdown")

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.json({"ticks": self.ticks})


class Ready:
    """background(task_status=...): connections wait until it reports ready."""

    def __init__(self) -> None:
        self.resource: str | None = None

    async def background(self, *, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(0.2)  # connecting to a database, say
        self.resource = "ready"
        task_status.started()
        await trio.sleep_forever()

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text(self.resource or "not ready")


async def test_background_runs_while_serving_and_stops_before_shutdown() -> None:
    app = Ticking()
    async with open_server(app) as live, open_client(live.url) as client:
        await wait_until(lambda: app.ticks >= 3)
        assert (await client.get("/")).json()["ticks"] >= 3  # served while it ticks
    assert app.events == ["startup", "background", "background cancelled", "shutdown"]


async def test_connections_wait_until_background_reports_ready() -> None:
    async with open_client(Ready) as client:
        assert (await client.get("/")).text == "ready"


async def test_a_background_that_fails_to_start_fails_the_server() -> None:
    class Broken:
        async def background(self, *, task_status: trio.TaskStatus[None]) -> None:
            raise OSError("database unreachable")

        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

    with pytest.raises(OSError, match="database unreachable"):
        async with open_client(Broken):
            pass  # pragma: no cover - never served


async def test_a_background_that_fails_later_shuts_the_server_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Crashing:
        async def background(self) -> None:
            await trio.testing.wait_all_tasks_blocked()  # once the server is up and idle
            raise RuntimeError("lost the feed")

        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.text("ok")

    server = pr.Server(Crashing, port=0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            # The server shuts itself down (gracefully), so serve() returns.
    assert server.shutting_down
    [record] = [r for r in caplog.records if "background() raised" in r.getMessage()]
    assert record.exc_info is not None and "lost the feed" in str(record.exc_info[1])


def test_background_is_checked_like_the_rest_of_the_contract() -> None:
    class SyncBackground:
        def background(self) -> None: ...

        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

    with pytest.raises(pr.HandlerError, match=r"SyncBackground.background must be async def"):
        pr.Server(SyncBackground)


async def test_background_outlives_the_connections_at_shutdown() -> None:
    """on_close of a socket cut at the end of the grace still finds background() running."""
    from .ws_helpers import handshake, new_key

    class Service:
        def __init__(self) -> None:
            self.alive = False
            self.seen_in_on_close: list[bool] = []

        async def background(self) -> None:
            self.alive = True
            try:
                await trio.sleep_forever()
            finally:
                self.alive = False

        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await pr.upgrade(request, response)

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...

        async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
            # some work: publishing a "left" event, say; everything else runs first
            await trio.testing.wait_all_tasks_blocked()
            self.seen_in_on_close.append(self.alive)

    app = Service()
    server = pr.Server(app, shutdown_grace=0.3)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        # A client that never answers the close: cut when the grace is over.
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(handshake("/", key=new_key()))
        await wait_until(lambda: server.websockets)
        with trio.fail_after(10):
            await server.aclose()
        await stream.aclose()
    assert app.seen_in_on_close == [True]
    assert app.alive is False  # and it was cancelled in the end
