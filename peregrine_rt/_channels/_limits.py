"""The limits of the Channels layer, and the token bucket that enforces rates.

Soft limits answer the message that crossed them with an error reply
(``too_large``, ``rate_limited``, ``too_many_joins``); every such error
counts as a violation of the connection, and past ``max_violations`` the
connection is closed with 1008 (policy violation).  Hard protocol errors
(not JSON, not a frame) close at once (1007/1008, see ``_phoenix``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["Limits", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do.

    A server's ``Config`` sets them (``channels_max_joins=...``, see
    :meth:`from_config`); ``limits = Limits(...)`` on a Channels class
    overrides the Config for that app.

    Attributes:
        max_message_size: characters of one client message (else ``too_large``).
        max_joins: topics one connection may have joined at once (else ``too_many_joins``).
        publish_rate, publish_burst: events per second one connection may
            send to its topics, and the burst above that rate (else ``rate_limited``).
        join_rate, join_burst: joins and leaves per second one connection may
            send, and the burst (else ``rate_limited``): each one may reach
            every member of the topic through presence.
        topic_publish_rate, topic_publish_burst: the same for all
            connections of this node together, per topic.
        max_violations: error replies (unmatched topics, limits) a connection
            may earn before it is closed with 1008.
        max_depth: nesting depth of a message's JSON (deeper: close 1007).
    """

    max_message_size: int = 65_536
    max_joins: int = 100
    publish_rate: float = 50.0
    publish_burst: int = 100
    join_rate: float = 10.0
    join_burst: int = 50
    topic_publish_rate: float = 1000.0
    topic_publish_burst: int = 2000
    max_violations: int = 100
    max_depth: int = 64

    def __post_init__(self) -> None:
        for name in (
            "max_message_size",
            "max_joins",
            "publish_burst",
            "join_burst",
            "topic_publish_burst",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1")
        for name in ("publish_rate", "join_rate", "topic_publish_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive")
        if self.max_violations < 0 or self.max_depth < 1:
            raise ValueError("Limits.max_violations must be >= 0 and max_depth >= 1")

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """The limits a server's :class:`~peregrine_rt.Config` sets (its ``channels_*`` fields)."""
        return cls(
            max_message_size=config.channels_max_message_size,
            max_joins=config.channels_max_joins,
            publish_rate=config.channels_publish_rate,
            publish_burst=config.channels_publish_burst,
            join_rate=config.channels_join_rate,
            join_burst=config.channels_join_burst,
            topic_publish_rate=config.channels_topic_publish_rate,
            topic_publish_burst=config.channels_topic_publish_burst,
            max_violations=config.channels_max_violations,
            max_depth=config.json_max_depth,
        )


class TokenBucket:
    """``rate`` tokens a second, up to ``burst`` saved; :meth:`take` spends one."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last: float | None = None

    def take(self, now: float) -> bool:
        """Spend a token at time ``now`` (any monotonic clock); False when none is left."""
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        # A whole token, but for the float rounding of ``now - last``: (0.4 + 1)
        # - 0.4 is 0.9999999999999999, and a client at exactly its rate was refused.
        if self.tokens >= 1 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1)
            return True
        return False
