"""Sentinel fails the primary over under chat traffic: nodes follow, nothing acknowledged is lost.

A real primary, a replica and three sentinels (quorum 2, down-after 500 ms,
failover-timeout 3 s), each a ``redis-server`` on a free loopback port with
a throwaway directory.  Two chat nodes (in-process servers, each with its own
RedisHub and store) on the ``redis+sentinel://`` URL; a client on each posts
a message every :data:`PACE` seconds (each once the previous one was
answered).  The primary is killed with SIGKILL.  Both nodes must resume on
the promoted replica without a restart, every message acknowledged to a
sender ("sent", or seen back) must reach both clients, ids must never be
reused, and the failover window is measured: from the kill to the first
acknowledged post sent after it, and how many posts were refused ("not
sent") meanwhile.  ``-s`` prints the figures (bench/RESULTS.md quotes them).

Needs ``redis-server``: skipped without it, unless ``CI`` is set (then it fails).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from examples.chat import app as chat_app
from examples.chat.app import Chat
from peregrine_rt import ConnectionClosed, RedisHub
from peregrine_rt.testing import ClientWebSocket, open_client, wait_until
from peregrine_rt.testing._redis import (
    RedisServer,
    sentinel_url,
    start_redis_sentinel,
    start_redis_server,
)

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


@dataclass
class Peer:
    """A chat client posting steadily, and keeping what it receives by id (as the browser does)."""

    ws: ClientWebSocket
    nick: str
    refs: Iterator[int]
    ids: dict[int, str] = field(default_factory=dict)  # message id -> text
    reused: list[tuple[int, str, str]] = field(default_factory=list)  # id, first text, second
    sent_at: dict[int, float] = field(default_factory=dict)  # ref -> when posted
    acked: dict[int, int] = field(default_factory=dict)  # ref -> id
    acked_at: dict[int, float] = field(default_factory=dict)
    echoed: set[int] = field(default_factory=set)  # ids of own messages seen live
    not_sent: set[int] = field(default_factory=set)

    def keep(self, message: dict[str, Any]) -> None:
        known = self.ids.setdefault(message["id"], message["text"])
        if known != message["text"]:
            self.reused.append((message["id"], known, message["text"]))

    async def read(self) -> None:
        try:
            while True:
                data = await self.ws.receive_json(timeout=None)
                kind = data["type"]
                if kind == "message":
                    self.keep(data)
                    if data["nick"] == self.nick:
                        self.echoed.add(data["id"])
                elif kind == "history":
                    for message in data["messages"]:
                        self.keep(message)
                elif kind == "sent":
                    self.acked[data["ref"]] = data["id"]
                    self.acked_at[data["ref"]] = trio.current_time()
                elif kind == "resync":
                    await self.ws.send_json(
                        {"type": "join", "room": data["room"], "since": data["since"]}
                    )
                elif kind == "error" and data.get("ref") is not None:
                    self.not_sent.add(data["ref"])
        except ConnectionClosed:
            pass

    def answered(self, ref: int) -> bool:
        return ref in self.acked or ref in self.not_sent

    async def post(self, stop: trio.Event) -> None:
        """Post until ``stop``, each message once the previous one was answered."""
        while not stop.is_set():
            ref = next(self.refs)
            self.sent_at[ref] = trio.current_time()
            text = f"{self.nick}{ref}"
            await self.ws.send_json({"type": "say", "room": "lobby", "text": text, "ref": ref})
            await wait_until(partial(self.answered, ref), timeout=10)
            await trio.sleep(PACE)  # the traffic's pace, not a wait for a condition


def on(hubs: list[Any], server: RedisServer) -> bool:
    """Every hub is linked to ``server``."""
    address = f"127.0.0.1:{server.port}"
    return all(isinstance(h, RedisHub) and h.connected and h.address == address for h in hubs)


async def test_chat_nodes_follow_a_sentinel_failover(
    sentinels: Sentinels, monkeypatch: pytest.MonkeyPatch
) -> None:
    await wait_until(sentinels.ready, timeout=20, message="the sentinels did not find each other")
    monkeypatch.setattr(chat_app, "RATE", 1000.0)
    monkeypatch.setattr(chat_app, "BURST", 1000)
    refs = itertools.count(1)
    async with (
        open_client(Chat, redis_url=sentinels.url) as one,
        open_client(Chat, redis_url=sentinels.url) as two,
        one.websocket("/ws") as ada_ws,
        two.websocket("/ws") as bob_ws,
        trio.open_nursery() as nursery,
    ):
        hubs = [one.app.hub, two.app.hub]
        await wait_until(lambda: on(hubs, sentinels.primary), timeout=10)
        ada, bob = Peer(ada_ws, "ada", refs), Peer(bob_ws, "bob", refs)
        peers = (ada, bob)
        stop = trio.Event()
        for peer in peers:
            await peer.ws.send_json({"type": "hello", "nick": peer.nick})
            nursery.start_soon(peer.read)
            nursery.start_soon(peer.post, stop)
        await wait_until(lambda: all(len(p.acked) >= BEFORE for p in peers), timeout=20)

        sentinels.primary.kill()
        killed_at = trio.current_time()
        acked_before = {p.nick: len(p.acked) for p in peers}
        await wait_until(
            lambda: on(hubs, sentinels.replica),
            timeout=30,
            message="the hubs did not move to the promoted replica",
        )
        linked_after = trio.current_time() - killed_at
        # Traffic goes on: BEFORE more posts acknowledged to each sender.
        await wait_until(
            lambda: all(len(p.acked) >= acked_before[p.nick] + BEFORE for p in peers),
            timeout=30,
        )
        stop.set()
        await wait_until(lambda: all(p.answered(max(p.sent_at)) for p in peers), timeout=10)

        # Acknowledged: answered "sent", or (as the sender sees it) echoed back.
        acked = {mid for p in peers for mid in (*p.acked.values(), *p.echoed)}
        for peer in peers:
            await wait_until(
                lambda peer=peer: acked <= peer.ids.keys(),  # type: ignore[misc]
                timeout=15,
                message=f"{peer.nick} is missing acknowledged {sorted(acked - peer.ids.keys())}",
            )
            assert not peer.reused, f"{peer.nick} saw ids reused: {peer.reused}"
            assert set(peer.acked) & peer.not_sent == set()
        # The nodes were never restarted: the same apps and hubs, now on the replica.
        assert [one.app.hub, two.app.hub] == hubs
        assert sentinels.replica.command("ROLE")[0] == "master"  # type: ignore[index]

        first_ok = min(
            at - killed_at
            for p in peers
            for ref, at in p.acked_at.items()
            if p.sent_at[ref] > killed_at
        )
        refused = sum(1 for p in peers for ref in p.not_sent if p.sent_at[ref] > killed_at - PACE)
        lost = len(acked - ada.ids.keys()) + len(acked - bob.ids.keys())
        print(
            f"\nsentinel failover: first acknowledged post {first_ok:.2f} s after the kill; "
            f"hubs on the promoted replica after {linked_after:.2f} s; "
            f"{refused} post(s) refused ('not sent'), {lost} acknowledged lost, "
            f"{len(acked)} acknowledged in all"
        )
        assert lost == 0
        nursery.cancel_scope.cancel()
