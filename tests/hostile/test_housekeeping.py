"""The server's own housekeeping does not stall the loop: it is spread out and yields in batches.

Reported with 19,500 idle sockets: heartbeat pings went out in waves that
stalled the server for up to 0.9 s, a broadcast to all of them stalled it
0.27-0.37 s, and 2,200 simultaneous timeouts 431 ms.  These tests check the
mechanisms (jitter, batches, schedule points) exactly, without timing;
``bench/scale.py`` measures the lag at 20,000 sockets.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt import _hub, _outbox, _server
from peregrine_rt._lag import LagMonitor
from peregrine_rt._outbox import Outbox, SendScheduler
from peregrine_rt.testing import wait_until
from tests.integration.conftest import get, open_server
from tests.integration.ws_helpers import WSClient, connect_ws
from tests.unit.test_outbox import FakeOwner, FakeTransport


class Ticker:
    """Counts the schedule turns of a task running beside the code under test."""

    def __init__(self) -> None:
        self.turn = 0

    async def run(self) -> None:
        while True:
            self.turn += 1
            await trio.lowlevel.checkpoint()


class Recording:
    """A hub subscriber noting the ticker's turn when each delivery reaches it."""

    def __init__(self, ticker: Ticker) -> None:
        self.ticker = ticker
        self.turns: list[int] = []

    def deliver(self, message: str | bytes) -> bool:
        self.turns.append(self.ticker.turn)
        return True


class FakeClock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def publish_turns(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, n: int) -> list[int]:
    """Publish to ``n`` subscribers with the hub's clock replaced: each one's ticker turn."""
    monkeypatch.setattr(_hub, "_clock", clock)
    hub = pr.Hub()
    ticker = Ticker()
    subscribers = [Recording(ticker) for _ in range(n)]
    for sub in subscribers:
        hub.subscribe(sub, "t")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker.run)
        await trio.lowlevel.checkpoint()
        assert await hub.publish("t", "hi") == len(subscribers)
        nursery.cancel_scope.cancel()
    turns = [sub.turns[0] for sub in subscribers]
    assert turns == sorted(turns)  # in subscription order
    return turns


async def test_a_publish_to_many_subscribers_yields_once_its_time_slice_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each look at the clock (one per FANOUT_CHECK deliveries) is half a slice.
    turns = await publish_turns(
        monkeypatch, FakeClock(_hub.FANOUT_SLICE / 2), 8 * _hub.FANOUT_CHECK
    )
    # The other task ran during the publish, only ever between two checks
    # (trio may run it before or after the publisher in a round: not every
    # yield shows, but at least one does).
    changes = [i for i in range(1, len(turns)) if turns[i] != turns[i - 1]]
    assert changes
    assert all(i % _hub.FANOUT_CHECK == 0 for i in changes), changes


async def test_a_quick_publish_to_many_subscribers_does_not_yield(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Time decides, not the count: a clock that stands still never ends the slice.
    turns = await publish_turns(monkeypatch, FakeClock(0.0), 20 * _hub.FANOUT_CHECK)
    assert len(set(turns)) == 1


async def flush_turns(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, n: int) -> list[int]:
    """Flush ``n`` corked sockets, the flush's clock replaced: the ticker's turn per send."""
    monkeypatch.setattr(_outbox, "_clock", clock)
    ticker = Ticker()
    scheduler = SendScheduler()
    transports = [FakeTransport() for _ in range(n)]
    outboxes = [
        Outbox(FakeOwner(), t, scheduler, limit=1 << 20)  # type: ignore[arg-type]
        for t in transports
    ]
    seen: list[int] = []
    for t in transports:
        original = t.try_send

        def try_send(data: bytes, original=original) -> int | None:  # type: ignore[no-untyped-def]
            seen.append(ticker.turn)
            return original(data)

        t.try_send = try_send  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        nursery.start_soon(ticker.run)
        for box in outboxes:
            box.deliver(b"frame")
        await wait_until(lambda: len(seen) == len(outboxes))
        nursery.cancel_scope.cancel()
    assert all(bytes(t.wire) == b"frame" for t in transports)
    return seen


async def test_the_flush_yields_once_its_time_slice_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = await flush_turns(
        monkeypatch, FakeClock(_outbox.FLUSH_SLICE / 2), 8 * _outbox.FLUSH_CHECK
    )
    changes = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
    assert changes  # the ticker ran during the flush, only between checks
    assert all(i % _outbox.FLUSH_CHECK == 0 for i in changes), changes


async def test_a_quick_flush_does_not_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = await flush_turns(monkeypatch, FakeClock(0.0), 20 * _outbox.FLUSH_CHECK)
    assert len(set(seen)) == 1


class Idle:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


async def test_heartbeats_are_spread_over_a_whole_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sockets opened together ping between 50% and 150% of ws_ping_interval, not at once."""
    interval = 40.0
    sent_at: list[float] = []
    async with open_server(Idle, ws_ping_interval=interval, ws_ping_timeout=60, guard=500) as h:
        sockets = [await connect_ws(h) for _ in range(60)]
        start = trio.current_time()

        async def watch(ws: WSClient) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.receive)  # reads, and answers pings
                await wait_until(lambda: ws.pings, timeout=interval * 3)
                sent_at.append(trio.current_time())
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for ws in sockets:
                nursery.start_soon(watch, ws)
    offsets = sorted(t - start for t in sent_at)
    assert len(offsets) == 60
    tick = 10.0  # the reaper's tick here: min(timeouts) / 4
    assert offsets[0] >= 0.5 * interval - tick
    assert offsets[-1] <= 1.5 * interval + tick
    assert offsets[-1] - offsets[0] >= 0.5 * interval  # spread, over most of an interval
    assert len({round(o) for o in offsets}) >= 2  # not one wave


async def test_a_mass_timeout_is_unwound_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 connections time out at once: the reaper fires them REAP_CANCELS at a time.

    On the real clock (a task that never blocks would stop the autojump clock):
    a ticker task spins beside the reaper while the 408s go out.
    """
    monkeypatch.setattr(_server, "REAP_CANCELS", 50)
    ticker = Ticker()
    closed_turns: list[int] = []
    # 1 s: time enough to open all 300 before the first one's timeout (on a
    # busy machine 0.2 s was not, and the server closed it before its half head).
    async with open_server(Idle, header_timeout=1.0, keep_alive_timeout=30) as h:
        streams = []
        for _ in range(300):
            stream = await h.connect()
            await stream.send_all(b"GET / HTTP/1.1\r\n")  # half a head: a 408 is due
            streams.append(stream)

        async def watch(stream: trio.abc.Stream) -> None:
            while await stream.receive_some(65536):
                pass
            closed_turns.append(ticker.turn)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            for stream in streams:
                nursery.start_soon(watch, stream)
            await wait_until(lambda: len(closed_turns) == 300, timeout=30)
            nursery.cancel_scope.cancel()
    assert len(set(closed_turns)) >= 3  # the ticker ran while the timeouts unwound


async def test_the_lag_monitor_sees_a_stall_and_logs_it(
    mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A stall is simulated by moving the clock past the monitor's wake-up time."""
    monitor = LagMonitor(interval=0.01, warn_after=0.05, warn_every=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.testing.wait_all_tasks_blocked()  # it sleeps until t + 0.01
        mock_clock.jump(0.1)  # the loop "ran something" for 0.1 s meanwhile
        await trio.testing.wait_all_tasks_blocked()  # it woke 0.09 s late, and sleeps again
        nursery.cancel_scope.cancel()
    assert monitor.samples == 1 and monitor.stalls == 1
    assert monitor.worst == pytest.approx(0.09)
    assert monitor.take_worst() == pytest.approx(0.09)
    assert monitor.take_worst() == 0.0  # reset by the read
    assert any("event loop stalled for 90 ms" in r.getMessage() for r in caplog.records)


async def test_the_server_runs_a_lag_monitor() -> None:
    async with open_server(Idle) as h:
        stream = await h.connect()
        await stream.send_all(get("/"))
        await wait_until(lambda: h.server.lag.samples > 0)
        assert h.server.lag.worst < 5
