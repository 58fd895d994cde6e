"""Presence (peregrine_rt._channels._presence): one node, and several over an in-memory hub.

Nodes here are Presence objects in one trio run sharing one in-memory
:class:`~peregrine_rt.Hub` through a :class:`Link` each, which a test can cut
(a node killed, so it says nothing more) or make lossy (a message lost, as
when Redis is away).  Time is the autojump clock: a TTL of 15 s costs no real
time.  ``test_presence_nodes.py`` does the same with real processes and a
real redis-server.

What a client sees is checked with :class:`PhoenixClient`, a transcription of
phoenix.js's ``Presence.syncState``/``syncDiff`` (phoenix 1.7,
``assets/js/phoenix/presence.js``): a client that takes ``presence_state``
then every ``presence_diff`` must hold exactly what ``state()`` says.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from peregrine_rt._channels._presence import PRESENCE_HUB_TOPIC, Presence
from peregrine_rt._channels._presence_state import PresenceState
from peregrine_rt._hub import Hub, Subscriber
from peregrine_rt.exceptions import HubUnavailable
from peregrine_rt.testing import wait_until
from peregrine_rt.websocket import WebSocket

TOPIC = "room:lobby"
TTL = 15.0
BEAT = 5.0


class PhoenixClient:
    """What phoenix.js's Presence holds: syncState, then syncDiff per diff (transcribed)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.pending: list[dict[str, Any]] = []
        self.synced = False

    def sync_state(self, new_state: dict[str, Any]) -> None:
        new_state = copy.deepcopy(new_state)
        joins: dict[str, Any] = {}
        leaves: dict[str, Any] = {}
        for key, presence in self.state.items():
            if key not in new_state:
                leaves[key] = presence
        for key, new_presence in new_state.items():
            current = self.state.get(key)
            if current is not None:
                new_refs = [m["phx_ref"] for m in new_presence["metas"]]
                cur_refs = [m["phx_ref"] for m in current["metas"]]
                joined = [m for m in new_presence["metas"] if m["phx_ref"] not in cur_refs]
                left = [m for m in current["metas"] if m["phx_ref"] not in new_refs]
                if joined:
                    joins[key] = {"metas": joined}
                if left:
                    leaves[key] = {"metas": left}
            else:
                joins[key] = new_presence
        self.sync_diff({"joins": joins, "leaves": leaves})
        self.synced = True
        for diff in self.pending:
            self.sync_diff(diff)
        self.pending = []

    def sync_diff(self, diff: dict[str, Any]) -> None:
        diff = copy.deepcopy(diff)
        for key, new_presence in diff["joins"].items():
            current = self.state.get(key)
            self.state[key] = copy.deepcopy(new_presence)
            if current is not None:
                joined_refs = [m["phx_ref"] for m in self.state[key]["metas"]]
                cur_metas = [m for m in current["metas"] if m["phx_ref"] not in joined_refs]
                self.state[key]["metas"][:0] = cur_metas
        for key, left_presence in diff["leaves"].items():
            current = self.state.get(key)
            if current is None:
                continue
            refs_to_remove = [m["phx_ref"] for m in left_presence["metas"]]
            current["metas"] = [m for m in current["metas"] if m["phx_ref"] not in refs_to_remove]
            if not current["metas"]:
                del self.state[key]

    def follow(self, topic: str, diff: dict[str, Any]) -> None:
        """An on_diff callback: the diffs of TOPIC, through JSON as on the wire."""
        if topic == TOPIC:
            self.on_diff(json.loads(json.dumps(diff)))

    def on_diff(self, diff: dict[str, Any]) -> None:
        if self.synced:
            self.sync_diff(diff)
        else:
            self.pending.append(diff)


class Link(Hub):
    """One node's link to a shared in-memory hub: up, cut (dead), or losing its next publishes."""

    def __init__(self, shared: Hub) -> None:
        super().__init__()
        self.shared = shared
        self.up = True
        self.lose = 0  # publishes to lose (sent, never delivered), then back to normal
        self._wrapped: dict[object, _Gate] = {}

    def subscribe(self, subscriber: WebSocket | Subscriber, topic: str) -> None:
        gate = self._wrapped.setdefault(subscriber, _Gate(self, subscriber))
        self.shared.subscribe(gate, topic)

    def unsubscribe(self, subscriber: WebSocket | Subscriber, topic: str | None = None) -> None:
        gate = self._wrapped.get(subscriber)
        if gate is not None:
            self.shared.unsubscribe(gate, topic)

    async def publish(self, topic: str, message: str | bytes) -> int:
        if not self.up:
            raise HubUnavailable("cut", topic, 0)
        if self.lose:
            self.lose -= 1
            await trio.lowlevel.checkpoint()
            return 0
        return await self.shared.publish(topic, message)


class _Gate:
    def __init__(self, link: Link, subscriber: WebSocket | Subscriber) -> None:
        self.link = link
        self.subscriber = subscriber

    def deliver(self, message: str | bytes) -> bool:
        return self.link.up and self.subscriber.deliver(message)


class Node:
    """A Presence on a Link, with what it reported and what a client of it would hold."""

    def __init__(self, shared: Hub, **options: Any) -> None:
        self.link = Link(shared)
        self.presence = Presence(self.link, **{"node_ttl": TTL, "heartbeat": BEAT, **options})
        self.diffs: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []  # when each diff was reported
        self.client = PhoenixClient()
        self.client.sync_state(self.presence.state(TOPIC))
        self.presence.on_diff(self._on_diff)
        self.cancel = trio.CancelScope()

    def _on_diff(self, topic: str, diff: dict[str, Any]) -> None:
        # The wire: what the core would send, JSON-encoded and decoded.
        diff = json.loads(json.dumps(diff))
        self.diffs.append((topic, diff))
        self.times.append(trio.current_time())
        if topic == TOPIC:
            self.client.on_diff(diff)

    def metas(self, key: str, topic: str = TOPIC) -> list[dict[str, Any]]:
        return list(self.presence.state(topic).get(key, {"metas": []})["metas"])

    def leaves(self) -> list[str]:
        """The phx_refs that left, in the diffs reported so far."""
        return [
            m["phx_ref"]
            for _, d in self.diffs
            for entry in d["leaves"].values()
            for m in entry["metas"]
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.cancel:
            await self.presence.run(task_status=task_status)


@asynccontextmanager
async def nodes(count: int, **options: Any) -> AsyncIterator[list[Node]]:
    shared = Hub()
    made = [Node(shared, **options) for _ in range(count)]
    async with trio.open_nursery() as nursery:
        for node in made:
            await nursery.start(node.run)
        yield made
        nursery.cancel_scope.cancel()


def refs(metas: list[dict[str, Any]]) -> set[str]:
    return {m["phx_ref"] for m in metas}


# -- one node ---------------------------------------------------------------------------


async def test_track_reports_a_join_and_the_state_has_the_meta() -> None:
    presence = Presence(Hub())
    seen: list[tuple[str, dict[str, Any]]] = []
    presence.on_diff(lambda topic, diff: seen.append((topic, diff)))
    assert presence.state(TOPIC) == {}
    ref = await presence.track(TOPIC, "alice", "c1", {"status": "away"})
    meta = {"phx_ref": ref, "status": "away"}
    assert presence.state(TOPIC) == {"alice": {"metas": [meta]}}
    assert seen == [(TOPIC, {"joins": {"alice": {"metas": [meta]}}, "leaves": {}})]
    assert presence.state("room:other") == {}
    assert presence.topics() == [TOPIC]


async def test_one_key_on_two_connections_is_one_entry_with_two_metas() -> None:
    presence = Presence(Hub())
    seen: list[dict[str, Any]] = []
    presence.on_diff(lambda topic, diff: seen.append(diff))
    r1 = await presence.track(TOPIC, "alice", "tab1", {})
    r2 = await presence.track(TOPIC, "alice", "tab2", {})
    await presence.track(TOPIC, "bob", "tab3", {})
    assert r1 != r2
    state = presence.state(TOPIC)
    assert sorted(state) == ["alice", "bob"]
    assert [m["phx_ref"] for m in state["alice"]["metas"]] == [r1, r2]
    await presence.untrack(TOPIC, "alice", "tab1")
    assert seen[-1] == {"joins": {}, "leaves": {"alice": {"metas": [{"phx_ref": r1}]}}}
    assert presence.state(TOPIC)["alice"] == {"metas": [{"phx_ref": r2}]}
    await presence.untrack(TOPIC, "alice", "tab2")
    assert "alice" not in presence.state(TOPIC)


async def test_misuse_changes_nothing() -> None:
    presence = Presence(Hub())
    seen: list[dict[str, Any]] = []
    presence.on_diff(lambda topic, diff: seen.append(diff))
    await presence.untrack(TOPIC, "alice", "c1")  # not tracked: nothing
    with pytest.raises(TypeError):
        await presence.track(TOPIC, "alice", "c1", {"at": object()})
    assert seen == [] and presence.state(TOPIC) == {}
    await presence.track(TOPIC, "alice", "c1", {"phx_ref": "forged"})
    assert presence.state(TOPIC)["alice"]["metas"][0]["phx_ref"] != "forged"
    with pytest.raises(ValueError, match="already tracks"):
        await presence.track(TOPIC, "alice", "c1", {})
    with pytest.raises(KeyError):
        await presence.update(TOPIC, "bob", "c1", {})
    assert len(seen) == 1
    with pytest.raises(ValueError, match="must exceed heartbeat"):
        Presence(Hub(), node_ttl=5, heartbeat=5)


async def test_update_is_a_leave_and_a_join_with_phx_ref_prev() -> None:
    presence = Presence(Hub())
    seen: list[dict[str, Any]] = []
    presence.on_diff(lambda topic, diff: seen.append(diff))
    old = await presence.track(TOPIC, "alice", "c1", {"typing": False})
    new = await presence.update(TOPIC, "alice", "c1", {"typing": True})
    new_meta = {"phx_ref": new, "phx_ref_prev": old, "typing": True}
    assert seen[-1] == {
        "joins": {"alice": {"metas": [new_meta]}},
        "leaves": {"alice": {"metas": [{"phx_ref": old, "typing": False}]}},
    }
    assert presence.state(TOPIC) == {"alice": {"metas": [new_meta]}}


async def test_untrack_all_leaves_every_topic_of_a_connection() -> None:
    presence = Presence(Hub())
    seen: list[str] = []
    presence.on_diff(lambda topic, diff: seen.append(topic))
    await presence.track("a", "alice", "c1", {})
    await presence.track("b", "alice", "c1", {})
    await presence.track("b", "bob", "c2", {})
    await presence.untrack_all("c1")
    assert seen[-2:] == ["a", "b"]
    assert presence.state("a") == {} and list(presence.state("b")) == ["bob"]


async def test_a_raising_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    presence = Presence(Hub())
    seen: list[str] = []

    def broken(topic: str, diff: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    presence.on_diff(broken)
    presence.on_diff(lambda topic, diff: seen.append(topic))
    with caplog.at_level(logging.ERROR, "peregrine_rt.channels"):
        await presence.track(TOPIC, "alice", "c1", {})
    assert seen == [TOPIC]
    assert "callback raised" in caplog.text


@pytest.mark.parametrize("seed", range(5))
async def test_state_then_diffs_give_a_phoenix_client_the_state(seed: int) -> None:
    """Random tracks, updates and untracks on two nodes; clients that joined at various times."""
    rng = random.Random(seed)
    async with nodes(2) as (a, b):
        late: list[tuple[Node, PhoenixClient]] = []
        tracked: dict[tuple[int, str, str], None] = {}
        for step in range(60):
            n = rng.randrange(2)
            node = (a, b)[n]
            key, conn = rng.choice(["alice", "bob", "carol"]), f"c{rng.randrange(4)}"
            if (n, key, conn) in tracked and rng.random() < 0.3:
                await node.presence.update(TOPIC, key, conn, {"step": step})
            elif (n, key, conn) in tracked:
                await node.presence.untrack(TOPIC, key, conn)
                del tracked[n, key, conn]
            else:
                await node.presence.track(TOPIC, key, conn, {"step": step})
                tracked[n, key, conn] = None
            if step % 20 == 10:  # a client joins here: state first, diffs after
                client = PhoenixClient()
                client.sync_state(json.loads(json.dumps(node.presence.state(TOPIC))))
                late.append((node, client))
                node.presence.on_diff(client.follow)
        await wait_until(lambda: a.presence.state(TOPIC) == b.presence.state(TOPIC))
        assert sum(len(e["metas"]) for e in a.presence.state(TOPIC).values()) == len(tracked)
        for node in (a, b):
            assert node.client.state == node.presence.state(TOPIC)
        for node, client in late:
            assert client.state == node.presence.state(TOPIC)


# -- several nodes ----------------------------------------------------------------------


async def test_a_key_on_two_nodes_is_one_entry_with_two_metas_everywhere() -> None:
    async with nodes(2) as (a, b):
        ra = await a.presence.track(TOPIC, "alice", "a1", {"on": "a"})
        await wait_until(lambda: refs(b.metas("alice")) == {ra})
        assert b.diffs[-1] == (
            TOPIC,
            {"joins": {"alice": {"metas": [{"phx_ref": ra, "on": "a"}]}}, "leaves": {}},
        )
        rb = await b.presence.track(TOPIC, "alice", "b1", {"on": "b"})
        await wait_until(lambda: refs(a.metas("alice")) == {ra, rb})
        assert a.presence.state(TOPIC) == b.presence.state(TOPIC)
        assert a.presence.nodes() == [b.presence.node_id]
        await a.presence.untrack(TOPIC, "alice", "a1")
        await wait_until(lambda: refs(b.metas("alice")) == {rb})
        assert b.leaves() == [ra]


async def test_a_node_that_starts_late_gets_the_full_state(
    autojump_clock: trio.abc.Clock,
) -> None:
    shared = Hub()
    a, b = Node(shared), Node(shared)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        ra = await a.presence.track(TOPIC, "alice", "a1", {})
        b.link.lose = 1  # its hub is not connected yet
        rb = await b.presence.track(TOPIC, "bob", "b1", {})
        assert a.metas("bob") == []
        await nursery.start(b.run)
        await wait_until(lambda: refs(b.metas("alice")) == {ra} and refs(a.metas("bob")) == {rb})
        assert trio.current_time() < BEAT  # by the announcement, not a heartbeat later
        nursery.cancel_scope.cancel()


async def test_a_dead_node_drops_out_within_node_ttl(autojump_clock: trio.abc.Clock) -> None:
    async with nodes(3) as (a, b, c):
        rb = await b.presence.track(TOPIC, "alice", "b1", {})
        await a.presence.track(TOPIC, "alice", "a1", {})
        await wait_until(lambda: len(a.metas("alice")) == 2 and len(c.metas("alice")) == 2)
        await trio.sleep(10 * TTL)  # alive: heartbeats keep it (the clock jumps)
        assert len(a.metas("alice")) == 2 and a.leaves() == []
        b.link.up = False  # killed: nothing more from it, not even a bye
        b.cancel.cancel()
        killed = trio.current_time()
        await wait_until(
            lambda: len(a.metas("alice")) == 1 and len(c.metas("alice")) == 1, timeout=2 * TTL
        )
        for node in (a, c):
            assert (
                TTL - BEAT <= node.times[-1] - killed <= TTL
            )  # the TTL, counted from the last beat
        assert a.leaves() == [rb] and c.leaves() == [rb]
        assert a.presence.nodes() == [c.presence.node_id]
        assert a.client.state == a.presence.state(TOPIC)


async def test_a_node_that_stops_cleanly_says_bye_and_leaves_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with nodes(2) as (a, b):
        rb = await b.presence.track(TOPIC, "bob", "b1", {})
        await wait_until(lambda: refs(a.metas("bob")) == {rb})
        stopped = trio.current_time()
        b.cancel.cancel()
        await wait_until(lambda: a.metas("bob") == [])
        assert trio.current_time() - stopped < BEAT
        assert a.presence.nodes() == []


async def test_a_lost_message_is_healed_from_the_next_heartbeat(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with nodes(2) as (a, b):
        await wait_until(lambda: a.presence.nodes() and b.presence.nodes())
        b.link.lose = 1
        rb = await b.presence.track(TOPIC, "bob", "b1", {})  # lost on the way
        sent = trio.current_time()
        assert a.metas("bob") == []
        await wait_until(lambda: refs(a.metas("bob")) == {rb})
        assert trio.current_time() - sent <= BEAT + 0.1  # the heartbeat shows the gap
        assert a.client.state == a.presence.state(TOPIC)
        b.link.lose = 1
        await b.presence.untrack(TOPIC, "bob", "b1")  # lost too
        await b.presence.track(TOPIC, "carol", "b2", {})  # arrives: a sees the gap at once
        await wait_until(lambda: a.metas("bob") == [] and len(a.metas("carol")) == 1)
        assert a.leaves() == [rb]
        assert a.client.state == a.presence.state(TOPIC)


async def test_a_partitioned_node_comes_back(autojump_clock: trio.abc.Clock) -> None:
    async with nodes(2) as (a, b):
        rb = await b.presence.track(TOPIC, "bob", "b1", {})
        await wait_until(lambda: refs(a.metas("bob")) == {rb})
        b.link.up = False
        await wait_until(lambda: a.metas("bob") == [] and b.presence.nodes() == [], timeout=2 * TTL)
        rc = await b.presence.track(TOPIC, "carol", "b2", {})  # while cut
        b.link.up = True
        await wait_until(lambda: refs(a.metas("bob")) == {rb} and refs(a.metas("carol")) == {rc})
        await wait_until(lambda: b.presence.nodes() == [a.presence.node_id])
        assert a.client.state == a.presence.state(TOPIC)


async def test_malformed_messages_are_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with nodes(1) as (a,):
        await a.presence.track(TOPIC, "alice", "a1", {})
        with caplog.at_level(logging.WARNING, "peregrine_rt.channels"):
            for junk in [
                "not json",
                "[]",
                '{"node": "x", "seq": "1", "kind": "beat"}',
                '{"node": "x", "seq": 1, "kind": "nope"}',
                '{"node": "x", "seq": 1, "kind": "diff", "topic": "t", "diff": {"joins": 3}}',
                '{"node": "x", "seq": 1, "kind": "state", "topics": {"t": {"k": {}}}}',
            ]:
                await a.link.shared.publish(PRESENCE_HUB_TOPIC, junk)
        assert caplog.text.count("dropped a malformed message") == 6
        assert a.presence.topics() == [TOPIC]


def test_the_view_ignores_a_join_it_has_and_a_leave_it_lacks() -> None:
    view = PresenceState()
    view.meet("n1", 0.0)
    meta = {"phx_ref": "r1"}
    diff = {"joins": {"k": {"metas": [meta]}}, "leaves": {}}
    assert view.apply("n1", TOPIC, diff)
    assert not view.apply("n1", TOPIC, diff)  # twice: nothing more
    assert not view.apply(
        "n1", TOPIC, {"joins": {}, "leaves": {"k": {"metas": [{"phx_ref": "x"}]}}}
    )
    assert view.state(TOPIC) == {"k": {"metas": [meta]}}
    (topic, change), *rest = view.replace("n1", {TOPIC: {"k": {"metas": [{"phx_ref": "r2"}]}}})
    assert rest == [] and topic == TOPIC
    assert change.payload() == {
        "joins": {"k": {"metas": [{"phx_ref": "r2"}]}},
        "leaves": {"k": {"metas": [meta]}},
    }


class LinkWithLinkUps(Link):
    """A Link that, like a RedisHub, calls back when its link to the hub comes up."""

    def __init__(self, shared: Hub) -> None:
        super().__init__(shared)
        self.callbacks: list[Any] = []

    def on_link(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def link_up(self) -> None:
        for callback in self.callbacks:
            callback("run-id")


async def test_a_link_up_announces_the_state_at_once(autojump_clock: trio.abc.Clock) -> None:
    shared = Hub()
    link = LinkWithLinkUps(shared)
    a = Presence(link, node_ttl=TTL, heartbeat=BEAT)
    b = Presence(Link(shared), node_ttl=TTL, heartbeat=BEAT)
    assert len(link.callbacks) == 1  # registered when made
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await wait_until(lambda: a.nodes() and b.nodes())
        await trio.sleep(BEAT / 10)  # just after a heartbeat: the next is far
        link.lose = 1  # Redis restarted empty; what a sent meanwhile is lost
        ref = await a.track(TOPIC, "carol", "a1", {})
        relinked = trio.current_time()
        link.link_up()
        await wait_until(lambda: "carol" in b.state(TOPIC))
        assert trio.current_time() - relinked < BEAT / 2  # not the next heartbeat's doing
        assert b.state(TOPIC)["carol"]["metas"][0]["phx_ref"] == ref
        nursery.cancel_scope.cancel()
