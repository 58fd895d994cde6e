"""The hub's subscriber for one Channels topic on this node: :class:`Fan`.

A broadcast reaches a node once, as the encoded Phoenix frame (or
``!<sender>\n<frame>`` from ``broadcast_from``); the topic's fan hands it to
the node's members of that topic: to the live ones with the WebSocket frame
encoded once for all, to the ones still recovering into their buffers, and,
for a conflated topic, with its key, so that a slow reader's outbox keeps
the newest value per key.

A fan of a topic with history knows the last offset it delivered and the
topic's epoch, so that the node can catch up after its link to Redis came
back (``_relink``): :meth:`Fan.pause` keeps what arrives, :meth:`Fan.resume`
delivers the publications missed meanwhile, then what was kept, each offset
once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._frames import encode_frame
from .._hub import broadcast as fan_out
from ._phoenix import decode

if TYPE_CHECKING:
    from ..websocket import WebSocket
    from ._server import Socket

__all__ = ["Fan"]


class Fan:
    """The hub's subscriber for one topic on this node: its local members."""

    __slots__ = (
        "buffering",
        "conflate",
        "epoch",
        "last",
        "members",
        "paused",
        "snapshot",
        "topic",
        "witness",
    )

    def __init__(self, topic: str, conflate: Callable[[Any], Any] | None = None) -> None:
        self.topic = topic
        self.conflate = conflate  # the topic's key function: the newest value per key
        self.members: dict[WebSocket, Socket] = {}
        self.snapshot: tuple[WebSocket, ...] | None = None  # the live members' sockets
        self.buffering: tuple[Socket, ...] = ()  # members still recovering
        self.last: int | None = None  # the offset of the last publication delivered
        self.epoch: str | None = None  # the topic's epoch, as the last join read it
        self.paused: list[str] | None = None  # what arrived since pause()
        # Told (epoch, offset) of each newer publication delivered: the history
        # backend's memory of the topic (``RedisHistory.seen``), if it keeps one.
        self.witness: Callable[[str, int], None] | None = None

    def deliver(self, message: str | bytes) -> bool:
        """Send a hub message (a frame, or ``!<sender>\\n<frame>``) to the members."""
        if isinstance(message, bytes):
            message = message.decode()
        if self.paused is not None:
            self.paused.append(message)
            return True
        sender = None
        if message.startswith("!"):
            sender, _, message = message[1:].partition("\n")
        offset = offset_of(message)
        if offset is not None and (self.last is None or offset > self.last):
            self.last = offset
            if self.witness is not None and self.epoch is not None:
                self.witness(self.epoch, offset)
        targets = self.snapshot
        if targets is None:
            targets = self.snapshot = tuple(
                ws for ws, s in self.members.items() if s.buffer is None
            )
            self.buffering = tuple(s for s in self.members.values() if s.buffer is not None)
        if sender is not None:
            targets = tuple(ws for ws in targets if self.members[ws].conn_id != sender)
        for socket in self.buffering:
            if socket.buffer is not None:
                socket.buffer.append(message)
        key = None if self.conflate is None else self._key(message)
        if key is None:
            fan_out(targets, message)
            return True
        frame: bytes | None = None  # encoded once for every uncompressed socket
        for ws in targets:
            if ws.shares_frames:
                if frame is None:
                    frame = encode_frame(message)
                ws.deliver_keyed(frame, key)
            else:
                ws.deliver(message)  # compressed: every frame, in order
        return True

    def _key(self, message: str) -> Any:
        """The conflation key of a frame (its event and the topic's key of its payload)."""
        assert self.conflate is not None
        try:
            frame = decode(message)
            return (frame.event, self.conflate(frame.payload))
        except Exception:  # a payload the key function does not expect: not conflated
            return None

    def joined(self, offset: int, epoch: str) -> None:
        """A join read the topic's position: the epoch, and the offset if none came yet."""
        self.epoch = epoch
        if self.last is None:
            self.last = offset

    def pause(self) -> None:
        """Keep what arrives, undelivered, until :meth:`resume`."""
        if self.paused is None:
            self.paused = []

    def resume(self, missed: list[str]) -> None:
        """Deliver ``missed`` (frames past :attr:`last`), then what was kept, each offset once."""
        kept, self.paused = self.paused or [], None
        for message in (*missed, *kept):
            offset = offset_of(message)
            if offset is None or self.last is None or offset > self.last:
                self.deliver(message)

    def changed(self) -> None:
        """The members changed: the snapshot is made again at the next delivery."""
        self.snapshot = None


def offset_of(message: str) -> int | None:
    """The offset of a hub message ``[null,"p:<n>",...`` or ``!<sender>\n[null,"p:<n>",...``."""
    if message.startswith("!"):
        message = message[message.find("\n") + 1 :]
    if not message.startswith('[null,"p:'):
        return None
    end = message.find('"', 9)
    digits = message[9:end]
    return int(digits) if digits.isdigit() else None
