"""Presence across real nodes through a real redis-server (issue 14, item 4).

* A node process (``tests/channels/presence_node.py``: a RedisHub and a
  Presence) starts after this test's node tracked someone, and gets the full
  state; both show the same key on two nodes as one entry with two metas.
  Then it is killed with SIGKILL, and this node drops its metas, with the
  leave diff, within ``node_ttl`` of the kill (asserted: at most ``node_ttl
  + heartbeat``, and not before ``node_ttl - heartbeat``: the TTL did it).
* Redis stops and comes back empty while the nodes run; a change made during
  the outage (its publish lost) reaches the other node once the links are up
  again, because each node announces its state at every link-up.

The TTLs here are real time, so the waits are ``wait_until`` with timeouts,
never sleeps.  The redis-server is the testing plugin's (or, to restart it,
the test's own): without redis-server these tests are skipped, unless ``CI``
is set, where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from peregrine_rt._channels._presence import Presence
from peregrine_rt._redis_hub import RedisHub
from peregrine_rt.testing import wait_until
from peregrine_rt.testing._redis import start_redis_server

REPO = Path(__file__).resolve().parents[2]
TOPIC = "room:lobby"
TTL = 2.0
BEAT = 0.5
TIMEOUT = 30  # per test: generous, every wait inside is bounded too


class NodeProcess:
    """``python -m tests.channels.presence_node ...``, its stdout (JSON lines) in a file."""

    def __init__(self, redis_url: str, log: Path, key: str, conn: str) -> None:
        self.log_path = log
        args = (conn, str(TTL), str(BEAT))
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.channels.presence_node",
                    redis_url,
                    TOPIC,
                    key,
                    *args,
                ],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.splitlines() if line.startswith("{")]

    def state(self) -> dict[str, Any]:
        """The presence state it printed last."""
        events = self.events()
        return events[-1]["state"] if events else {}

    async def ready(self) -> str:
        """Its node id, once it tracked its connection."""
        await wait_until(
            lambda: any("ready" in e for e in self.events()) or self.proc.poll() is not None,
            timeout=15,
        )
        assert self.proc.poll() is None, f"exited with {self.proc.returncode}: {self.log}"
        return str(next(e["ready"] for e in self.events() if "ready" in e))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@asynccontextmanager
async def node(url: str) -> AsyncIterator[tuple[Presence, list[dict[str, Any]]]]:
    """A RedisHub and a Presence in this process; the diffs of TOPIC it reports."""
    hub = RedisHub(url)
    presence = Presence(hub, node_ttl=TTL, heartbeat=BEAT)
    diffs: list[dict[str, Any]] = []
    presence.on_diff(lambda topic, diff: diffs.append(diff) if topic == TOPIC else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve)
        assert hub.connected
        await nursery.start(presence.run)
        yield presence, diffs
        nursery.cancel_scope.cancel()


def conns(state: dict[str, Any], key: str) -> dict[str, str]:
    """conn -> phx_ref of ``key``'s metas in a presence state."""
    return {m["conn"]: m["phx_ref"] for m in state.get(key, {"metas": []})["metas"]}


async def test_a_killed_node_drops_out_of_presence_within_node_ttl(
    redis_url: str, tmp_path: Path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(redis_url) as (presence, diffs):
            await presence.track(TOPIC, "alice", "a1", {"conn": "a1"})
            child = NodeProcess(redis_url, tmp_path / "b.log", "alice", "b1")  # starts late
            try:
                child_id = await child.ready()
                # One key on two nodes: one entry, two metas, on both nodes.
                await wait_until(lambda: set(conns(presence.state(TOPIC), "alice")) == {"a1", "b1"})
                await wait_until(
                    lambda: conns(child.state(), "alice") == conns(presence.state(TOPIC), "alice")
                )
                assert list(presence.state(TOPIC)) == ["alice"]
                assert presence.nodes() == [child_id]
                b1 = conns(presence.state(TOPIC), "alice")["b1"]

                os.kill(child.proc.pid, signal.SIGKILL)
                killed = trio.current_time()
                await wait_until(
                    lambda: set(conns(presence.state(TOPIC), "alice")) == {"a1"},
                    timeout=TTL + BEAT + 5,
                )
                elapsed = trio.current_time() - killed
                assert TTL - BEAT - 0.05 <= elapsed <= TTL + BEAT, elapsed
                assert child.proc.wait() == -signal.SIGKILL
            finally:
                child.stop()
            assert diffs[-1] == {
                "joins": {},
                "leaves": {"alice": {"metas": [{"phx_ref": b1, "conn": "b1"}]}},
            }
            assert presence.nodes() == []


async def test_a_redis_that_restarts_empty_is_healed_by_the_nodes(
    redis_server: str, tmp_path: Path
) -> None:
    redis = start_redis_server(tmp_path / "redis")
    try:
        with trio.fail_after(TIMEOUT):
            async with node(redis.url) as (a, _), node(redis.url) as (b, b_diffs):
                await a.track(TOPIC, "alice", "a1", {"conn": "a1"})
                await b.track(TOPIC, "bob", "b1", {"conn": "b1"})
                await wait_until(
                    lambda: a.state(TOPIC) == b.state(TOPIC) and len(a.state(TOPIC)) == 2
                )

                await trio.to_thread.run_sync(redis.stop)
                await a.track(TOPIC, "carol", "a2", {"conn": "a2"})  # its publish is lost
                redis = await trio.to_thread.run_sync(
                    lambda: start_redis_server(redis.directory, port=redis.port)
                )
                assert redis.command("DBSIZE") == 0  # empty: nothing kept there
                await wait_until(lambda: "a2" in conns(b.state(TOPIC), "carol"), timeout=15)
                await wait_until(lambda: a.state(TOPIC) == b.state(TOPIC))
                assert sorted(a.state(TOPIC)) == ["alice", "bob", "carol"]
                assert any("carol" in d["joins"] for d in b_diffs)
    finally:
        redis.stop()
