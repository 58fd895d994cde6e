"""Who holds which nick, in this process (step 7 shares them: ``examples/chat/nicks.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio


@dataclass
class Claim:
    sid: str  # the person holding the nick
    using: int  # how many of their sockets use it
    lapses: float = math.inf  # when it is free again (once ``using`` is 0)


class Nicks:
    """A nick is its person's while one of their sockets uses it, and ``hold`` seconds more."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self.claims: dict[str, Claim] = {}

    async def claim(self, nick: str, sid: str) -> bool:
        """Take ``nick`` for one more socket of ``sid``; False if another person holds it."""
        claim = self.claims.get(nick)
        if claim is None or (claim.using == 0 and claim.lapses <= trio.current_time()):
            claim = self.claims[nick] = Claim(sid, 0)
        if claim.sid != sid:
            return False
        claim.using, claim.lapses = claim.using + 1, math.inf
        return True

    async def release(self, nick: str, sid: str) -> None:
        """One socket of ``sid`` stopped using ``nick``; the last one starts the hold."""
        claim = self.claims.get(nick)
        if claim is not None and claim.sid == sid and claim.using > 0:
            claim.using -= 1
            if claim.using == 0:
                claim.lapses = trio.current_time() + self.hold
