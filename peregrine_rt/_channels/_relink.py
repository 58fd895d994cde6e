"""Catching up after the hub's link to Redis came back: :class:`Relink`.

Redis pub/sub keeps nothing: what other nodes published while this node's
link was down never reaches it.  A :class:`~peregrine_rt.RedisHub` calls
:meth:`Relink.relinked` at every link-up, before it delivers anything
received on the new link.  Each fan of a topic with history then pauses
(what arrives is kept), and :meth:`Relink.run` reads what the topic got
after the fan's last offset, in the fan's epoch: recovered, the fan
delivers the missed publications, then what it kept, each offset once, so
its members see every publication in order without asking.  A backend that
repairs a Redis which lost data (``RedisHistory.relinked``/``settled``) is
told of the link-up and waited for first.  Not recovered
(Redis came back empty: a new epoch; or pruned past it; or Redis failing
again), the members are told to rejoin (``phx_error``): they recover
themselves with ``since``, or learn ``recovered: false`` and refetch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._phoenix import encode, publication_frame

if TYPE_CHECKING:
    from ._fan import Fan
    from ._history import History

__all__ = ["Relink"]

log = logging.getLogger("peregrine_rt.channels")


class Relink:
    """Catches this node's fans up after each link-up of the hub.

    Args:
        fans: the node's fans by topic (the Channels app's, shared, live).
        history_for: the history backend of a topic (None: no history).
        fail: ``await fail(fan)`` ends every member's join with ``phx_error``.
    """

    def __init__(
        self,
        fans: dict[str, Fan],
        history_for: Callable[[str], History | None],
        fail: Callable[[Fan], Awaitable[None]],
    ) -> None:
        self.fans = fans
        self.history_for = history_for
        self.fail = fail
        self.pending = trio.Event()

    def relinked(self, run_id: str) -> None:
        """The hub's link is up again: pause the fans with history (``RedisHub.on_link``)."""
        backends: dict[int, History] = {}
        for topic, fan in self.fans.items():
            backend = self.history_for(topic)
            if backend is not None:
                fan.pause()
                backends[id(backend)] = backend
        for backend in backends.values():  # each told once (RedisHistory: puts data back)
            notify = getattr(backend, "relinked", None)
            if callable(notify):
                notify(run_id)
        self.pending.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Catch up the paused fans after each link-up, for the server's life."""
        task_status.started()
        while True:
            await self.pending.wait()
            self.pending = trio.Event()
            for topic, fan in list(self.fans.items()):
                if fan.paused is not None:
                    await self.catch_up(topic, fan)

    async def catch_up(self, topic: str, fan: Fan) -> None:
        backend = self.history_for(topic)
        missed: list[str] | None = None
        if backend is not None and fan.last is not None and fan.epoch is not None:
            try:
                settled = getattr(backend, "settled", None)  # what it puts back, first
                if callable(settled):
                    await settled()
                recovery = await backend.recover(topic, fan.last, fan.epoch)
            except Exception as exc:  # Redis failing again: the members recover themselves
                log.warning("catching up %s after the link came back failed: %s", topic, exc)
            else:
                if recovery.recovered:
                    missed = [
                        encode(publication_frame(topic, p.offset, p.event, p.payload))
                        for p in recovery.publications
                    ]
                else:
                    log.info("%s: %s after the link came back", topic, recovery.reason)
        if self.fans.get(topic) is not fan:
            return  # every member left meanwhile
        if missed is None:
            fan.paused = None
            await self.fail(fan)
        else:
            fan.resume(missed)
