"""The client's records, states, backoff and exceptions (:mod:`peregrine_rt.client` exports them).

::

    PeregrineError
    └── ClientError                 a Channels client operation failed
        ├── JoinRefused             the server answered the join with an error (.reason, .response)
        ├── PushError               the server answered a push with an error (.event, .response)
        ├── ReplyTimeout            no reply within the timeout (.topic, .event, .timeout)
        │   ├── JoinTimeout
        │   └── PushTimeout
        ├── Disconnected            the connection dropped before the reply came
        └── ChannelClosed           the channel is closed: left, or closed by the server

Opening the socket can also raise :class:`~peregrine_rt.HandshakeError` (the
server refused the WebSocket, ``.status``) or :class:`OSError` (no connection).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from .exceptions import PeregrineError

T = TypeVar("T")

__all__ = [
    "Backoff",
    "ChannelClosed",
    "ChannelState",
    "ClientError",
    "Disconnected",
    "JoinRefused",
    "JoinReply",
    "JoinTimeout",
    "Message",
    "PushError",
    "PushTimeout",
    "ReplyTimeout",
    "SocketState",
    "StateChange",
]


class ClientError(PeregrineError):
    """Base class of the Channels client's errors."""


class JoinRefused(ClientError):
    """The server refused the join.

    Attributes:
        topic: the topic.
        reason: the ``reason`` of the error reply (``"unauthorized"``, the app's own...).
        response: the whole ``response`` of the error reply.
    """

    def __init__(self, topic: str, response: Any) -> None:
        reason = response.get("reason") if isinstance(response, dict) else None
        self.topic = topic
        self.reason = str(reason) if reason is not None else ""
        self.response = response
        super().__init__(f"joining {topic!r} was refused: {self.reason or response!r}")


class PushError(ClientError):
    """The server answered a push with ``status`` other than ``"ok"``.

    Attributes:
        topic: the topic.
        event: the event pushed.
        status: the reply's status (``"error"``).
        response: the reply's ``response``.
        reason: ``response["reason"]`` if there is one, else ``""``.
    """

    def __init__(self, topic: str, event: str, status: str, response: Any) -> None:
        reason = response.get("reason") if isinstance(response, dict) else None
        self.topic = topic
        self.event = event
        self.status = status
        self.response = response
        self.reason = str(reason) if reason is not None else ""
        super().__init__(f"{event!r} on {topic!r} answered {status}: {response!r}")


class ReplyTimeout(ClientError):
    """No reply came within ``timeout`` seconds.

    Attributes:
        topic: the topic.
        event: the event sent (``"phx_join"`` for a join).
        timeout: the seconds waited.
    """

    def __init__(self, topic: str, event: str, timeout: float) -> None:
        self.topic = topic
        self.event = event
        self.timeout = timeout
        super().__init__(f"no reply to {event!r} on {topic!r} within {timeout!r} s")


class JoinTimeout(ReplyTimeout):
    """The join was not answered in time (or the socket could not connect in time)."""


class PushTimeout(ReplyTimeout):
    """The push was not answered in time (or the channel was not joined in time)."""


class Disconnected(ClientError):
    """The connection dropped after the message was sent and before its reply came.

    The server may or may not have handled the message.
    """


class ChannelClosed(ClientError):
    """The channel is closed (left by the app, refused, or closed by the server)."""


class SocketState(enum.Enum):
    """The state of a socket's connection, as :attr:`Socket.state` gives it."""

    CONNECTING = "connecting"
    """Opening a connection (the first, or again after a drop)."""
    OPEN = "open"
    """Connected, so joins, pushes and heartbeats flow."""
    RECONNECTING = "reconnecting"
    """The connection dropped (or could not be made); waiting to try again."""
    CLOSED = "closed"
    """The connection is closed (for good once the ``open_socket`` block is left)."""


class ChannelState(enum.Enum):
    """The state of a channel (phoenix.js's channel states)."""

    CLOSED = "closed"
    JOINING = "joining"
    JOINED = "joined"
    ERRORED = "errored"
    """Joined, then the connection dropped or the server's side crashed; rejoining."""
    LEAVING = "leaving"


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of a socket's :class:`SocketState`, as ``socket.state_changes()`` gives them.

    Attributes:
        state: the new state.
        attempt: connection attempts since the last successful one (0 when open).
        delay: with ``RECONNECTING``, the seconds until the next attempt.
        reason: why the connection ended or failed, in words (``None`` if open).
    """

    state: SocketState
    attempt: int = 0
    delay: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A message the server pushed or broadcast on a channel.

    Attributes:
        topic: the channel's topic.
        event: the event name.
        payload: the payload (any JSON value).
        offset: the history offset of a publication (its ``"p:<offset>"``
            ref), or ``None`` for a message outside history.
    """

    topic: str
    event: str
    payload: Any
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class JoinReply:
    """A join's ok reply, as ``channel.join()`` returns it and ``channel.joins()`` gives it.

    Attributes:
        response: the reply's ``response`` (the app's answer, with the
            recovery keys ``recovered``, ``epoch``, ``offset``, ``reason``
            when the topic has history).
        rejoin: ``False`` for the app's ``join()``, ``True`` for an automatic rejoin.
        recovered: on a rejoin with ``since``, whether the server replayed
            every missed message; ``None`` when no recovery was asked.
        reason: when not recovered, why: ``"too_old"``, ``"epoch_changed"``,
            ``"no_history"``.
    """

    response: Any
    rejoin: bool
    recovered: bool | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential, capped, with full jitter.

    Attempt ``n`` (0 first) waits a uniformly random time between 0 and
    ``min(maximum, initial * factor ** n)`` seconds (AWS's "full jitter"), so
    clients dropped together do not come back together.

    >>> Backoff(initial=1.0, maximum=8.0).ceiling(5)
    8.0
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def ceiling(self, attempt: int) -> float:
        """The longest wait before attempt ``attempt``."""
        return min(self.maximum, self.initial * self.factor ** min(attempt, 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A wait before attempt ``attempt``: uniform in ``[0, ceiling(attempt)]``."""
        return (rng or random).uniform(0.0, self.ceiling(attempt))


@asynccontextmanager
async def subscription(
    subscribers: list[trio.MemorySendChannel[T]],
) -> AsyncIterator[trio.MemoryReceiveChannel[T]]:
    """A new unbounded channel in ``subscribers`` for the block (what ``state_changes`` and
    ``joins`` give); it leaves the list, and its sending side closes, when the block ends."""
    send, receive = trio.open_memory_channel[T](math.inf)
    subscribers.append(send)
    try:
        async with receive:
            yield receive
    finally:
        if send in subscribers:
            subscribers.remove(send)
        send.close()
