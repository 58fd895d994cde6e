"""Tests of examples/dashboard.py (and the page examples/dashboard.html) through a real server.

The Python client (:mod:`peregrine_rt.client`) drives the app: over memory
streams to the app's real ``Server`` (``open_channels_connector``, whose
``drop_all`` cuts the connections as a network failure would), and over TCP
for conflation, which needs a real kernel socket that stops being read.
"""

from __future__ import annotations

import socket as stdsocket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from examples.dashboard import SYMBOLS, Dashboard, Site
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt.client import Backoff, JoinReply, PushError, Socket, open_socket
from peregrine_rt.testing import WebSocketRejected, open_client, open_server, wait_until
from peregrine_rt.testing._channels import TEST_URL, open_channels_connector

FAST = Backoff(initial=0.02, maximum=0.2)
PAGE = Path(__file__).resolve().parents[2] / "examples" / "dashboard.html"


def quiet_site(**attrs: Any) -> Site:
    """A Site whose Dashboard has its own history, and no feed unless ``interval`` is given."""

    class Quiet(Dashboard):
        history = MemoryHistory(max_count=500)
        interval: ClassVar[float | None] = attrs.get("interval")
        seed: ClassVar[int | None] = 7

    return Site(Quiet())


@asynccontextmanager
async def two_clients(site: Site, *names: str) -> AsyncIterator[tuple[Any, list[Socket]]]:
    """The site served in memory, and one connected client per name."""
    async with open_channels_connector(site) as connector:
        assert connector is not None
        sockets: list[Socket] = []
        async with _open_all(connector, names, sockets):
            yield connector, sockets


@asynccontextmanager
async def _open_all(
    connector: Any, names: tuple[str, ...], out: list[Socket]
) -> AsyncIterator[None]:
    if not names:
        yield
        return
    async with open_socket(
        TEST_URL + "/socket", params={"name": names[0]}, connect=connector, backoff=FAST
    ) as socket:
        out.append(socket)
        async with _open_all(connector, names[1:], out):
            yield


async def test_the_page_and_peregrine_js_are_served() -> None:
    async with open_client(quiet_site()) as client:
        page = await client.get("/")
        assert page.status == 200
        assert page.text == PAGE.read_text()
        assert 'from "/_peregrine/peregrine.js"' in page.text
        for joined in ("prices", "metrics", "log", "viewers"):
            assert f'socket.channel("{joined}")' in page.text
        js = await client.get("/_peregrine/peregrine.js")
        assert js.status == 200
        assert js.headers["content-type"].startswith("text/javascript")
        assert js.content == files("peregrine_rt").joinpath("static/peregrine.js").read_bytes()


async def test_the_feed_publishes_prices_and_metrics() -> None:
    site = quiet_site(interval=0.01)
    async with two_clients(site, "ann") as (_, (socket,)):
        prices, metrics = socket.channel("prices"), socket.channel("metrics")
        async with prices.messages("price") as ticks, metrics.messages("metric") as numbers:
            await prices.join()
            await metrics.join()
            seen: set[str] = set()
            while seen != set(SYMBOLS):
                message = await ticks.receive()
                assert message.offset is None  # prices keep no history
                seen.add(message.payload["symbol"])
                assert message.payload["price"] > 0
            names = {(await numbers.receive()).payload["name"] for _ in range(4)}
            assert names == {"ticks", "viewers"}


async def test_a_new_page_loads_the_log_then_goes_live() -> None:
    site = quiet_site()
    app = site.dashboard
    async with two_clients(site, "ann") as (connector, (socket,)):
        for n in range(3):
            await app.broadcast("log", "line", {"level": "info", "text": f"old {n}"})
        log = socket.channel("log")
        async with log.messages("line") as lines:
            reply = await log.join()
            assert reply["offset"] == 3
            await app.broadcast("log", "line", {"level": "info", "text": "new"})
            live = await lines.receive()
            assert (live.offset, live.payload["text"]) == (4, "new")
        async with open_client(connector.server) as http:
            backlog = (await http.get(f"/log?upto={reply['offset']}")).json()["lines"]
            assert [(b["offset"], b["text"]) for b in backlog] == [
                (1, "old 0"),
                (2, "old 1"),
                (3, "old 2"),
            ]
            assert [
                b["offset"] for b in (await http.get("/log?upto=3&limit=2")).json()["lines"]
            ] == [2, 3]
            assert (await http.get("/log?upto=x")).status == 400


async def test_a_reconnecting_page_gets_exactly_the_lines_it_missed() -> None:
    site = quiet_site()
    app = site.dashboard
    async with two_clients(site, "ann") as (connector, (socket,)):
        log = socket.channel("log")
        async with log.messages("line") as lines, log.joins() as joins:
            await log.join()
            assert (await joins.receive()).recovered is None  # a first join asks for nothing
            await app.broadcast("log", "line", {"level": "info", "text": "seen"})
            assert (await lines.receive()).offset == 1

            connector.refuse = True  # the network goes away...
            await connector.drop_all()
            await wait_until(lambda: not socket.connected)
            for n in range(3):  # ...while three lines are logged
                await app.broadcast("log", "line", {"level": "info", "text": f"missed {n}"})
            connector.refuse = False

            rejoin: JoinReply = await joins.receive()
            assert (rejoin.rejoin, rejoin.recovered, rejoin.reason) == (True, True, None)
            replayed = [await lines.receive() for _ in range(3)]
            assert [(m.offset, m.payload["text"]) for m in replayed] == [
                (2, "missed 0"),
                (3, "missed 1"),
                (4, "missed 2"),
            ]
            await app.broadcast("log", "line", {"level": "info", "text": "live"})
            assert (await lines.receive()).offset == 5  # nothing twice, nothing skipped


async def test_notes_need_a_name_and_are_acknowledged() -> None:
    async with two_clients(quiet_site(), "ann", "anonymous") as (_, (ann, anon)):
        ann_log, anon_log = ann.channel("log"), anon.channel("log")
        async with anon_log.messages("line") as lines:
            await ann_log.join()
            await anon_log.join()
            assert await ann_log.push("note", {"text": " deploy at 5 "}) == {"noted": True}
            assert (await lines.receive()).payload["text"] == "ann: deploy at 5"
            with pytest.raises(PushError) as refused:
                await anon_log.push("note", {"text": "hi"})
            assert refused.value.response == {"reason": "sign in to write"}
            with pytest.raises(PushError) as empty:
                await ann_log.push("note", {"text": "  "})
            assert empty.value.response == {"reason": "empty"}


async def test_presence_shows_each_viewer_once_with_a_meta_per_tab() -> None:
    site = quiet_site()
    async with two_clients(site, "ann", "ann", "bob") as (_, (tab1, tab2, bob)):
        channels = [s.channel("viewers") for s in (tab1, tab2, bob)]
        for channel in channels:
            await channel.join()

        def viewers() -> dict[str, int]:
            return {e.key: len(e.metas) for e in channels[2].presence.list()}

        await wait_until(lambda: viewers() == {"ann": 2, "bob": 1})
        assert all("since" in meta for e in channels[2].presence.list() for meta in e.metas)
        assert len(site.dashboard.members("viewers")) == 3
        await channels[0].leave()  # ann closes one tab
        await wait_until(lambda: viewers() == {"ann": 1, "bob": 1})
        metrics = bob.channel("metrics")
        async with metrics.messages("metric") as numbers:
            await metrics.join()
            await site.dashboard.tick()
            published = {
                m.payload["name"]: m.payload["value"]
                for m in [await numbers.receive() for _ in range(2)]
            }
        assert published == {"ticks": 1, "viewers": 2}  # this node's joins of "viewers"


async def test_a_bad_name_is_refused_at_the_handshake() -> None:
    async with open_client(quiet_site()) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/socket/websocket?vsn=2.0.0&name=%3Cscript%3E"):
                pass
        assert refused.value.response.status == 400
        async with client.websocket("/socket/websocket?vsn=2.0.0&name=ann") as ws:
            assert ws.subprotocol is None  # offered none, chose none


# Conflation needs a socket the client stops reading: the kernel's buffers
# fill, then the server's outbox, which keeps the newest price per symbol.
PAD = "x" * 1000  # a kilobyte per update, so 20,000 of them overflow the buffers
UPDATES = 20_000


async def test_a_slow_viewer_gets_the_newest_price_of_each_symbol() -> None:
    site = quiet_site()
    app = site.dashboard
    async with open_server(site, ws_outbox_size=256 * 1024) as live:

        async def small_buffer() -> trio.abc.Stream:
            sock = trio.socket.socket()
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", live.port))
            return trio.SocketStream(sock)

        async with open_socket(
            live.ws_url + "/socket", connect=small_buffer, heartbeat=None
        ) as socket:
            prices = socket.channel("prices")
            async with prices.messages("price", buffer=1) as ticks:
                await prices.join()
                for i in range(UPDATES):  # nobody reads meanwhile
                    symbol = SYMBOLS[i % len(SYMBOLS)]
                    await app.broadcast(
                        "prices", "price", {"symbol": symbol, "price": i, "pad": PAD}
                    )
                last: dict[str, int] = {}
                received = 0
                final = {s: UPDATES - len(SYMBOLS) + k for k, s in enumerate(SYMBOLS)}
                with trio.fail_after(20):
                    while last != final:
                        message = await ticks.receive()
                        last[message.payload["symbol"]] = message.payload["price"]
                        received += 1
            assert received < UPDATES / 2  # the backlog was conflated, not sent
            assert socket.connections == 1  # never closed as a slow consumer
