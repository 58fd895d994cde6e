"""What a topic's callbacks receive: :class:`Socket`, one per join; and a connection's state."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from ._limits import Limits, TokenBucket
from ._phoenix import Frame, encode

if TYPE_CHECKING:
    from ..websocket import WebSocket
    from ._server import Channels
    from ._topics import TopicSpec

__all__ = ["Conn", "Socket"]


class Socket:
    """One join: what a topic's callbacks receive as ``socket``.

    Attributes:
        ws: the connection's :class:`~peregrine_rt.WebSocket`.
        topic: the topic joined (``"room:lobby"``).
        params: the pattern's parameters (``{"name": "lobby"}``).
        join_ref: the client's ref of this join.
        assigns: a dict for the app's own per-join data.
        conn_id: the connection's id (unique across nodes; the presence ``conn``).
    """

    __slots__ = (
        "_channels",
        "assigns",
        "buffer",
        "conn_id",
        "join_ref",
        "params",
        "spec",
        "topic",
        "ws",
    )

    def __init__(
        self,
        channels: Channels,
        ws: WebSocket,
        conn_id: str,
        topic: str,
        params: dict[str, str],
        join_ref: str | None,
        spec: TopicSpec,
    ) -> None:
        self._channels = channels
        self.ws = ws
        self.conn_id = conn_id
        self.topic = topic
        self.params = params
        self.join_ref = join_ref
        self.spec = spec
        self.assigns: dict[str, Any] = {}
        self.buffer: list[str] | None = None  # live frames kept while recovering

    @property
    def user(self) -> Any:
        """The connection's identity (``ws.user``)."""
        return self.ws.user

    @property
    def channels(self) -> Channels:
        """The :class:`Channels` app this join belongs to (``history_of``, ``broadcast``...)."""
        return self._channels

    async def push(self, event: str, payload: Any) -> None:
        """Send ``event`` to this client only, on this topic."""
        await self.ws.send(encode(Frame(self.join_ref, None, self.topic, event, payload)))

    async def broadcast(self, event: str, payload: Any, *, history: bool = True) -> int | None:
        """:meth:`Channels.broadcast` to this topic (this client included)."""
        return await self._channels.broadcast(self.topic, event, payload, history=history)

    async def broadcast_from(self, event: str, payload: Any, *, history: bool = True) -> int | None:
        """:meth:`Channels.broadcast_from`: to everyone on this topic but this client."""
        return await self._channels.broadcast_from(self, event, payload, history=history)

    def __repr__(self) -> str:
        return f"<Socket {self.topic} join_ref={self.join_ref}>"


class Conn:
    """A connection's Channels state."""

    __slots__ = ("bucket", "id", "join_bucket", "joins", "limits", "violations")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.id = secrets.token_hex(8)
        self.joins: dict[str, Socket] = {}
        self.bucket = TokenBucket(limits.publish_rate, limits.publish_burst)
        self.join_bucket = TokenBucket(limits.join_rate, limits.join_burst)
        self.violations = 0
