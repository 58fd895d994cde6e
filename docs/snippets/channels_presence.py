"""The examples of docs/channels/presence.rst: Presence on one node, and on two through Redis.

The page shows the parts between the ``# [name]`` markers.  The Redis test
uses the testing plugin's ``redis_url`` fixture (a throwaway redis-server;
skipped without one unless ``CI`` is set).
"""

from __future__ import annotations

from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt._channels._presence import Presence
from peregrine_rt.testing import wait_until


# [one-node]
async def test_one_user_in_two_tabs() -> None:
    presence = Presence(pr.Hub())  # one node: the in-memory hub
    diffs: list[tuple[str, dict[str, Any]]] = []
    presence.on_diff(lambda topic, diff: diffs.append((topic, diff)))

    tab1 = await presence.track("room:lobby", "alice", "conn-1", {"device": "laptop"})
    tab2 = await presence.track("room:lobby", "alice", "conn-2", {"device": "phone"})

    # presence_state: one entry for alice, one meta per connection
    assert presence.state("room:lobby") == {
        "alice": {
            "metas": [
                {"phx_ref": tab1, "device": "laptop"},
                {"phx_ref": tab2, "device": "phone"},
            ]
        }
    }
    # presence_diff: each change, as it happens
    assert diffs[-1] == (
        "room:lobby",
        {"joins": {"alice": {"metas": [{"phx_ref": tab2, "device": "phone"}]}}, "leaves": {}},
    )

    await presence.untrack_all("conn-1")  # the laptop's socket closed
    assert diffs[-1][1]["leaves"] == {"alice": {"metas": [{"phx_ref": tab1, "device": "laptop"}]}}
    assert [m["device"] for m in presence.state("room:lobby")["alice"]["metas"]] == ["phone"]


# [/one-node]


# [nodes]
def same(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Two views hold the same metas per key (their order may differ between nodes)."""

    def refs(state: dict[str, Any]) -> dict[str, list[str]]:
        return {k: sorted(m["phx_ref"] for m in v["metas"]) for k, v in state.items()}

    return refs(one) == refs(other)


async def test_two_nodes_through_redis(redis_url: str) -> None:
    hub_a, hub_b = pr.RedisHub(redis_url), pr.RedisHub(redis_url)
    a = Presence(hub_a, node_ttl=15.0, heartbeat=1.0)
    b = Presence(hub_b, node_ttl=15.0, heartbeat=1.0)
    async with trio.open_nursery() as nursery:
        for hub in (hub_a, hub_b):
            await nursery.start(hub.serve)  # a server runs its hub itself
        await nursery.start(a.run)
        await a.track("room:lobby", "alice", "a-1", {"node": "a"})

        await nursery.start(b.run)  # starts late: gets a's state
        await b.track("room:lobby", "alice", "b-1", {"node": "b"})

        # alice on two nodes: one entry, two metas, the same on both nodes
        # (generous timeouts: a loaded machine may drop a link, which heals by itself)
        await wait_until(lambda: len(a.state("room:lobby")["alice"]["metas"]) == 2, timeout=30)
        await wait_until(lambda: same(a.state("room:lobby"), b.state("room:lobby")), timeout=30)
        nursery.cancel_scope.cancel()


# [/nodes]
