"""The client's :class:`Channel`: join, push, leave, messages, recovery, presence.

A channel is one topic on a :class:`~peregrine_rt.client.Socket`.  Its
states are phoenix.js's (:class:`ChannelState`): ``CLOSED`` until joined,
``JOINING``, ``JOINED``; ``ERRORED`` when the connection dropped or the
server's side of the topic crashed (``phx_error``), until the automatic
rejoin; ``LEAVING``; ``CLOSED`` again after a leave, a refusal, or the
server's ``phx_close``.

The socket's reader calls :meth:`Channel.receive` for every frame of the
topic and resolves the replies; a join's reply is applied (state, epoch,
offset, ``recovered``) by the reader itself, before it reads the next frame,
so the messages a recovery replays right after the reply are checked against
the new position.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ._channels._phoenix import (
    PHX_CLOSE,
    PHX_ERROR,
    PHX_JOIN,
    PHX_LEAVE,
    PRESENCE_DIFF,
    PRESENCE_STATE,
    Frame,
    parse_publication_ref,
)
from ._client_presence import Presence
from ._client_types import (
    ChannelClosed,
    ChannelState,
    ClientError,
    Disconnected,
    JoinRefused,
    JoinReply,
    JoinTimeout,
    Message,
    PushError,
    PushTimeout,
)
from ._client_types import (
    subscription as open_subscription,
)

if TYPE_CHECKING:
    from .client import Socket

__all__ = ["DEFAULT_BUFFER", "Channel", "Params"]

DEFAULT_BUFFER = 1000
"""Messages a ``messages()`` subscription holds before the socket waits for its reader."""

Params = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
"""Join or connection params: a mapping, or a function called for each (re)join or (re)connect."""


@dataclass(slots=True)
class _Subscription:
    send: trio.MemorySendChannel[Message]
    events: frozenset[str]


class Channel:
    """One topic joined (or to join) over a socket; made by ``socket.channel(topic)``.

    Attributes:
        topic: the topic.
        presence: the topic's :class:`~peregrine_rt.client.Presence`, synced
            from its ``presence_state``/``presence_diff`` messages.
        join_reply: the last successful join's :class:`JoinReply` (``None`` before).
        timeout: the default reply timeout of :meth:`join`, :meth:`push`, :meth:`leave`.
    """

    def __init__(self, socket: Socket, topic: str, params: Params | None, timeout: float) -> None:
        self.topic = topic
        self.presence = Presence()
        self.join_reply: JoinReply | None = None
        self.timeout = timeout
        self._socket = socket
        self._params = params
        self._state = ChannelState.CLOSED
        self._changed = trio.Event()
        self._join_ref: str | None = None
        self._wanted = False  # the app asked to be joined (and did not leave)
        self._app_joining = False  # the app's join() is under way (it retries by itself)
        self._epoch: str | None = None
        self._offset: int | None = None  # the last publication offset delivered
        self._subs: list[_Subscription] = []
        self._join_subs: list[trio.MemorySendChannel[JoinReply]] = []

    def __repr__(self) -> str:
        return f"<Channel {self.topic!r} {self._state.value}>"

    @property
    def state(self) -> ChannelState:
        """The channel's state now."""
        return self._state

    @property
    def recovered(self) -> bool | None:
        """Whether the last join recovered every missed message (``None``: no recovery asked)."""
        return None if self.join_reply is None else self.join_reply.recovered

    @property
    def position(self) -> tuple[int | None, str | None]:
        """``(offset, epoch)``: the last publication offset delivered and the topic's epoch."""
        return self._offset, self._epoch

    # -- the app's operations -----------------------------------------------------

    async def join(self, *, timeout: float | None = None) -> Any:
        """Join the topic; return the ``response`` of the server's ok reply.

        Waits for the socket to be connected, and if the connection drops
        before the reply, joins again once reconnected, all within
        ``timeout``.  Once joined, the channel rejoins by itself after every
        reconnect (with ``since`` for recovery) until :meth:`leave`.

        Raises:
            JoinRefused: the server refused (``.reason``); the channel is closed.
            JoinTimeout: no reply within ``timeout``; the channel is closed.
            ClientError: the channel is joined or joining already.
        """
        if self._state is not ChannelState.CLOSED:
            raise ClientError(f"{self.topic!r} is {self._state.value} already")
        if self._socket.closed:
            raise ChannelClosed("the socket is closed")
        limit = self.timeout if timeout is None else timeout
        self._socket.adopt(self)
        self._wanted = True
        self._app_joining = True
        self._set_state(ChannelState.JOINING)
        try:
            with trio.move_on_after(limit):
                while True:
                    await self._socket.wait_open()
                    try:
                        return (await self._join_once(rejoin=False)).response
                    except Disconnected:
                        continue
            raise JoinTimeout(self.topic, PHX_JOIN, limit)
        except BaseException:
            if self.state is not ChannelState.JOINED:  # (the reader may have changed it)
                self.close_locally()
            raise
        finally:
            self._app_joining = False

    async def push(self, event: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Send ``event`` with ``payload`` (default ``{}``); return the ok reply's ``response``.

        Waits, within ``timeout``, for the channel to be joined (e.g. while it
        rejoins after a reconnect).

        Raises:
            PushError: the server answered with an error (``.reason``, ``.response``).
            PushTimeout: no reply within ``timeout`` (the server may still handle it).
            Disconnected: the connection dropped after sending, before the reply.
            ChannelClosed: the channel is closed (never joined, left, refused).
        """
        limit = self.timeout if timeout is None else timeout
        with trio.move_on_after(limit):
            await self._wait_joined()
            ref = self._socket.make_ref()
            waiter = self._socket.expect(ref)
            try:
                body = {} if payload is None else payload
                await self._socket.send(Frame(self._join_ref, ref, self.topic, event, body))
                status, response = await waiter.wait()
            finally:
                self._socket.forget(ref)
            if status != "ok":
                raise PushError(self.topic, event, status, response)
            return response
        raise PushTimeout(self.topic, event, limit)

    async def leave(self, *, timeout: float | None = None) -> None:
        """Leave the topic: send ``phx_leave``, wait for its reply (at most ``timeout``), close.

        The channel is closed when this returns, whatever the server did; its
        ``messages()`` iterators end.  Leaving a closed channel does nothing.
        """
        self._wanted = False
        if self._state is ChannelState.CLOSED:
            return
        joined = self._state is ChannelState.JOINED
        self._set_state(ChannelState.LEAVING)
        try:
            if joined and self._socket.connected:
                limit = self.timeout if timeout is None else timeout
                ref = self._socket.make_ref()
                waiter = self._socket.expect(ref)
                with trio.move_on_after(limit):
                    try:
                        await self._socket.send(
                            Frame(self._join_ref, ref, self.topic, PHX_LEAVE, {})
                        )
                        await waiter.wait()
                    except ClientError:
                        pass
                self._socket.forget(ref)
        finally:
            self.close_locally()

    @asynccontextmanager
    async def messages(
        self, *events: str, buffer: int = DEFAULT_BUFFER
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        """``async with channel.messages("new_msg") as messages``: the messages from now on.

        ``async for message in messages`` gives each :class:`Message` of the
        named events (all events if none named, presence ones included) until
        the channel closes.  Subscribe before joining to miss nothing that
        follows the join (a recovery's replay included).  Each subscription
        gets every message; see the module docs for ``buffer``.
        """
        send, receive = trio.open_memory_channel[Message](buffer)
        subscription = _Subscription(send, frozenset(events))
        self._subs.append(subscription)
        try:
            async with receive:
                yield receive
        finally:
            if subscription in self._subs:
                self._subs.remove(subscription)
            send.close()

    @asynccontextmanager
    async def joins(self) -> AsyncIterator[trio.MemoryReceiveChannel[JoinReply]]:
        """``async with channel.joins() as joins``: each successful (re)join's :class:`JoinReply`.

        An app that keeps a view of the topic refetches it when a rejoin
        says ``recovered`` is ``False``.
        """
        async with open_subscription(self._join_subs) as receive:
            yield receive

    async def wait_joined(self) -> None:
        """Wait until the channel is joined (e.g. after a reconnect).

        Raises:
            ChannelClosed: the channel is closed, or closes meanwhile.
        """
        await self._wait_joined()

    # -- the joins ------------------------------------------------------------------

    def _join_params(self) -> tuple[dict[str, Any], bool]:
        params = dict(self._params() if callable(self._params) else (self._params or {}))
        if self._epoch is not None or self._offset is not None:
            params["since"] = {"offset": self._offset or 0, "epoch": self._epoch or ""}
            return params, True
        return params, False

    async def _join_once(self, *, rejoin: bool, sent: trio.Event | None = None) -> JoinReply:
        socket = self._socket
        params, asked = self._join_params()
        ref = socket.make_ref()
        self._join_ref = ref
        self.presence.reset()

        def on_reply(status: str, response: Any) -> None:
            self._apply_join_reply(ref, status, response, asked=asked, rejoin=rejoin)

        waiter = socket.expect(ref, on_reply)
        try:
            await socket.send(Frame(ref, ref, self.topic, PHX_JOIN, params))
            if sent is not None:
                sent.set()  # the next channel's rejoin may go now
            status, response = await waiter.wait()
        finally:
            socket.forget(ref)
        if status != "ok":
            raise JoinRefused(self.topic, response)
        assert self.join_reply is not None
        return self.join_reply

    def _apply_join_reply(
        self, ref: str, status: str, response: Any, *, asked: bool, rejoin: bool
    ) -> None:
        """The join's reply, applied in the reader before it reads on."""
        if self._join_ref != ref or self._state is not ChannelState.JOINING:
            return
        if status != "ok":
            self.close_locally()
            return
        info = response if isinstance(response, dict) else {}
        recovered = info.get("recovered") if asked else None
        recovered = recovered if isinstance(recovered, bool) else (False if asked else None)
        offset, epoch = info.get("offset"), info.get("epoch")
        if isinstance(epoch, str):
            self._epoch = epoch
        if not recovered and isinstance(offset, int) and not isinstance(offset, bool):
            self._offset = offset  # from here on: what follows the topic's current position
        reason = info.get("reason") if recovered is False else None
        self.join_reply = JoinReply(
            response, rejoin, recovered, reason if isinstance(reason, str) else None
        )
        self._set_state(ChannelState.JOINED)
        for send in list(self._join_subs):
            try:
                send.send_nowait(self.join_reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._join_subs.remove(send)

    async def _rejoin(
        self,
        *,
        wait_first: bool = False,
        after: trio.Event | None = None,
        sent: trio.Event | None = None,
    ) -> None:
        """Rejoin after a reconnect or a ``phx_error``, retrying with backoff while connected.

        ``after``: wait for it before sending the join (the rejoin of the
        channel joined before this one was sent); ``sent`` is set once this
        one's first join is sent, or it gave up.
        """
        try:
            attempt = 0 if not wait_first else 1
            if wait_first:
                await trio.sleep(self._socket.backoff.delay(0))
            if after is not None:
                await after.wait()
            while self._wanted and self._state is ChannelState.ERRORED:
                self._set_state(ChannelState.JOINING)
                with trio.move_on_after(self.timeout):
                    try:
                        await self._join_once(rejoin=True, sent=sent)
                    except (JoinRefused, Disconnected):
                        return  # closed by the refusal; or the socket rejoins after reconnecting
                    return
                if self.state is ChannelState.JOINING:  # (the reader may have changed it)
                    self._set_state(ChannelState.ERRORED)
                await trio.sleep(self._socket.backoff.delay(attempt))
                attempt += 1
        finally:
            if sent is not None:
                sent.set()

    # -- what the socket calls ----------------------------------------------------

    def connected(self, after: trio.Event | None = None) -> trio.Event | None:
        """A new connection is open: rejoin if the channel was joined.

        The socket calls it for its channels in the order they were joined,
        passing what the previous call returned: the rejoins reach the
        server in that order, as phoenix.js sends them (an app may refuse a
        topic until another is joined: the chat's rooms need its nick).
        """
        if self._wanted and self._state is ChannelState.ERRORED:
            sent = trio.Event()
            self._socket.start_soon(lambda: self._rejoin(after=after, sent=sent))
            return sent
        return after

    def disconnected(self) -> None:
        """The connection dropped: a joined channel waits to rejoin."""
        if self._state is ChannelState.JOINED or (
            self._state is ChannelState.JOINING and not self._app_joining
        ):
            self._set_state(ChannelState.ERRORED)

    async def receive(self, frame: Frame) -> None:
        """A frame of this topic that is not a reply (the reader calls this)."""
        if frame.join_ref is not None and frame.join_ref != self._join_ref:
            return  # it belongs to an earlier join of the topic
        if frame.event == PHX_CLOSE:
            if self._state is not ChannelState.LEAVING:
                self._wanted = False
                self.close_locally()
            return
        if frame.event == PHX_ERROR:
            if self._state in (ChannelState.JOINED, ChannelState.JOINING):
                self._set_state(ChannelState.ERRORED)
                self._join_ref = None
                if not self._app_joining:
                    self._socket.start_soon(lambda: self._rejoin(wait_first=True))
            return
        if self._state is not ChannelState.JOINED:
            return
        if frame.event in (PRESENCE_STATE, PRESENCE_DIFF):
            self.presence.handle(frame.event, frame.payload, self._join_ref)
        offset = parse_publication_ref(frame.ref)
        if offset is not None:
            if self._offset is not None and offset <= self._offset:
                return  # delivered already
            self._offset = offset
        message = Message(self.topic, frame.event, frame.payload, offset)
        for subscription in list(self._subs):
            if subscription.events and frame.event not in subscription.events:
                continue
            try:
                await subscription.send.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if subscription in self._subs:
                    self._subs.remove(subscription)

    def close_locally(self) -> None:
        """Close the channel without telling the server; its iterators end."""
        self._wanted = False
        self._join_ref = None
        self.presence.reset()
        self._set_state(ChannelState.CLOSED)
        for subscription in self._subs:
            subscription.send.close()
        self._subs.clear()
        self._socket.forget_channel(self)

    def _set_state(self, state: ChannelState) -> None:
        self._state = state
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_joined(self) -> None:
        while self._state is not ChannelState.JOINED:
            if self._state in (ChannelState.CLOSED, ChannelState.LEAVING):
                raise ChannelClosed(f"{self.topic!r} is {self._state.value}: join it first")
            await self._changed.wait()
