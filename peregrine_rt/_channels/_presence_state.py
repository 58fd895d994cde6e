"""The presence of one node's view: who is on which topic, here and on every other node (sans-IO).

:class:`PresenceState` is the bookkeeping behind
:class:`~peregrine_rt._channels._presence.Presence`, with no trio, no hub and
no clock of its own (times are passed in), so that every rule below is tested
on plain data.

The model (Phoenix Presence's):

* an entry is a **meta**: a JSON object describing one connection's presence
  on one topic under one **key** (a user), with a unique ``phx_ref``;
* a topic's state is ``{key: {"metas": [meta, ...]}}``: the same key tracked
  by two connections (two tabs, or two nodes) is one entry with two metas;
* a change is a diff ``{"joins": {key: {"metas": [...]}}, "leaves": {...}}``
  naming whole metas, matched by ``phx_ref``.

The view merges the **local** metas (tracked by this node's connections,
indexed by ``(topic, key, conn)``) with one :class:`Peer` per other node
(what that node said it tracks).  Each change returns the diff that actually
happened: a join of a ``phx_ref`` already there, or a leave of one that is
not, changes nothing and appears in no diff, so applying a message twice is
harmless and the diffs a client receives reproduce :meth:`PresenceState.state`
exactly (phoenix.js's ``Presence.syncDiff`` appends joins and removes leaves
by ``phx_ref``, the same order this view keeps).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Diff", "Meta", "Peer", "PresenceState", "TopicState"]

Meta = dict[str, Any]
"""One connection's presence: the app's meta plus ``"phx_ref"``."""

TopicState = dict[str, dict[str, list[Meta]]]
"""``presence_state`` payload of one topic: ``{key: {"metas": [meta, ...]}}``."""

_Entries = dict[str, tuple[str, Meta]]  # phx_ref -> (key, meta), in join order


class Diff:
    """What changed on one topic: the metas that joined and left, by key."""

    __slots__ = ("joins", "leaves")

    def __init__(self) -> None:
        self.joins: dict[str, list[Meta]] = {}
        self.leaves: dict[str, list[Meta]] = {}

    def join(self, key: str, meta: Meta) -> None:
        self.joins.setdefault(key, []).append(meta)

    def leave(self, key: str, meta: Meta) -> None:
        self.leaves.setdefault(key, []).append(meta)

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves)

    def payload(self) -> dict[str, TopicState]:
        """The ``presence_diff`` payload: ``{"joins": {key: {"metas": [...]}}, "leaves": ...}``."""
        return {
            "joins": {key: {"metas": metas} for key, metas in self.joins.items()},
            "leaves": {key: {"metas": metas} for key, metas in self.leaves.items()},
        }

    def __repr__(self) -> str:
        return f"<Diff joins={self.joins!r} leaves={self.leaves!r}>"


@dataclass(slots=True)
class Peer:
    """Another node, as this one knows it.

    Attributes:
        seq: the sequence number of the last message of that node applied in
            order, or ``None`` when this view may have missed some (a gap, or
            a node first heard of in the middle): its full state is due.
        seen: when a message of that node last arrived (the caller's clock).
        asked: when its full state was last asked for (the caller's clock).
        topics: its metas, per topic, by ``phx_ref``.
    """

    seq: int | None
    seen: float
    asked: float = -math.inf
    topics: dict[str, _Entries] = field(default_factory=dict)


def _metas_of(payload: object) -> Iterable[tuple[str, Meta]]:
    """``(key, meta)`` pairs of a ``{key: {"metas": [...]}}`` mapping, checked.

    Raises:
        ValueError: not that shape, or a meta without a string ``phx_ref``.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"expected {{key: {{'metas': [...]}}}}, not {type(payload).__name__}")
    for key, entry in payload.items():
        metas = entry.get("metas") if isinstance(entry, Mapping) else None
        if not isinstance(key, str) or not isinstance(metas, list):
            raise ValueError(f"bad presence entry for key {key!r}")
        for meta in metas:
            if not isinstance(meta, dict) or not isinstance(meta.get("phx_ref"), str):
                raise ValueError(f"a meta of key {key!r} has no phx_ref")
            yield key, meta


class PresenceState:
    """One node's merged view of presence: its own metas and every peer's.

    The methods that change it return the :class:`Diff` (or ``(topic, Diff)``
    pairs) that really happened, empty diffs left out.
    """

    def __init__(self) -> None:
        self._view: dict[str, dict[str, dict[str, Meta]]] = {}  # topic -> key -> ref -> meta
        self._local: dict[str, _Entries] = {}
        self._refs: dict[tuple[str, str, str], str] = {}  # (topic, key, conn) -> phx_ref
        self._by_conn: dict[str, dict[tuple[str, str], None]] = {}
        self.peers: dict[str, Peer] = {}

    # -- reading ----------------------------------------------------------------

    def state(self, topic: str) -> TopicState:
        """The ``presence_state`` payload of ``topic`` (``{}`` when nobody is there)."""
        keys = self._view.get(topic, {})
        return {key: {"metas": list(metas.values())} for key, metas in keys.items()}

    def topics(self) -> list[str]:
        """The topics with someone present, here or on a peer."""
        return sorted(self._view)

    def snapshot(self) -> dict[str, TopicState]:
        """This node's own metas, every topic: what it tells a peer that asks."""
        out: dict[str, TopicState] = {}
        for topic, entries in self._local.items():
            state: TopicState = {}
            for key, meta in entries.values():
                state.setdefault(key, {"metas": []})["metas"].append(meta)
            out[topic] = state
        return out

    def ref(self, topic: str, key: str, conn: str) -> str | None:
        """The ``phx_ref`` of what ``conn`` tracks under ``key`` on ``topic``, if it does."""
        return self._refs.get((topic, key, conn))

    def tracked(self, conn: str) -> list[tuple[str, str]]:
        """The ``(topic, key)`` pairs ``conn`` tracks here, in the order tracked."""
        return list(self._by_conn.get(conn, ()))

    # -- the view ---------------------------------------------------------------

    def _add(self, topic: str, key: str, meta: Meta, diff: Diff) -> None:
        self._view.setdefault(topic, {}).setdefault(key, {})[meta["phx_ref"]] = meta
        diff.join(key, meta)

    def _remove(self, topic: str, key: str, ref: str, diff: Diff) -> None:
        keys = self._view[topic]
        metas = keys[key]
        diff.leave(key, metas.pop(ref))
        if not metas:
            del keys[key]
            if not keys:
                del self._view[topic]

    # -- this node's connections ------------------------------------------------

    def track(self, topic: str, key: str, conn: str, meta: Meta) -> Diff:
        """Add ``meta`` (which carries its new ``phx_ref``) for ``conn`` under ``key``.

        Raises:
            ValueError: ``conn`` already tracks ``key`` on ``topic``.
        """
        if (topic, key, conn) in self._refs:
            raise ValueError(f"{conn!r} already tracks {key!r} on {topic!r}")
        ref = meta["phx_ref"]
        self._refs[topic, key, conn] = ref
        self._by_conn.setdefault(conn, {})[topic, key] = None
        self._local.setdefault(topic, {})[ref] = (key, meta)
        diff = Diff()
        self._add(topic, key, meta, diff)
        return diff

    def untrack(self, topic: str, key: str, conn: str) -> Diff:
        """Remove what ``conn`` tracks under ``key`` on ``topic`` (an empty diff if nothing)."""
        diff = Diff()
        ref = self._refs.pop((topic, key, conn), None)
        if ref is None:
            return diff
        pairs = self._by_conn[conn]
        del pairs[topic, key]
        if not pairs:
            del self._by_conn[conn]
        entries = self._local[topic]
        del entries[ref]
        if not entries:
            del self._local[topic]
        self._remove(topic, key, ref, diff)
        return diff

    def update(self, topic: str, key: str, conn: str, meta: Meta) -> Diff:
        """Replace what ``conn`` tracks with ``meta`` (a new ``phx_ref``): one leave, one join.

        Raises:
            KeyError: ``conn`` does not track ``key`` on ``topic``.
        """
        if (topic, key, conn) not in self._refs:
            raise KeyError(f"{conn!r} does not track {key!r} on {topic!r}")
        left = self.untrack(topic, key, conn)
        joined = self.track(topic, key, conn, meta)
        joined.leaves = left.leaves
        return joined

    # -- peers ------------------------------------------------------------------

    def apply(self, node: str, topic: str, diff_payload: object) -> Diff:
        """Apply a peer's ``presence_diff`` payload for ``topic``; the change it made here.

        Raises:
            ValueError: the payload is malformed (nothing applied).
        """
        if not isinstance(diff_payload, Mapping):
            raise ValueError("a diff is an object")
        joins = list(_metas_of(diff_payload.get("joins", {})))
        leaves = list(_metas_of(diff_payload.get("leaves", {})))
        entries = self._peer(node).topics.setdefault(topic, {})
        diff = Diff()
        for key, meta in joins:
            ref = meta["phx_ref"]
            if ref not in entries:
                entries[ref] = (key, meta)
                self._add(topic, key, meta, diff)
        for _, meta in leaves:
            ref = meta["phx_ref"]
            found = entries.pop(ref, None)
            if found is not None:
                self._remove(topic, found[0], ref, diff)
        if not entries:
            del self.peers[node].topics[topic]
        return diff

    def replace(self, node: str, topics: object) -> list[tuple[str, Diff]]:
        """Make ``topics`` (``{topic: presence_state}``) the whole state of peer ``node``.

        Raises:
            ValueError: the payload is malformed (nothing applied).
        """
        if not isinstance(topics, Mapping):
            raise ValueError("a state is an object")
        new: dict[str, _Entries] = {}
        for topic, state in topics.items():
            if not isinstance(topic, str):
                raise ValueError("topics are strings")
            entries = {meta["phx_ref"]: (key, meta) for key, meta in _metas_of(state)}
            if entries:
                new[topic] = entries
        peer = self._peer(node)
        old = peer.topics
        changes: list[tuple[str, Diff]] = []
        for topic in [*old, *(t for t in new if t not in old)]:
            before, after = old.get(topic, {}), new.get(topic, {})
            diff = Diff()
            for ref, (key, meta) in after.items():
                if ref not in before:
                    self._add(topic, key, meta, diff)
            for ref, (key, _) in before.items():
                if ref not in after:
                    self._remove(topic, key, ref, diff)
            if diff:
                changes.append((topic, diff))
        # Keep the metas already shown (same phx_ref) as they were shown.
        peer.topics = {
            topic: {ref: old.get(topic, {}).get(ref, entry) for ref, entry in entries.items()}
            for topic, entries in new.items()
        }
        return changes

    def drop(self, node: str) -> list[tuple[str, Diff]]:
        """Forget peer ``node`` (dead, or gone): every meta it had leaves."""
        peer = self.peers.pop(node, None)
        if peer is None:
            return []
        changes: list[tuple[str, Diff]] = []
        for topic, entries in peer.topics.items():
            diff = Diff()
            for ref, (key, _) in entries.items():
                self._remove(topic, key, ref, diff)
            changes.append((topic, diff))
        return changes

    def _peer(self, node: str) -> Peer:
        peer = self.peers.get(node)
        if peer is None:
            raise KeyError(f"unknown peer {node!r}: call meet() first")
        return peer

    def meet(self, node: str, now: float) -> Peer:
        """The peer ``node``, added (with ``seq=None``: state due) if new; seen ``now``."""
        peer = self.peers.get(node)
        if peer is None:
            peer = self.peers[node] = Peer(seq=None, seen=now)
        peer.seen = now
        return peer

    def expired(self, now: float, ttl: float) -> list[str]:
        """The peers not heard of for ``ttl`` or more, at ``now``."""
        return [node for node, peer in self.peers.items() if now - peer.seen >= ttl]

    def next_expiry(self, ttl: float) -> float:
        """When the first peer expires if nothing is heard of it (``inf`` without peers)."""
        return min((peer.seen + ttl for peer in self.peers.values()), default=math.inf)
