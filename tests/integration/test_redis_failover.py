"""Sentinel fails the primary over under chat traffic: nodes follow, nothing acknowledged is lost.

A real primary, a replica and three sentinels (quorum 2, down-after 500 ms,
failover-timeout 3 s), each a ``redis-server`` on a free loopback port with
a throwaway directory.  Two chat nodes, real processes (``python -m
peregrine_rt examples.chat.app:Chat --redis redis+sentinel://...``,
``chat_nodes.py``, the chat's rate limit lifted); a :mod:`peregrine_rt.client` client on each
(``ChatPeer``: what the browser client does) posts a ``new_msg`` every
:data:`PACE` seconds, each once the previous one was answered.  The primary is
killed with SIGKILL.  Both nodes must resume on the promoted replica without
a restart (the same processes), every message acknowledged to a sender (the
ok reply of its ``new_msg``) must be shown to both clients, an id (offset)
must never be given to two messages, and the failover window is measured:
from the kill to the first acknowledged post sent after it, and how many
posts were refused (``unavailable``) meanwhile.  ``-s`` prints the figures
(bench/RESULTS.md quotes them).

Needs ``redis-server``: skipped without it, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from peregrine_rt.testing import (
    RedisServer,
    sentinel_url,
    start_redis_sentinel,
    start_redis_server,
    wait_until,
)
from tests.integration.chat_nodes import ChatNode, ChatPeer, acknowledged, missing, open_peer

PACE = 0.02
"""Seconds between a post's answer and the next post, per sender (about 50 posts/s each)."""
BEFORE = 20
"""Posts acknowledged to each sender before the kill, and again after the failover."""


@dataclass
class Sentinels:
    primary: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]

    @property
    def url(self) -> str:
        return sentinel_url(self.sentinels)

    def ready(self) -> bool:
        """Every sentinel knows the replica and the two other sentinels."""
        for sentinel in self.sentinels:
            replicas = sentinel.command("SENTINEL", "replicas", "mymaster")
            peers = sentinel.command("SENTINEL", "sentinels", "mymaster")
            if not (isinstance(replicas, list) and len(replicas) == 1):
                return False
            if not (isinstance(peers, list) and len(peers) == 2):
                return False
        return True


@pytest.fixture
def sentinels(redis_server: str, tmp_path: Path) -> Iterator[Sentinels]:
    """A primary, its replica and three sentinels (``redis_server``: skip or fail without it)."""
    started: list[RedisServer] = []
    try:
        primary = start_redis_server(tmp_path / "primary")
        started.append(primary)
        replica = start_redis_server(tmp_path / "replica", replica_of=primary)
        started.append(replica)
        for i in range(3):
            started.append(start_redis_sentinel(tmp_path / f"sentinel{i}", primary))
        yield Sentinels(primary, replica, started[2:])
    finally:
        for server in started:
            server.stop()


async def post(peer: ChatPeer, stop: trio.Event) -> None:
    """Post until ``stop``, each message once the previous one was answered."""
    n = 0
    while not stop.is_set():
        n += 1
        await peer.post(f"{peer.nick}{n}")
        await trio.sleep(PACE)  # the traffic's pace, not a wait for a condition


def reused(peers: list[ChatPeer], history: dict[int, str]) -> dict[int, set[str]]:
    """Ids (offsets) given to more than one text: in the ok replies, live, or in history."""
    texts: dict[int, set[str]] = {}
    for peer in peers:
        for text, mid in peer.acked.items():
            texts.setdefault(mid, set()).add(text)
        for text, (_, offset) in peer.offsets.items():
            if offset is not None:
                texts.setdefault(offset, set()).add(text)
    for mid, text in history.items():
        texts.setdefault(mid, set()).add(text)
    return {mid: found for mid, found in texts.items() if len(found) > 1}


@pytest.fixture
async def nodes(sentinels: Sentinels, tmp_path: Path) -> AsyncIterator[list[ChatNode]]:
    await wait_until(sentinels.ready, timeout=20, message="the sentinels did not find each other")
    started = [ChatNode(tmp_path / f"node{i}.log", sentinels.url) for i in (1, 2)]
    try:
        for node in started:
            await node.start()
        yield started
    finally:
        for node in started:
            node.stop()


async def test_chat_nodes_follow_a_sentinel_failover(
    sentinels: Sentinels, nodes: list[ChatNode]
) -> None:
    one, two = nodes
    pids = [one.pid, two.pid]
    async with (
        open_peer(one.url, "ada") as ada,
        open_peer(two.url, "bob") as bob,
        trio.open_nursery() as nursery,
    ):
        peers = [ada, bob]
        stop = trio.Event()
        for peer in peers:
            nursery.start_soon(post, peer, stop)
        await wait_until(lambda: all(len(p.acked) >= BEFORE for p in peers), timeout=30)

        sentinels.primary.kill()
        killed_at = trio.current_time()
        acked_before = {p.nick: len(p.acked) for p in peers}
        # Traffic goes on: BEFORE more posts acknowledged to each sender, on the replica.
        await wait_until(
            lambda: all(len(p.acked) >= acked_before[p.nick] + BEFORE for p in peers),
            timeout=60,
            message="the nodes did not resume on the promoted replica",
        )
        stop.set()
        await wait_until(lambda: all(p.answered(list(p.sent_at)[-1]) for p in peers))
        assert sentinels.replica.command("ROLE")[0] == "master"  # type: ignore[index]
        # The nodes were never restarted: the same processes, now on the replica.
        assert [one.pid, two.pid] == pids and one.running and two.running

        acked = acknowledged(peers)
        try:
            await wait_until(lambda: not missing(peers, acked), timeout=15)
        except AssertionError:
            pass  # reported below, with the figures
        lost = missing(peers, acked)
        top = max(max(p.acked.values(), default=0) for p in peers)
        answer = await bob.lobby.push("history", {"before": top + 1})
        history = {m["id"]: m["text"] for m in answer["messages"]}
        twice = reused(peers, history)

        first_ok = min(
            (
                p.answered_at[t] - killed_at
                for p in peers
                for t in p.acked
                if p.sent_at[t] > killed_at
            ),
            default=float("nan"),
        )
        refused = sum(1 for p in peers for t in p.refused if p.sent_at[t] > killed_at - PACE)
        print(
            f"\nsentinel failover: first acknowledged post {first_ok:.2f} s after the kill; "
            f"{refused} post(s) refused ('unavailable'), "
            f"{sum(len(v) for v in lost.values())} acknowledged deliveries missing {lost} "
            f"(in history: {sorted(set(history.values()) & set().union(*lost.values()))}), "
            f"{len(twice)} id(s) given to two messages, {len(acked)} acknowledged in all"
        )
        rejoins = {p.nick: [(r.recovered, r.reason) for r in p.rejoins] for p in peers}
        assert not lost, (
            f"acknowledged but never shown: {lost}; rejoins (recovered, reason): {rejoins}"
        )
        assert not twice, f"ids given to two messages: {twice}"
        for peer in peers:
            assert set(peer.acked) & set(peer.refused) == set()
        nursery.cancel_scope.cancel()
