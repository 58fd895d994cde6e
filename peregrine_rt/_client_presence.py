"""The client's presence helper: phoenix.js ``Presence.syncState``/``syncDiff`` in Python.

The server sends a topic's whole presence once, as ``presence_state``
(``{key: {"metas": [{"phx_ref": "...", ...}, ...]}}``), then changes as
``presence_diff`` (``{"joins": {...}, "leaves": {...}}``, the same shape).  A
key (a user) has one meta per connection (tab, device, node); a meta is known
by its ``phx_ref``.  :func:`sync_state` and :func:`sync_diff` are the pure
functions phoenix.js has, with the same results, so a Python client and a
browser show the same list.

:class:`Presence` keeps the state of one channel.  Like phoenix.js, it holds
back the diffs that arrive before the state of the current join (a rejoin
starts a new state) and applies them once that state is in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Presence", "PresenceEntry", "PresenceState", "sync_diff", "sync_state"]

PresenceState = dict[str, dict[str, Any]]
"""``{key: {"metas": [meta, ...]}}``: a topic's presence, as the server sends it."""

JoinCallback = Callable[[str, dict[str, Any] | None, dict[str, Any]], None]
"""``on_join(key, current_presence_or_None, joined_presence)``."""
LeaveCallback = Callable[[str, dict[str, Any], dict[str, Any]], None]
"""``on_leave(key, remaining_presence, left_presence)``."""


class PresenceEntry(NamedTuple):
    """One key of a presence list: ``key`` and its ``metas`` (one per connection)."""

    key: str
    metas: list[dict[str, Any]]


def _refs(presence: dict[str, Any]) -> list[Any]:
    return [meta.get("phx_ref") for meta in presence.get("metas", [])]


def sync_state(
    state: PresenceState,
    new_state: PresenceState,
    on_join: JoinCallback | None = None,
    on_leave: LeaveCallback | None = None,
) -> PresenceState:
    """The state after a ``presence_state``: ``state`` replaced by ``new_state``.

    ``on_join``/``on_leave`` are called for what differs, as after a diff.
    ``state`` itself is left unchanged.

    >>> sync_state({}, {"ann": {"metas": [{"phx_ref": "1"}]}})
    {'ann': {'metas': [{'phx_ref': '1'}]}}
    """
    state = copy.deepcopy(state)
    joins: PresenceState = {}
    leaves = {key: copy.deepcopy(p) for key, p in state.items() if key not in new_state}
    for key, new_presence in new_state.items():
        current = state.get(key)
        if current is None:
            joins[key] = new_presence
            continue
        new_refs, current_refs = _refs(new_presence), _refs(current)
        joined = [m for m in new_presence.get("metas", []) if m.get("phx_ref") not in current_refs]
        left = [m for m in current.get("metas", []) if m.get("phx_ref") not in new_refs]
        if joined:
            joins[key] = {**copy.deepcopy(new_presence), "metas": joined}
        if left:
            leaves[key] = {**copy.deepcopy(current), "metas": left}
    return _apply(state, joins, leaves, on_join, on_leave)


def sync_diff(
    state: PresenceState,
    diff: dict[str, PresenceState],
    on_join: JoinCallback | None = None,
    on_leave: LeaveCallback | None = None,
) -> PresenceState:
    """The state after a ``presence_diff`` (``{"joins": ..., "leaves": ...}``).

    A joining meta is added to its key (earlier metas first); a leaving one
    is removed by its ``phx_ref``; a key with no meta left is removed.
    ``state`` itself is left unchanged.

    >>> state = {"ann": {"metas": [{"phx_ref": "1"}]}}
    >>> sync_diff(state, {"joins": {"ann": {"metas": [{"phx_ref": "2"}]}}, "leaves": {}})
    {'ann': {'metas': [{'phx_ref': '1'}, {'phx_ref': '2'}]}}
    >>> sync_diff(state, {"joins": {}, "leaves": {"ann": {"metas": [{"phx_ref": "1"}]}}})
    {}
    """
    return _apply(
        copy.deepcopy(state), diff.get("joins") or {}, diff.get("leaves") or {}, on_join, on_leave
    )


def _apply(
    state: PresenceState,
    joins: PresenceState,
    leaves: PresenceState,
    on_join: JoinCallback | None,
    on_leave: LeaveCallback | None,
) -> PresenceState:
    for key, new_presence in joins.items():
        current = state.get(key)
        state[key] = copy.deepcopy(new_presence)
        if current is not None:
            joined_refs = _refs(state[key])
            kept = [m for m in current.get("metas", []) if m.get("phx_ref") not in joined_refs]
            state[key]["metas"] = kept + state[key].get("metas", [])
        if on_join is not None:
            on_join(key, current, new_presence)
    for key, left_presence in leaves.items():
        current = state.get(key)
        if current is None:
            continue
        gone = _refs(left_presence)
        current["metas"] = [m for m in current.get("metas", []) if m.get("phx_ref") not in gone]
        if on_leave is not None:
            on_leave(key, current, left_presence)
        if not current["metas"]:
            del state[key]
    return state


class Presence:
    """The presence of one channel, kept in sync from its ``presence_*`` messages.

    ``channel.presence`` is one; the channel feeds it.  Read it with
    :meth:`list` or :attr:`state`; register callbacks with :meth:`on_join`,
    :meth:`on_leave` and :meth:`on_sync` (plain functions, called as the
    messages are read, as phoenix.js calls them).
    """

    def __init__(self) -> None:
        self.state: PresenceState = {}
        """``{key: {"metas": [...]}}``, as synced so far."""
        self._join_ref: str | None = None  # the join whose presence_state we have
        self._pending: list[dict[str, PresenceState]] = []
        self._on_join: list[JoinCallback] = []
        self._on_leave: list[LeaveCallback] = []
        self._on_sync: list[Callable[[], None]] = []

    def list(self) -> list[PresenceEntry]:
        """Every key present, with its metas, in the order the keys arrived."""
        return [PresenceEntry(key, list(p.get("metas", []))) for key, p in self.state.items()]

    def on_join(self, callback: JoinCallback) -> None:
        """Call ``callback(key, current, joined)`` when a key gains a meta."""
        self._on_join.append(callback)

    def on_leave(self, callback: LeaveCallback) -> None:
        """Call ``callback(key, remaining, left)`` when a key loses a meta."""
        self._on_leave.append(callback)

    def on_sync(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each state or diff is applied."""
        self._on_sync.append(callback)

    def handle(self, event: str, payload: Any, join_ref: str | None) -> None:
        """Apply a ``presence_state`` or ``presence_diff``; ``join_ref``: the channel's join now.

        A diff that comes while the state held is not that join's is kept
        until the join's ``presence_state`` arrives (phoenix.js does the same).
        """
        if not isinstance(payload, dict):
            return
        if event == "presence_state":
            self._join_ref = join_ref
            self.state = sync_state(self.state, payload, self._joined, self._left)
            pending, self._pending = self._pending, []
            for diff in pending:
                self.state = sync_diff(self.state, diff, self._joined, self._left)
            self._synced()
        elif event == "presence_diff":
            if self._join_ref != join_ref:
                self._pending.append(payload)  # before the state of this join: held back
            else:
                self.state = sync_diff(self.state, payload, self._joined, self._left)
                self._synced()

    def reset(self) -> None:
        """Forget the join whose state is held (the channel rejoins or closes)."""
        self._join_ref = None
        self._pending = []

    def _joined(self, key: str, current: dict[str, Any] | None, joined: dict[str, Any]) -> None:
        for callback in self._on_join:
            callback(key, current, joined)

    def _left(self, key: str, remaining: dict[str, Any], left: dict[str, Any]) -> None:
        for callback in self._on_leave:
            callback(key, remaining, left)

    def _synced(self) -> None:
        for callback in self._on_sync:
            callback()
