"""Server-Sent Events: ``async with response.sse() as events``.

An :class:`EventStream` writes ``text/event-stream`` (the WHATWG HTML
"server-sent events" format): ``event:``, ``id:``, ``data:`` (one line per
line of data) and ``retry:`` fields, a blank line after each event, and
comment lines as keep-alive pings while nothing else is sent.  It can be
subscribed to hub topics like a WebSocket (:meth:`EventStream.forward`), so a
browser without WebSockets, or a dashboard that only listens, gets the same
feed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._json import dumps
from .exceptions import ClientDisconnected

if TYPE_CHECKING:
    from ._connection import HTTPConnection
    from ._hub import Hub
    from ._metrics import Stats
    from ._response import Response

__all__ = ["EventStream", "open_event_stream"]

error_log = logging.getLogger("peregrine_rt.error")

# Bytes a client may send while it listens (a pipelined request) before the
# stream is ended for it: an SSE client has nothing to say.
_MAX_PIPELINED = 65_536


def _field(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an SSE {name} cannot contain a line break: {value!r}")
    return f"{name}: {value}\n"


def _size(message: str | bytes) -> int:
    """Bytes on the wire (``isascii`` is O(1): no encoding for the common case)."""
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode())


def _lines(text: str) -> list[str]:
    """Split at every line end the SSE parser knows: CRLF, LF and a lone CR.

    A lone CR left in a ``data:`` line would let the text that follows it
    (user input relayed by a hub, say) start a field of its own.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def format_event(
    data: Any = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: float | None = None,
) -> str:
    """One event in the wire format (``data`` not a ``str`` is sent as JSON).

    >>> format_event("hello\\nworld", event="greeting", id="7")
    'event: greeting\\nid: 7\\ndata: hello\\ndata: world\\n\\n'
    >>> format_event({"n": 1})
    'data: {"n":1}\\n\\n'
    """
    parts: list[str] = []
    if event is not None:
        parts.append(_field("event", event))
    if id is not None:
        if "\0" in id:
            raise ValueError("an SSE id cannot contain NUL")
        parts.append(_field("id", id))
    if retry is not None:
        parts.append(f"retry: {int(retry * 1000)}\n")
    if data is not None:
        if not isinstance(data, str):
            data = dumps(data)
        parts.extend(f"data: {line}\n" for line in _lines(data))
    parts.append("\n")
    return "".join(parts)


class EventStream:
    """One Server-Sent Events response, from ``async with response.sse() as events``.

    Attributes:
        last_event_id: the ``Last-Event-ID`` the browser sent when it
            reconnected (``None`` on a first connection): resume from there.
        closed: the client went away (or the stream overflowed); sending stops.

    Sends are serialised with the keep-alive pings; each waits while the client
    reads slowly.  A client that disconnects makes ``send`` raise
    :class:`~peregrine_rt.ClientDisconnected` (and :meth:`forward` return).
    """

    def __init__(self, send: Any, last_event_id: str | None, outbox_size: int, policy: str):
        self._send_raw = send
        self._lock = trio.Lock()
        self.last_event_id = last_event_id
        self.closed = False
        self._queue: deque[str | bytes] = deque()
        self._queued_bytes = 0
        self._outbox_size = outbox_size
        self._policy = policy
        self._wakeup = trio.Event()
        self._last_write = trio.current_time()
        self.stats: Stats | None = None  # the server's figures, once the stream runs

    async def _write(self, text: str) -> None:
        if self.closed:
            raise ClientDisconnected("the event stream is closed")
        async with self._lock:
            try:
                await self._send_raw(text)
            except ClientDisconnected:
                self.closed = True
                self._wakeup.set()
                raise
            self._last_write = trio.current_time()

    async def send(
        self,
        data: Any = None,
        *,
        event: str | None = None,
        id: str | None = None,
        retry: float | None = None,
    ) -> None:
        """Send one event: ``data`` (``str``, or anything JSON can encode), with
        an optional ``event`` type, ``id`` (what ``Last-Event-ID`` returns on
        reconnection) and ``retry`` (seconds the browser waits before reconnecting).
        """
        await self._write(format_event(data, event=event, id=id, retry=retry))

    async def comment(self, text: str = "") -> None:
        """Send a comment line (browsers ignore it; proxies see traffic)."""
        await self._write("".join(f": {line}\n" for line in _lines(text)) + "\n")

    # -- hub subscriber -----------------------------------------------------------------

    def deliver(self, message: str | bytes) -> bool:
        """Queue ``message`` for :meth:`forward` (the hub's Subscriber interface)."""
        if self.closed:
            return False
        size = _size(message)
        if self._queued_bytes + size > self._outbox_size:
            if self._policy != "drop-oldest":
                error_log.warning("%r: slow consumer, %d bytes queued; ending it", self, size)
                if self.stats is not None:
                    self.stats.slow_closed += 1
                self.closed = True
                self._wakeup.set()
                return False
            while self._queue and self._queued_bytes + size > self._outbox_size:
                self._queued_bytes -= _size(self._queue.popleft())
                if self.stats is not None:
                    self.stats.slow_dropped += 1
        self._queue.append(message)
        self._queued_bytes += size
        self._wakeup.set()
        return True

    async def forward(self, hub: Hub, *topics: str, event: str | None = None) -> None:
        """Send every message published to ``topics`` as an event, until the client leaves.

        Messages are sent as the ``data`` of events (``bytes`` decoded as
        UTF-8), in the order they were published, with ``event`` as their type.
        A client that reads too slowly gets ``Config.ws_slow_policy`` (the
        stream ends, or the oldest queued messages are dropped).
        """
        for topic in topics:
            hub.subscribe(self, topic)
        try:
            while not self.closed:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                while self._queue and not self.closed:
                    message = self._queue.popleft()
                    self._queued_bytes -= _size(message)
                    if isinstance(message, bytes):
                        message = message.decode("utf-8", "replace")
                    try:
                        await self.send(message, event=event)
                    except ClientDisconnected:
                        return
        finally:
            hub.unsubscribe(self)

    async def _keep_alive(self, interval: float) -> None:
        while not self.closed:
            idle = trio.current_time() - self._last_write
            if idle < interval:
                await trio.sleep(interval - idle)
                continue
            try:
                await self.comment("ping")
            except ClientDisconnected:
                return

    async def _watch_disconnect(self, conn: HTTPConnection) -> None:
        """Notice at once a client that closes its end (not only at the next write).

        An SSE client sends nothing while it listens; bytes that arrive anyway (a
        pipelined request) go to the parser for after the stream.
        """
        parser = conn.parser
        kept = 0
        while True:
            try:
                data = await conn.transport.receive_some()
            except ClientDisconnected:
                data = b""
            kept += len(data)
            if not data or kept > _MAX_PIPELINED:
                # Gone, or sending more than any request head while it listens:
                # either way the stream ends, and the connection with it.
                if data and conn.response is not None:
                    conn.response.close_connection = True
                if not data:
                    parser.feed_eof()
                self.closed = True
                self._wakeup.set()
                return
            parser.feed(data)

    @asynccontextmanager
    async def _session(
        self, conn: HTTPConnection | None, ping_interval: float | None
    ) -> AsyncIterator[EventStream]:
        """Run the keep-alive pinger and the disconnect watcher around the handler's block."""
        stats = conn.server.stats if conn is not None else None
        self.stats = stats
        if stats is not None:
            stats.sse_streams += 1
        try:
            async with trio.open_nursery() as nursery:
                if ping_interval is not None:
                    nursery.start_soon(self._keep_alive, ping_interval)
                if conn is not None:
                    nursery.start_soon(self._watch_disconnect, conn)
                try:
                    yield self
                finally:
                    # Never cut a ping in half: wait (briefly) for one being
                    # written, then stop the helpers.  A ping that cannot
                    # finish leaves the stream broken and the connection closes.
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await self._lock.acquire()
                        self._lock.release()
                    self.closed = True
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The pinger never raises: the one exception is the block's own
            # (ClientDisconnected, a handler's error); let it out as itself.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise  # pragma: no cover - the pinger catches what it meets
        finally:
            if stats is not None:
                stats.sse_streams -= 1

    def __repr__(self) -> str:
        return f"<EventStream {'closed' if self.closed else 'open'}>"


@asynccontextmanager
async def open_event_stream(
    response: Response,
    last_event_id: str | None,
    *,
    ping_interval: float | None,
    retry: float | None,
    outbox_size: int,
    policy: str,
) -> AsyncIterator[EventStream]:
    response.headers["cache-control"] = "no-cache"
    response.headers["x-accel-buffering"] = "no"  # nginx: do not buffer the stream
    async with response.stream(content_type="text/event-stream; charset=utf-8") as send:
        stream = EventStream(send, last_event_id, outbox_size, policy)
        if retry is not None:
            await stream.send(retry=retry)
        async with stream._session(response.connection, ping_interval):
            yield stream
