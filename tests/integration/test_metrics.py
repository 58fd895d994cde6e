"""``Config.metrics``: GET /metrics in the Prometheus text format, and the figures move right.

Each test scrapes, drives traffic, scrapes again and checks the differences,
reading the text with prometheus_client's own parser (what a scraper does).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import peregrine_rt as pr
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt._channels._server import Channels, Refuse, Socket
from peregrine_rt._channels._topics import topic
from peregrine_rt._metrics import BUCKETS
from peregrine_rt.exceptions import HandlerError
from peregrine_rt.testing import Client, open_client, open_server, wait_until
from tests.channels.conftest import Phx

from .test_hub import open_silent_subscriber

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Figures:
    """Every sample of an exposition, by (name, sorted labels)."""
    found: Figures = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: Client, path: str = "/metrics") -> Figures:
    response = await client.get(path)
    assert response.status == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Figures, after: Figures, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class App:
    """Plain HTTP answers, an upload limit, a WebSocket echo subscribed to a topic, SSE."""

    def __init__(self) -> None:
        self.release = trio.Event()  # ends the event stream

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            ws = await pr.upgrade(request, response)
            ws.hub.subscribe(ws, request.query.get("topic", "feed"))
        elif request.path == "/publish":
            response.json({"delivered": await request.hub.publish("feed", "news")})
        elif request.path == "/events":
            async with response.sse() as events:
                await events.send("hello")
                await self.release.wait()
        elif request.path == "/missing":
            response.text("no", status=404)
        elif request.method == "POST":
            response.text(str(len(await request.body())), status=201)
        else:
            response.text("ok")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if message == "close-4001":
            await ws.close(4001, "asked")
            return
        await ws.send(message)


async def test_off_by_default_the_path_is_the_apps() -> None:
    async with open_client(App) as client:
        response = await client.get("/metrics")
        assert response.text == "ok"  # the app answered


async def test_requests_are_counted_by_method_and_status_with_durations() -> None:
    async with open_client(App, metrics=True, max_body_size=100) as client:
        before = await scrape(client)
        for _ in range(3):
            assert (await client.get("/a")).status == 200
        for _ in range(2):
            assert (await client.post("/up", content=b"12345")).status == 201
        assert (await client.get("/missing")).status == 404
        assert (await client.post("/up", content=b"x" * 500)).status == 413
        assert (await client.request("BREW", "/pot")).status == 200
        after = await scrape(client)
    requests = "peregrine_http_requests_total"
    # The first scrape is a GET 200 counted in the second one.
    assert moved(before, after, requests, method="GET", status="200") == 4
    assert moved(before, after, requests, method="POST", status="201") == 2
    assert moved(before, after, requests, method="GET", status="404") == 1
    # Refused with its head (Content-Length over the limit): no request exists yet.
    assert moved(before, after, requests, method="other", status="413") == 1
    assert moved(before, after, requests, method="other", status="200") == 1  # no BREW series
    count = "peregrine_http_request_duration_seconds_count"
    assert moved(before, after, count) == 9
    inf = moved(before, after, "peregrine_http_request_duration_seconds_bucket", le="+Inf")
    assert inf == 9
    assert value(after, "peregrine_http_request_duration_seconds_sum") > 0


async def test_websocket_messages_closes_and_the_hub() -> None:
    async with open_client(App, metrics=True) as client:
        before = await scrape(client)
        async with client.websocket("/ws") as one, client.websocket("/ws") as two:
            for text in ("a", "b", "c"):
                await one.send(text)
                assert await one.receive() == text
            during = await scrape(client)
            assert value(during, "peregrine_connections", kind="websocket") == 2
            assert (await client.get("/publish")).json() == {"delivered": 2}
            assert await one.receive() == "news"
            assert await two.receive() == "news"
            await two.send("close-4001")
            assert (await two.receive_close()).code == 4001
        app_server = client.server
        assert app_server is not None
        await wait_until(lambda: not app_server.websockets)
        after = await scrape(client)
    assert moved(before, after, "peregrine_ws_messages_received_total") == 4
    assert moved(before, after, "peregrine_ws_messages_sent_total") == 3 + 2
    assert moved(before, after, "peregrine_ws_closes_total", code="4001") == 1
    assert moved(before, after, "peregrine_ws_closes_total", code="1000") == 1
    assert moved(before, after, "peregrine_hub_publishes_total") == 1
    assert moved(before, after, "peregrine_hub_deliveries_total") == 2
    assert value(after, "peregrine_connections", kind="websocket") == 0
    # The in-memory hub has no Redis: no redis_up series at all.
    assert not any(name == "peregrine_redis_up" for name, _ in after)


async def test_an_event_stream_counts_as_sse_while_it_lasts() -> None:
    app = App()
    async with open_client(app, metrics=True) as client:
        async with client.stream("GET", "/events") as response:
            assert response.status == 200
            figures = await scrape(client)
            assert value(figures, "peregrine_connections", kind="sse") == 1
            app.release.set()
        app_server = client.server
        assert app_server is not None
        await wait_until(lambda: app_server.stats.sse_streams == 0)
        figures = await scrape(client)
        assert value(figures, "peregrine_connections", kind="sse") == 0


@pytest.mark.parametrize("policy", ["close", "drop-oldest"])
async def test_slow_consumers_are_counted(policy: str) -> None:
    server = pr.Server(
        App(), ws_outbox_size=128 * 1024, ws_slow_policy=policy, ws_close_timeout=0.5, metrics=True
    )
    async with open_server(server) as live, open_client(live.url) as client:
        before = await scrape(client)
        slow = await open_silent_subscriber(server.port, "/ws?topic=big")
        await wait_until(lambda: server.hub.count("big") == 1)
        piece = "x" * 60_000
        with trio.fail_after(30):
            for _ in range(60):
                await server.hub.publish("big", piece)
        after = await scrape(client)
        await slow.aclose()
    if policy == "close":
        assert moved(before, after, "peregrine_slow_consumer_drops_total", action="closed") == 1
        assert moved(before, after, "peregrine_slow_consumer_drops_total", action="dropped") == 0
    else:
        dropped = moved(before, after, "peregrine_slow_consumer_drops_total", action="dropped")
        assert dropped > 0
        assert moved(before, after, "peregrine_slow_consumer_drops_total", action="closed") == 0


class Rooms(Channels):
    history = MemoryHistory()

    @topic("room:{name}")
    class Room:
        async def join(self, socket: Socket, params: Any) -> None:
            if socket.params["name"] == "locked":
                raise Refuse("locked")

        async def on_post(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast("post", payload)


async def test_channels_joins_topics_and_recoveries() -> None:
    async with open_client(Rooms(), metrics=True) as client:
        before = await scrape(client)
        async with client.websocket("/") as ws:
            phx = Phx(ws)
            _, frame = await phx.join("room:a")
            epoch = frame[4]["response"]["epoch"]
            await phx.join("room:b")
            await phx.join("room:locked")  # refused by the app
            await phx.join("nowhere")  # no such topic
            during = await scrape(client)
            assert value(during, "peregrine_channels_topics") == 2
        async with client.websocket("/") as ws:  # a new connection recovers both rooms
            phx = Phx(ws)
            _, frame = await phx.join("room:a", {"since": {"offset": 0, "epoch": epoch}})
            assert frame[4]["response"]["recovered"] is True
            _, frame = await phx.join("room:b", {"since": {"offset": 0, "epoch": "gone"}})
            assert frame[4]["response"]["recovered"] is False
            reason = frame[4]["response"]["reason"]
        app_server = client.server
        assert app_server is not None
        await wait_until(lambda: app_server.stats.channel_topics == 0)
        after = await scrape(client)
    joins = "peregrine_channels_joins_total"
    assert moved(before, after, joins, result="ok") == 4
    assert moved(before, after, joins, result="error") == 2
    recoveries = "peregrine_channels_recoveries_total"
    assert moved(before, after, recoveries, outcome="recovered") == 1
    assert moved(before, after, recoveries, outcome=reason) == 1
    assert value(after, "peregrine_channels_topics") == 0


async def test_health_and_readiness() -> None:
    async with open_client(App, health=True) as client:
        live = await client.get("/healthz")
        assert (live.status, live.json()) == (200, {"status": "ok"})
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert ready.json() == {
            "status": "ready",
            "listening": True,
            "hub": True,
            "not_shutting_down": True,
        }
        assert (await client.post("/readyz")).status == 405
        assert (await client.get("/metrics")).text == "ok"  # metrics stay off
        app_server = client.server
        assert app_server is not None and app_server.ops is not None
        app_server.request_shutdown()
        assert app_server.ops.readiness()["not_shutting_down"] is False


async def test_the_prefix_moves_every_endpoint() -> None:
    async with open_client(App, metrics=True, health=True, ops_prefix="/_ops") as client:
        assert (await client.get("/metrics")).text == "ok"
        assert (await client.get("/healthz")).text == "ok"
        await scrape(client, "/_ops/metrics")
        assert (await client.get("/_ops/readyz")).status == 200


class Api(pr.Router):
    @pr.get("/metrics")
    async def mine(self, request: pr.Request, response: pr.Response) -> None:
        response.text("the app's own")


async def test_a_router_route_on_an_endpoint_is_refused_at_start() -> None:
    server = pr.Server(Api, metrics=True, port=0)
    async with trio.open_nursery() as nursery:
        with pytest.raises(HandlerError, match=r"/metrics is served by the server.*GET, HEAD"):
            await nursery.start(server.serve)
    # With a prefix (or a port of their own) both live side by side.
    async with open_client(Api, metrics=True, ops_prefix="/_ops") as client:
        assert (await client.get("/metrics")).text == "the app's own"
        await scrape(client, "/_ops/metrics")


async def test_a_port_of_their_own() -> None:
    server = pr.Server(App(), metrics=True, health=True, metrics_port=0)
    async with open_server(server) as live, open_client(live.url) as app_client:
        assert server.ops is not None
        port = server.ops.port
        assert port is not None and port != server.port
        assert (await app_client.get("/metrics")).text == "ok"  # the app's port: the app's
        async with open_client(f"http://127.0.0.1:{port}") as ops_client:
            await app_client.get("/hello")
            figures = await scrape(ops_client)
            assert value(figures, "peregrine_http_requests_total", method="GET", status="200") >= 2
            assert (await ops_client.get("/readyz")).status == 200
            assert (await ops_client.get("/hello")).status == 404


async def test_figures_are_json_snapshots_that_merge() -> None:
    stats = pr.Server(App).stats
    stats.request_done("GET", 200, 0.002)
    stats.ws_received += 2
    snapshot = json.loads(json.dumps(stats.snapshot()))  # what a worker writes
    from peregrine_rt._metrics import merge

    merged = merge([snapshot, snapshot], live=[True, False])
    assert merged["counters"]["requests"] == [["GET", 200, 2]]
    assert merged["counters"]["ws_received"] == 4
    assert merged["processes"] == 1


def test_responses_tallied_are_folded_into_counters_and_buckets() -> None:
    stats = pr.Server(App).stats
    tally = stats.tally  # what a connection holds on to
    tally(("GET", 200, 0.0))
    tally(("GET", 200, BUCKETS[-1] * 2))  # over the last bound: the +Inf bucket only
    tally(("BREW", 418, BUCKETS[0]))  # a bound falls in its own bucket (le)
    stats.request_done("GET", 200, BUCKETS[1] + 1e-9)
    stats.fold()
    assert stats.requests == {("GET", 200): 3, ("other", 418): 1}
    expected = [0] * (len(BUCKETS) + 1)
    expected[0], expected[2], expected[-1] = 2, 1, 1
    assert stats.duration_buckets == expected
    assert stats.duration_sum == pytest.approx(BUCKETS[-1] * 2 + BUCKETS[0] + BUCKETS[1])
    assert stats.done == []
    tally(("GET", 200, 0.0))  # the same list after a fold
    assert stats.snapshot()["counters"]["requests"] == [["GET", 200, 4], ["other", 418, 1]]


def test_responses_counted_where_no_task_folds_stay_a_short_list() -> None:
    from peregrine_rt._metrics import FOLD_BATCH, Stats

    stats = Stats()  # metrics off: the 503s of a full server still go through here
    for _ in range(FOLD_BATCH * 5 + 3):
        stats.request_done("-", 503, 0.0)
    assert len(stats.done) < FOLD_BATCH
    stats.fold()
    assert stats.requests == {("other", 503): FOLD_BATCH * 5 + 3}


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["GET", "POST", "BREW", "HEAD"]),
            st.integers(100, 599),
            st.one_of(st.sampled_from(BUCKETS), st.floats(0, 100, allow_nan=False)),
        ),
        max_size=60,
    ),
    st.integers(1, 70),
)
@settings(max_examples=300, deadline=None)
def test_a_fold_counts_as_one_response_at_a_time(
    responses: list[tuple[str, int, float]], folds: int
) -> None:
    from peregrine_rt._metrics import KNOWN_METHODS, Stats

    stats = Stats()
    requests: dict[tuple[str, int], int] = {}
    buckets = [0] * (len(BUCKETS) + 1)
    for i, (method, status, seconds) in enumerate(responses):
        stats.tally((method, status, seconds))
        if i % folds == 0:
            stats.fold()  # batches of every size, one response to all of them
        key = (method if method in KNOWN_METHODS else "other", status)
        requests[key] = requests.get(key, 0) + 1
        buckets[sum(bound < seconds for bound in BUCKETS)] += 1
    stats.fold()
    assert stats.requests == requests
    assert stats.duration_buckets == buckets
    assert stats.duration_sum == pytest.approx(sum(s for _, _, s in responses))


async def test_a_server_folds_its_tally_on_its_own(autojump_clock: trio.abc.Clock) -> None:
    from peregrine_rt._metrics import FOLD_BATCH

    server = pr.Server(App(), metrics=True)
    stats = server.stats
    async with open_server(server) as live, open_client(live.url) as client:
        assert (await client.get("/a")).status == 200
        await wait_until(lambda: stats.requests.get(("GET", 200)) == 1)
        assert stats.done == []
        # Under load the folds come faster, about FOLD_BATCH responses each, so
        # the list stays short: 100,000 responses a second for 3 s here.  (The
        # first fold, after FOLD_INTERVAL of quiet, sees the rate.)
        longest = 0
        for i in range(300):
            if i >= 100:
                longest = max(longest, len(stats.done))
            stats.done.extend([("GET", 200, 0.001)] * 1000)
            await trio.sleep(0.01)
        assert longest <= FOLD_BATCH * 3  # a fold every FOLD_INTERVAL: 50,000
        await wait_until(lambda: not stats.done)
        assert stats.requests[("GET", 200)] == 1 + 300 * 1000


async def test_connections_refused_at_the_limit_are_counted_as_503() -> None:
    server = pr.Server(App(), metrics=True, metrics_port=0, max_connections=1)
    async with open_server(server) as live, open_client(live.url) as app_client:
        assert server.ops is not None and server.ops.port is not None
        async with open_client(f"http://127.0.0.1:{server.ops.port}") as ops_client:
            before = await scrape(ops_client)
            async with app_client.connection() as held:  # the one slot
                assert (await held.get("/")).status == 200
                refused = await trio.open_tcp_stream("127.0.0.1", server.port)
                answer = b""
                with trio.fail_after(10):
                    while b"\r\n\r\n" not in answer:
                        chunk = await refused.receive_some()
                        if not chunk:
                            break
                        answer += chunk
                await refused.aclose()
                assert answer.startswith(b"HTTP/1.1 503 ")
            after = await scrape(ops_client)
    assert moved(before, after, "peregrine_http_requests_total", method="other", status="503") == 1


def test_shared_figures_sum_every_process_and_a_new_run_starts_clean(tmp_path: Any) -> None:
    from peregrine_rt._metrics import SharedFigures, clear_shared_figures

    stats = pr.Server(App).stats
    stats.request_done("GET", 200, 0.001)
    stats.sse_streams = 3  # a gauge
    snapshot = stats.snapshot()
    # Another live process (this one's parent stands in) and one that exited.
    SharedFigures(tmp_path, pid=os.getppid()).write(snapshot)
    SharedFigures(tmp_path, pid=2**22 + 7).write(snapshot)  # above pid_max: not running
    (tmp_path / "notes.json").write_text("{}")  # not a snapshot: left alone
    me = SharedFigures(tmp_path)
    figures = me.figures(snapshot)
    assert figures["counters"]["requests"] == [["GET", 200, 3]]  # the exited one's counts stay
    assert figures["gauges"]["connections"]["sse"] == 6  # two live processes; not the exited one
    assert figures["processes"] == 2
    clear_shared_figures(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.json"]
    assert me.figures(snapshot)["counters"]["requests"] == [["GET", 200, 1]]
