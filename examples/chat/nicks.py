"""Who holds which nick: one person (a session's ``sid``) at a time, on every node.

Held while the person's sockets use it and ``hold`` seconds more (a reconnect
keeps it).  With Redis: a key per nick, refreshed by each node for its nicks.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio
from coredis.exceptions import RedisError

import peregrine_rt as pr

log = logging.getLogger("examples.chat")

# KEYS: nick keys; ARGV: TTL (ms), each sid.  Claims or refreshes; how many are another's.
_HOLD = """local lost = 0
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and held ~= ARGV[i + 1] then lost = lost + 1
  else redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1]) end
end
return lost"""
_LAPSE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end"


class Nicks:
    """The claims: in this process (``hub`` None) or in the hub's Redis."""

    def __init__(self, hold: float, hub: pr.RedisHub | None = None, beat: float = 5.0) -> None:
        self.hold, self.hub, self.beat = hold, hub, beat
        self.prefix = f"{hub.prefix}chat:nick:" if hub else ""  # + nick: its key
        self.here: dict[str, list[Any]] = {}  # nick: [sid, sockets here using it]
        self.held: dict[str, tuple[str, float]] = {}  # no Redis: nick: (sid, lapses at)

    async def claim(self, nick: str, sid: str) -> bool:
        """Take ``nick`` for one more socket of ``sid``; False if another person holds it."""
        here = self.here.get(nick)
        if here is None:
            if await self._hold([(nick, sid)]):
                return False
            here = self.here.setdefault(nick, [sid, 0])
        here[1] += here[0] == sid
        return bool(here[0] == sid)

    async def release(self, nick: str, sid: str) -> None:
        """One socket of ``sid`` stopped using ``nick``; this node's last one starts the hold."""
        here = self.here.get(nick)
        if here is not None and here[0] == sid and here[1] == 1:
            del self.here[nick]  # if Redis fails below, its key lapses by itself
            if self.hub is None:
                self.held[nick] = (sid, trio.current_time() + self.hold)
            else:
                await self._call("lapse", [self.prefix + nick], [sid, str(int(self.hold * 1000))])
        elif here is not None and here[0] == sid:
            here[1] -= 1

    async def _hold(self, claims: list[tuple[str, str]]) -> int:
        if not claims:
            return 0
        if self.hub is None:
            await trio.lowlevel.checkpoint()
            now = trio.current_time()
            self.held = {n: h for n, h in self.held.items() if h[1] > now}
            lost = [n for n, sid in claims if self.held.get(n, (sid,))[0] != sid]
            self.held.update((n, (sid, math.inf)) for n, sid in claims if n not in lost)
            return len(lost)
        ttl = str(int(max(self.hold, 3 * self.beat) * 1000))
        keys = [self.prefix + nick for nick, _ in claims]
        return int(await self._call("hold", keys, [ttl, *(sid for _, sid in claims)]))

    async def _call(self, name: str, keys: list[str], args: list[str]) -> Any:
        assert self.hub is not None
        try:
            with trio.fail_after(self.hub.timeout):
                return await self.scripts[name](keys=keys, args=args)
        except (OSError, trio.TooSlowError, RedisError) as exc:
            self.client.connection_pool.disconnect()  # a late reply, a demoted primary
            raise pr.HubUnavailable(f"chat nicks: {exc or 'too slow'}", name, 0) from exc

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """With Redis: hold a client and refresh this node's claims every ``beat`` seconds."""
        if self.hub is None:
            task_status.started()
            return
        async with self.hub.client(decode_responses=True) as self.client:
            self.scripts = {
                n: self.client.register_script(s) for n, s in (("hold", _HOLD), ("lapse", _LAPSE))
            }
            task_status.started()
            while True:
                await trio.sleep(self.beat)
                try:
                    if await self._hold([(nick, here[0]) for nick, here in self.here.items()]):
                        log.warning("nicks used here are held by someone else now")
                except pr.HubUnavailable as exc:
                    log.warning("refreshing nicks failed: %s", exc)
