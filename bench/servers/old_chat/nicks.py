"""Who holds which nick: a nick belongs to one person at a time (see ``store.py``).

A person is the ``sid`` of a signed session cookie (``app.py``), not a
connection: the same person may use a nick in several tabs, on any node.  A
claim lasts while its person has a socket using the nick, plus
:data:`NICK_HOLD` seconds, so that a tab that reconnects keeps its nick.

* :class:`MemoryNicks` (one process): a dict of claims.
* :class:`RedisNicks` (several nodes): a key per nick holding the ``sid``,
  claimed atomically by a script (set if free or already this person's).
  Each node refreshes the keys of the nicks its sockets use with the store's
  heartbeat, so a node that dies without a goodbye lets its claims expire.
  Its last socket gone, a node shortens the key's life to the hold.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger("examples.chat")

NICK_HOLD = 30.0
"""Seconds a nick stays its holder's after their last socket using it closed."""


@dataclass(slots=True)
class Claim:
    """A nick held by ``sid``: ``sockets`` use it (here), or it lapses at ``until`` (trio time)."""

    sid: str
    sockets: int = 0
    until: float = 0.0


class MemoryNicks:
    """The claims of one process."""

    def __init__(self, hold: float = NICK_HOLD) -> None:
        self.hold = hold
        self._claims: dict[str, Claim] = {}
        self._lapsing: dict[str, None] = {}  # unused nicks, in the order they lapse

    async def claim(self, nick: str, sid: str) -> bool:
        """Take ``nick`` for one more socket of ``sid``; False if someone else holds it."""
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        while self._lapsing:  # forget the claims whose hold is over
            first = next(iter(self._lapsing))
            if self._claims[first].until > now:
                break
            del self._lapsing[first], self._claims[first]
        held = self._claims.setdefault(nick, Claim(sid))
        if held.sid != sid:
            return False
        self._lapsing.pop(nick, None)
        held.sockets += 1
        return True

    async def release(self, nick: str, sid: str) -> None:
        """One socket of ``sid`` stopped using ``nick``; the last one starts the hold."""
        await trio.lowlevel.checkpoint()
        held = self._claims.get(nick)
        if held is None or held.sid != sid or not held.sockets:
            return
        held.sockets -= 1
        if not held.sockets:
            held.until = trio.current_time() + self.hold
            self._lapsing[nick] = None


# KEYS: the nick's key.  ARGV: sid, TTL (ms).  1 if the nick is (now) the sid's.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# KEYS: the nick's key.  ARGV: sid, the hold (ms).  The last socket of this node left.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""
# KEYS: the keys of the nicks this node's sockets use.  ARGV: TTL (ms), then
# each nick's sid.  Refreshes each (or claims it again: Redis restarted); returns
# how many someone else holds (they were lost while the node could not refresh).
_HOLD = """
local lost = 0
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and held ~= ARGV[i + 1] then
    lost = lost + 1
  else
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  end
end
return lost
"""
SCRIPTS = {"claim": _CLAIM, "release": _RELEASE, "hold": _HOLD}
"""The scripts :class:`RedisNicks` runs, for the store to register."""

Script = Callable[[str, list[str], list[str]], Awaitable[Any]]


class RedisNicks:
    """The claims of every node, in Redis; the store runs the scripts.

    Args:
        script: ``await script(name, keys, args)`` runs one of :data:`SCRIPTS`.
        key: the Redis key of a nick.
        hold: :data:`NICK_HOLD`.
        ttl: seconds a key lives without a refresh while sockets use the nick
            (more than the store's heartbeat; at least ``hold``).
    """

    def __init__(self, script: Script, key: Callable[[str], str], hold: float, ttl: float) -> None:
        self.hold = hold
        self._script = script
        self._key = key
        self._ttl = str(int(max(hold, ttl) * 1000))
        self._here: dict[str, Claim] = {}  # the nicks this node's sockets use

    async def claim(self, nick: str, sid: str) -> bool:
        """Take ``nick`` for one more socket of ``sid``; False if someone else holds it."""
        held = self._here.get(nick)
        if held is None:
            if not await self._script("claim", [self._key(nick)], [sid, self._ttl]):
                return False
            held = self._here.setdefault(nick, Claim(sid))
        if held.sid != sid:
            return False
        held.sockets += 1
        return True

    async def release(self, nick: str, sid: str) -> None:
        """One socket of ``sid`` stopped using ``nick``; the node's last one starts the hold."""
        held = self._here.get(nick)
        if held is None or held.sid != sid:
            return
        held.sockets -= 1
        if not held.sockets:
            del self._here[nick]  # failing below, the key expires by itself
            hold = str(max(1, int(self.hold * 1000)))
            await self._script("release", [self._key(nick)], [sid, hold])

    async def refresh(self) -> None:
        """Keep (or claim again) the nicks this node's sockets use: at every heartbeat."""
        here = list(self._here.items())
        if not here:
            return
        keys = [self._key(nick) for nick, _ in here]
        lost = await self._script("hold", keys, [self._ttl, *(c.sid for _, c in here)])
        if lost:
            log.warning("%d nicks used here are held by someone else now", lost)
