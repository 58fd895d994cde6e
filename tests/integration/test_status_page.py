"""The live status page (``Config.status_page``): its token, its files, its socket's snapshots.

The server is the real one, driven over memory streams (``open_client``) so
that the autojump clock makes the page's one-second ticks cost no real time,
and over a socket where a second port is the point (``metrics_port``).  What
the browser makes of the snapshots is tests/e2e/test_status_browser.py's.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._status import ASSETS, COOKIE, TOPIC, StatusPage
from peregrine_rt.testing import (
    Client,
    ClientWebSocket,
    WebSocketRejected,
    open_client,
    open_server,
    wait_until,
)

TOKEN = "status-test-token-0123"
ROOM = "room.lobby"


class Room:
    """An app whose WebSockets join :data:`ROOM` and echo; HTTP says which path it got."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None:
            await pr.upgrade(request, response)
        else:
            response.text(f"app {request.path}\n")

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, ROOM)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


def status_server(**overrides: Any) -> pr.Server:
    overrides.setdefault("port", 0)
    return pr.Server(Room, status_page=True, status_token=TOKEN, **overrides)


def page_of(server: pr.Server) -> StatusPage:
    assert server.ops is not None
    page = server.ops.status
    assert isinstance(page, StatusPage)
    return page


async def next_snapshot_where(ws: ClientWebSocket, test: Any) -> dict[str, Any]:
    """The first snapshot ``test`` holds for (one a tick: at most 30 ticks are read)."""
    seen = []
    for _ in range(30):
        snapshot = await ws.receive_json()
        if test(snapshot):
            return dict(snapshot)
        seen.append(snapshot)
    raise AssertionError(f"no snapshot passed {test}; the last: {seen[-1]}")


# -- the page and its token ----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"params": {"token": "wrong"}},
        {"params": {"token": ""}},
        {"params": {"token": TOKEN[:-1]}},
        {"cookies": {COOKIE: "wrong"}},
        {"params": {"token": "wrong"}, "cookies": {COOKIE: TOKEN}},  # the URL's token wins
    ],
    ids=["none", "wrong", "empty", "prefix", "wrong-cookie", "wrong-url-right-cookie"],
)
async def test_the_page_is_refused_without_its_token(options: dict[str, Any]) -> None:
    async with open_client(status_server()) as client:
        response = await client.get("/status", **options)
        assert response.status == 403
        assert TOKEN not in response.text
        assert "set-cookie" not in response.headers
        assert response.headers["cache-control"] == "no-store"


async def test_the_page_with_its_token_sets_the_cookie_reloads_use() -> None:
    async with open_client(status_server()) as client:
        response = await client.get("/status", params={"token": TOKEN})
        assert response.status == 200
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.content == (ASSETS / "index.html").read_bytes()
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN};")
        assert {"Path=/status", "HttpOnly", "SameSite=Strict"} <= set(cookie.split("; "))
        assert "Secure" not in cookie  # plain http here

        reload = await client.get("/status", cookies={COOKIE: TOKEN})
        assert reload.status == 200
        assert reload.content == response.content
        assert "set-cookie" not in reload.headers  # set once, from the URL's token


async def test_head_and_other_methods() -> None:
    async with open_client(status_server()) as client:
        head = await client.head("/status", params={"token": TOKEN})
        assert head.status == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) == len((ASSETS / "index.html").read_bytes())
        for path in ("/status", "/status/status.js"):
            post = await client.post(f"{path}?token={TOKEN}", content=b"x")
            assert post.status == 405
            assert post.headers["allow"] == "GET, HEAD"


async def test_every_file_the_page_names_is_served_without_the_token() -> None:
    page = (ASSETS / "index.html").read_text()
    named = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(named) == ["status/status.css", "status/status.js"]
    async with open_client(status_server()) as client:
        for relative in named:  # relative to /status: /status/status.js ...
            response = await client.get(f"/{relative}")
            assert response.status == 200, relative
            assert response.content == (ASSETS / relative.rpartition("/")[2]).read_bytes()
            kind = "javascript" if relative.endswith(".js") else "css"
            assert response.headers["content-type"] == f"text/{kind}; charset=utf-8"
            assert response.headers["x-content-type-options"] == "nosniff"
        other = await client.get("/status/other.js")
        assert other.text == "app /status/other.js\n"  # not the page's: the app's


# -- the socket ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"params": {"token": "wrong"}}, {"cookies": {COOKIE: "wrong"}}],
    ids=["none", "wrong", "wrong-cookie"],
)
async def test_the_socket_is_refused_without_the_token(options: dict[str, Any]) -> None:
    server = status_server()
    async with open_client(server) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/status/socket", **options):
                pass
        assert refused.value.response.status == 403
        assert page_of(server).watchers == 0


def open_status(client: Client, **options: Any) -> AbstractAsyncContextManager[ClientWebSocket]:
    if not options:
        options = {"params": {"token": TOKEN}}
    return client.websocket("/status/socket", **options)


async def test_a_snapshot_at_once_then_the_figures_move_with_traffic(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = status_server()
    async with (
        open_client(server) as client,
        client.websocket("/chat") as member,
        open_status(client, cookies={COOKIE: TOKEN}) as watcher,
    ):
        first = await watcher.receive_json()
        assert page_of(server).published == 0  # sent on open, before any tick
        assert first["processes"] == 1
        assert first["redis"] is None  # the in-memory hub
        assert first["connections"]["websocket"] == 2  # the member and the page itself
        assert first["topics"] == [[ROOM, 1]]  # the page's own topic left out
        assert first["watchers"] == 1

        requests = 7
        for _ in range(requests):
            assert (await client.get("/hello")).status == 200
        for text in ("a", "b", "c"):
            await member.send(text)
            assert await member.receive() == text
        before = first["counters"]
        later = await next_snapshot_where(
            watcher,
            lambda s: (
                s["counters"]["requests"] >= before["requests"] + requests
                and s["counters"]["ws_received"] >= before["ws_received"] + 3
            ),
        )
        assert later["statuses"]["2xx"] >= first["statuses"].get("2xx", 0) + requests
        assert later["counters"]["ws_sent"] >= before["ws_sent"] + 3
        assert later["time"] > first["time"]
        assert page_of(server).published >= 1

        await watcher.send("now")  # any message: a snapshot at once
        assert (await watcher.receive_json())["watchers"] == 1

    assert page_of(server).watchers == 0


async def test_topics_busiest_first_and_closes_by_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = status_server()
    hub = server.hub
    async with open_client(server) as client, open_status(client) as watcher:
        async with client.websocket("/a") as one, client.websocket("/b"):
            assert not one.closed
            await wait_until(lambda: hub.count(ROOM) == 2)
            snapshot = await next_snapshot_where(watcher, lambda s: s["topics"] == [[ROOM, 2]])
            assert snapshot["connections"]["websocket"] == 3
        await next_snapshot_where(
            watcher, lambda s: s["closes"].get("1000", 0) >= 2 and s["topics"] == []
        )


async def test_nothing_is_published_while_nobody_watches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = status_server()
    page = page_of(server)
    async with open_client(server) as client:
        await client.get("/hello")
        await trio.sleep(60)  # virtual: sixty ticks, were the page ticking unwatched
        assert page.published == 0

        async with open_status(client) as watcher:
            await watcher.receive_json()
            for _ in range(3):
                await watcher.receive_json()
            assert page.published >= 3  # ticking now that someone watches

        await wait_until(lambda: page.watchers == 0)
        published = page.published
        await trio.sleep(60)
        assert page.published == published


async def test_ops_prefix_moves_the_page() -> None:
    async with open_client(status_server(ops_prefix="/_ops")) as client:
        moved = await client.get("/_ops/status", params={"token": TOKEN})
        assert moved.status == 200
        assert "Path=/_ops/status" in moved.headers["set-cookie"].split("; ")
        assert (await client.get("/_ops/status/status.js")).status == 200
        app = await client.get("/status", params={"token": TOKEN})
        assert app.text == "app /status\n"  # the app's now
        async with client.websocket("/_ops/status/socket", params={"token": TOKEN}) as ws:
            assert (await ws.receive_json())["watchers"] == 1


async def test_metrics_port_serves_the_page_on_its_own_port() -> None:
    async with open_server(status_server(metrics_port=0)) as live:
        assert live.server.ops is not None
        own_port = live.server.ops.port
        assert own_port is not None and own_port != live.port
        async with open_client(f"http://127.0.0.1:{own_port}") as ops, open_client(live.url) as app:
            assert (await ops.get("/status", params={"token": TOKEN})).status == 200
            assert (await ops.get("/status")).status == 403
            assert (await app.get("/status", params={"token": TOKEN})).text == "app /status\n"
            async with ops.websocket("/status/socket", params={"token": TOKEN}) as ws:
                assert (await ws.receive_json())["watchers"] == 1


# -- the snapshot, from whatever figures come -----------------------------------------


def test_a_snapshot_of_sparse_figures_is_zeros() -> None:
    page = StatusPage(figures=dict, token=TOKEN, base="/status", hub=pr.Hub())
    snapshot = page.snapshot()
    assert snapshot["connections"] == {"http": 0, "websocket": 0, "sse": 0}
    assert set(snapshot["counters"].values()) == {0}
    assert snapshot["topics"] == [] and snapshot["closes"] == {} and snapshot["statuses"] == {}
    assert snapshot["redis"] is None and snapshot["watchers"] == 0


def test_a_snapshot_sums_requests_and_orders_topics() -> None:
    figures = {
        "counters": {
            "requests": [["GET", 200, 5], ["POST", 201, 2], ["GET", 404, 1], ["GET", 503, 4]],
            "ws_closes": {"1000": 3, "1006": 1},
            "slow_dropped": 2,
        },
        "gauges": {
            "connections": {"http": 1, "websocket": 9},
            "redis_up": 0,
            "topics": {"b": 2, TOPIC: 1, "c": 7, "a": 2},
        },
        "processes": 3,
    }
    page = StatusPage(figures=lambda: figures, token=TOKEN, base="/status", hub=pr.Hub())
    snapshot = page.snapshot()
    assert snapshot["counters"]["requests"] == 12
    assert snapshot["statuses"] == {"2xx": 7, "4xx": 1, "5xx": 4}
    assert snapshot["counters"]["slow_dropped"] == 2
    assert snapshot["topics"] == [["c", 7], ["a", 2], ["b", 2]]
    assert snapshot["connections"] == {"http": 1, "websocket": 9, "sse": 0}
    assert snapshot["closes"] == {"1000": 3, "1006": 1}
    assert (snapshot["processes"], snapshot["redis"]) == (3, 0)
