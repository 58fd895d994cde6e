"""Presence: who is on each topic, on this node and every other, in Phoenix Presence's format.

The Channels layer calls :meth:`Presence.track` when a connection joins a
topic and :meth:`Presence.untrack` (or :meth:`Presence.untrack_all`) when it
leaves or closes, sends :meth:`Presence.state` to a socket that just joined
(the ``presence_state`` event), and forwards every diff it is given through
:meth:`Presence.on_diff` to *this node's* sockets on that topic (the
``presence_diff`` event; ``hub.publish_local``, never ``hub.publish``: every
node's Presence reports every change, remote ones included).  The formats are
phoenix.js's::

    presence_state  {key: {"metas": [{"phx_ref": "...", ...meta}, ...]}}
    presence_diff   {"joins": {key: {"metas": [...]}}, "leaves": {key: {"metas": [...]}}}

The same key on two connections (two tabs, two nodes) is one entry with two
metas.  The bookkeeping is :class:`~._presence_state.PresenceState`.

Across nodes
------------
Nodes talk over the hub (any :class:`~peregrine_rt.Hub`; with a
:class:`~peregrine_rt.RedisHub` that is Redis pub/sub), on one hub topic
(``"channels.presence"`` by default), in JSON messages that start with the
sending node's random id::

    {"node": N, "seq": S, "kind": "diff", "topic": T, "diff": <presence_diff>}
    {"node": N, "seq": S, "kind": "state", "topics": {T: <presence_state>}}
    {"node": N, "seq": S, "kind": "beat"}
    {"node": N, "seq": S, "kind": "ask", "of": [node, ...] | null}
    {"node": N, "seq": S, "kind": "bye"}

1. Each local change is a ``diff`` with the node's next sequence number
   ``S``, published by :meth:`track`/:meth:`untrack` themselves.  The hub
   keeps one publisher's messages in order, so a peer applies them in order.
2. Every ``heartbeat`` seconds :meth:`run` publishes a ``beat`` carrying the
   last ``S``: it says the node is alive, and lets a peer that missed the
   last diffs see it.
3. A peer that sees a gap in ``S`` (a lost message: Redis was away, or the
   publish failed), or hears of a node for the first time, asks it (``ask``,
   at most once per ``heartbeat``); the node answers with its whole ``state``
   (carrying its current ``S``), which replaces what the peer had of it.  The
   peer reports only the difference as a diff.
4. :meth:`run` starts by publishing its state and asking everyone's, and does
   so again each time a RedisHub's link comes up (``RedisHub.on_link``): a
   node that starts late gets the full state, and a Redis that restarted
   empty is healed by every node announcing its own again.  Nothing is kept
   in Redis: the nodes are the truth about their own connections.
5. **Liveness:** a peer not heard of for ``node_ttl`` seconds is dropped and
   all its metas leave (one diff per topic).  A node killed with ``kill -9``
   sends nothing more, so every other node drops it at most ``node_ttl``
   after its last message, itself at most ``heartbeat`` before the death:
   within ``node_ttl`` of the death (plus Redis's delivery time).  A node that
   stops cleanly (:meth:`run` cancelled) says ``bye`` and is dropped at once.

A node whose own link to Redis is down hears nobody, so after ``node_ttl`` it
shows only its own connections; they come back when the link does.

Resource handling:
    :meth:`run` subscribes to the hub topic and runs the heartbeat and the
    expiry of dead peers until cancelled.  Without it (a single node on the
    in-memory hub) tracking still works; no other node is heard of.

Error handling:
    A publish the hub cannot make (``HubUnavailable``) is not raised:
    the local state is right, and peers catch up by rule 3.  A malformed
    message from the hub is logged and dropped; a diff callback that raises is
    logged (``peregrine_rt.channels`` logger) and the others still run.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

import trio

from .._hub import Hub
from ..exceptions import HubUnavailable
from ._presence_state import Diff, Meta, PresenceState, TopicState

__all__ = ["DEFAULT_HEARTBEAT", "DEFAULT_NODE_TTL", "PRESENCE_HUB_TOPIC", "Presence"]

log = logging.getLogger("peregrine_rt.channels")

PRESENCE_HUB_TOPIC: Final = "channels.presence"
"""The hub topic the nodes' Presence messages travel on (apart from ``channels:<topic>``)."""
DEFAULT_NODE_TTL: Final = 15.0
DEFAULT_HEARTBEAT: Final = 5.0
BYE_TIMEOUT: Final = 1.0
"""Seconds a stopping node tries to say ``bye`` before giving up (peers then use the TTL)."""

DiffCallback = Callable[[str, dict[str, TopicState]], None]


class _Listener:
    """The hub subscriber of one Presence (the hub's Subscriber protocol)."""

    __slots__ = ("_presence",)

    def __init__(self, presence: Presence) -> None:
        self._presence = presence

    def deliver(self, message: str | bytes) -> bool:
        self._presence._receive_message(message)
        return True


class Presence:
    """Who is on each topic, on every node, in Phoenix Presence's format.

    ``track``/``update``/``untrack``/``untrack_all`` change this node's
    connections; ``state(topic)`` is the ``presence_state`` payload;
    ``on_diff`` callbacks get every ``presence_diff``, local or remote.
    :meth:`run` links the nodes through the hub: numbered diffs, a heartbeat
    every ``heartbeat`` seconds, full states on demand, and dead nodes dropped
    after ``node_ttl`` (see the "Presence" page of the docs).

    Args:
        hub: the hub the nodes share (the server's: ``server.hub``).  The
            in-memory hub makes a single node; a RedisHub, many.
        node_ttl: seconds after which a node not heard of is dead and its
            metas leave; must exceed ``heartbeat`` (twice it at least is wise).
        heartbeat: seconds between two of this node's heartbeats.
        hub_topic: the hub topic of the Presence messages; nodes that share
            presence share it.

    Attributes:
        node_id: this node's random id (new for every Presence).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        node_ttl: float = DEFAULT_NODE_TTL,
        heartbeat: float = DEFAULT_HEARTBEAT,
        hub_topic: str = PRESENCE_HUB_TOPIC,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be positive, not {heartbeat!r}")
        if not node_ttl > heartbeat:
            raise ValueError(f"node_ttl ({node_ttl!r}) must exceed heartbeat ({heartbeat!r})")
        self.hub = hub
        self.node_ttl = node_ttl
        self.heartbeat = heartbeat
        self.hub_topic = hub_topic
        self.node_id = secrets.token_hex(8)
        self._own = f'{{"node":"{self.node_id}"'  # how this node's messages start
        self._view = PresenceState()
        self._callbacks: list[DiffCallback] = []
        self._seq = 0
        # What run()'s task owes the hub, set by receive() (which must not block).
        self._announce = True  # publish our state and ask everyone's
        self._answer = False  # publish our state (someone asked)
        self._asks: dict[str, None] = {}  # peers whose state we want
        self._wake = trio.Event()
        self._met = trio.Event()  # a first peer arrived (the reaper waits for one)
        on_link = getattr(hub, "on_link", None)  # RedisHub's: a link-up may follow lost messages
        if callable(on_link):
            on_link(self._relinked)

    # -- the interface of the Channels layer ---------------------------------------

    def state(self, topic: str) -> TopicState:
        """The ``presence_state`` payload of ``topic``: everyone there, on every node.

        ``{key: {"metas": [meta, ...]}}``, each meta the app's with a unique
        ``"phx_ref"``; ``{}`` when the topic is empty.  Read-only: the metas
        are shared with the view (encode them, do not change them).
        """
        return self._view.state(topic)

    def topics(self) -> list[str]:
        """The topics with someone present, on any node."""
        return self._view.topics()

    def nodes(self) -> list[str]:
        """The ids of the other nodes this one hears of (alive within ``node_ttl``)."""
        return sorted(self._view.peers)

    def on_diff(self, callback: DiffCallback) -> None:
        """Call ``callback(topic, presence_diff_payload)`` for every change, local or remote.

        Called synchronously, as the change happens, once per topic changed;
        never with an empty diff.  Send the payload to this node's sockets
        on ``topic`` only (the other nodes report it to theirs).
        """
        self._callbacks.append(callback)

    async def track(
        self, topic: str, key: str, conn: str, meta: Mapping[str, Any] | None = None
    ) -> str:
        """``conn`` (a connection's id) is present on ``topic`` as ``key``, with ``meta``.

        The diff (a join) is reported at once, here, and published to the
        other nodes.  ``meta`` must be JSON-able; its ``phx_ref`` is set here.

        Returns:
            The meta's ``phx_ref``.

        Raises:
            ValueError: ``conn`` already tracks ``key`` on ``topic`` (use
                :meth:`update`).
            TypeError: ``meta`` is not JSON-able.
        """
        for name, value in (("topic", topic), ("key", key), ("conn", conn)):
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        if self._view.ref(topic, key, conn) is not None:
            raise ValueError(f"{conn!r} already tracks {key!r} on {topic!r}")
        full = self._meta(meta)
        joined = Diff()
        joined.join(key, full)
        message = self._diff_message(topic, joined)  # TypeError before anything changes
        self._report(topic, self._view.track(topic, key, conn, full))
        await self._send(message)  # no await since the number was taken: sent in order
        return str(full["phx_ref"])

    async def update(self, topic: str, key: str, conn: str, meta: Mapping[str, Any]) -> str:
        """Replace the meta of what ``conn`` tracks (Phoenix's update): a leave and a join.

        The new meta gets a new ``phx_ref`` and, as in Phoenix,
        ``"phx_ref_prev"``: the one it replaces.

        Raises:
            KeyError: ``conn`` does not track ``key`` on ``topic``.
            TypeError: ``meta`` is not JSON-able.
        """
        previous = self._view.ref(topic, key, conn)
        if previous is None:
            raise KeyError(f"{conn!r} does not track {key!r} on {topic!r}")
        full = self._meta(meta, previous)
        json.dumps(full)  # TypeError before anything changes
        diff = self._view.update(topic, key, conn, full)
        message = self._diff_message(topic, diff)
        self._report(topic, diff)
        await self._send(message)
        return str(full["phx_ref"])

    async def untrack(self, topic: str, key: str, conn: str) -> None:
        """``conn`` is no longer present on ``topic`` as ``key`` (nothing if it was not)."""
        diff = self._view.untrack(topic, key, conn)
        if diff:
            message = self._diff_message(topic, diff)
            self._report(topic, diff)
            await self._send(message)

    async def untrack_all(self, conn: str) -> None:
        """Untrack everything ``conn`` tracks, on every topic (when its socket closes)."""
        for topic, key in self._view.tracked(conn):
            await self.untrack(topic, key, conn)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Talk to the other nodes until cancelled: heartbeat, answer, expire dead nodes.

        Reports started once subscribed to the hub topic (its first messages
        may still be on their way).  On cancellation it says ``bye`` (within
        ``BYE_TIMEOUT``) and unsubscribes.
        """
        listener = _Listener(self)
        self.hub.subscribe(listener, self.hub_topic)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._expire_dead_nodes)
                self._announce = True
                task_status.started()
                await self._talk()
        finally:
            self.hub.unsubscribe(listener, self.hub_topic)
            with trio.CancelScope(shield=True), trio.move_on_after(BYE_TIMEOUT):
                await self._send(self._message("bye"))

    # -- this node's side ----------------------------------------------------------

    def _meta(self, meta: Mapping[str, Any] | None, previous: str | None = None) -> Meta:
        full: Meta = {"phx_ref": secrets.token_urlsafe(12)}
        if previous is not None:
            full["phx_ref_prev"] = previous
        for name, value in (meta or {}).items():
            if name not in full and name not in ("phx_ref", "phx_ref_prev"):
                full[name] = value
        return full

    def _message(self, kind: str, **fields: Any) -> str:
        body = json.dumps({"seq": self._seq, "kind": kind, **fields}, separators=(",", ":"))
        return f"{self._own},{body[1:]}"

    def _diff_message(self, topic: str, diff: Diff) -> str:
        """A local change, numbered; TypeError (and no number taken) if it is not JSON."""
        self._seq += 1
        try:
            return self._message("diff", topic=topic, diff=diff.payload())
        except TypeError:
            self._seq -= 1
            raise

    async def _send(self, message: str) -> None:
        try:
            await self.hub.publish(self.hub_topic, message)
        except HubUnavailable:
            pass  # the hub logged it; peers see the gap in seq and ask (rule 3)

    def _report(self, topic: str, diff: Diff) -> None:
        if not diff:
            return
        payload = diff.payload()
        for callback in list(self._callbacks):
            try:
                callback(topic, payload)
            except Exception:
                log.exception("a presence diff callback raised (topic %r)", topic)

    def _relinked(self, run_id: str) -> None:
        del run_id  # any link-up may follow lost messages, whatever the server
        self._announce = True
        self._wake.set()

    async def _talk(self) -> None:
        """Publish what is owed (announce, answers, asks) and a heartbeat every ``heartbeat``."""
        next_beat = trio.current_time()
        while True:
            with trio.move_on_at(next_beat):
                await self._wake.wait()
            self._wake = trio.Event()
            sent = False
            if self._announce or self._answer:
                ask_all, self._announce, self._answer = self._announce, False, False
                await self._send(self._message("state", topics=self._view.snapshot()))
                if ask_all:
                    self._asks.clear()
                    await self._send(self._message("ask", of=None))
                sent = True
            if self._asks:
                of, self._asks = list(self._asks), {}
                await self._send(self._message("ask", of=of))
            if not sent and trio.current_time() >= next_beat:
                await self._send(self._message("beat"))
                sent = True
            if sent:
                next_beat = trio.current_time() + self.heartbeat

    async def _expire_dead_nodes(self) -> None:
        while True:
            if not self._view.peers:
                self._met = trio.Event()
                await self._met.wait()
            await trio.sleep_until(self._view.next_expiry(self.node_ttl))
            for node in self._view.expired(trio.current_time(), self.node_ttl):
                log.warning(
                    "presence: node %s not heard of for %g s, its connections leave",
                    node,
                    self.node_ttl,
                )
                self._drop(node)

    def _drop(self, node: str) -> None:
        self._asks.pop(node, None)
        for topic, diff in self._view.drop(node):
            self._report(topic, diff)

    # -- the other nodes' side -----------------------------------------------------

    def _receive_message(self, message: str | bytes) -> None:
        """Take one message from the hub topic (what the listener is given)."""
        if isinstance(message, bytes) or message.startswith(self._own):
            return  # ours (the hub delivers to its own node too), or not ours to read
        try:
            data = json.loads(message)
            node, seq, kind = data["node"], data["seq"], data["kind"]
            if not (isinstance(node, str) and isinstance(seq, int) and isinstance(kind, str)):
                raise ValueError("node, seq and kind are a str, an int and a str")
            self._receive(data, node, seq, kind)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("presence: dropped a malformed message (%s): %.200r", exc, message)

    def _receive(self, data: dict[str, Any], node: str, seq: int, kind: str) -> None:
        if kind == "bye":
            self._drop(node)
            return
        now = trio.current_time()
        if not self._view.peers:
            self._met.set()
        peer = self._view.meet(node, now)
        if kind == "diff":
            topic = data["topic"]
            if not isinstance(topic, str):
                raise ValueError("a diff's topic is a str")
            in_order = peer.seq is not None and seq == peer.seq + 1
            peer.seq = seq if in_order else None
            self._report(topic, self._view.apply(node, topic, data["diff"]))
        elif kind == "state":
            changes = self._view.replace(node, data["topics"])
            peer.seq = seq
            for topic, diff in changes:
                self._report(topic, diff)
        elif kind == "beat":
            if peer.seq != seq:
                peer.seq = None
        elif kind == "ask":
            of = data["of"]
            if of is None or (isinstance(of, list) and self.node_id in of):
                self._answer = True
                self._wake.set()
        else:
            raise ValueError(f"unknown kind {kind!r}")
        if peer.seq is None and now - peer.asked >= self.heartbeat:
            peer.asked = now
            self._asks[node] = None
            self._wake.set()

    def __repr__(self) -> str:
        return (
            f"<Presence node={self.node_id} {len(self._view.topics())} topics, "
            f"{len(self._view.peers)} other nodes>"
        )
