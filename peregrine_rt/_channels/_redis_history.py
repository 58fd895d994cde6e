"""RedisHistory: history in Redis Streams, shared by every node of an app.

Keys, for topic ``t`` under the hub's prefix ``p`` (``"peregrine:"`` by
default); the ``{t}`` hash tag keeps both in one slot:

``p history:{t}:m``
    a hash: ``epoch`` (random, drawn when the hash is missing) and ``last``
    (the topic's last offset).  One key, so the two can only vanish together.
``p history:{t}:s``
    the stream: entry id ``<offset>-0``, fields ``t`` (time), ``e`` (event),
    ``p`` (payload, JSON text); trimmed with ``MAXLEN ~ max_count`` and, with
    ``max_age``, from its oldest end on each append.

One script (:data:`_APPEND`) does the whole append atomically: it draws the
epoch if Redis lost it (came back empty after a restart or ``FLUSHALL``: a
new epoch, offsets again from 1, and clients that knew the old epoch are
told ``epoch_changed``), ``HINCRBY`` the offset, ``XADD`` the entry, trims,
and ``PUBLISH``\\ es the delivery on the RedisHub channel of hub topic
``channels:<t>``: the hub's payload format (16-byte node id, ``t``, text)
around the Phoenix frame ``[null,"p:<offset>",t,event,payload]``, built in
the script from the offset and the frame's tail encoded here with the same
compact JSON as the codec's ``encode``.  The node id is
:data:`HISTORY_NODE_ID`, no node's: every node, the appending one included,
delivers the frame when Redis relays it, so every node sees a topic's
publications in offset order.  An append therefore never reaches Redis
without being delivered, nor is delivered without its offset.

Reads run one script too (epoch, last offset and entries from one instant),
and apply retention exactly (``MAXLEN ~`` keeps a few more entries; an entry
may expire between two appends).

Every call is bounded by the hub's ``timeout``; Redis failing or too slow
raises :class:`~peregrine_rt.exceptions.HubUnavailable` (``delivered`` 0),
and a timed-out call drops the pool's connections (a late reply must not be
read as the answer to the next command).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import anyio
import trio
from coredis import Redis
from coredis.commands.script import Script
from coredis.exceptions import RedisError

from .._json import dumps
from .._redis_hub import RedisHub
from ..exceptions import HubUnavailable
from ._history import (
    DEFAULT_MAX_COUNT,
    Position,
    Publication,
    Recovery,
    check_query,
    check_retention,
    hub_topic,
    new_epoch,
    recovery,
)

__all__ = ["HISTORY_NODE_ID", "RedisHistory"]

T = TypeVar("T")

HISTORY_NODE_ID: Final = b"channels.history"
"""The RedisHub node id the append script publishes under: no node's, so all deliver it."""
assert len(HISTORY_NODE_ID) == 16  # RedisHub's node id size

_ERRORS: Final[tuple[type[Exception], ...]] = (
    RedisError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)

# KEYS: meta, stream.  ARGV: a new epoch, event, payload, time, max_count (0:
# none), horizon ("" : no max_age), channel, hub header, frame tail.
_APPEND: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0)
end
local offset = string.format('%d', redis.call('HINCRBY', KEYS[1], 'last', 1))
local id = offset .. '-0'
local maxlen = tonumber(ARGV[5])
if maxlen > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, id, 't', ARGV[4], 'e', ARGV[2], 'p', ARGV[3])
else
  redis.call('XADD', KEYS[2], id, 't', ARGV[4], 'e', ARGV[2], 'p', ARGV[3])
end
if ARGV[6] ~= '' then
  local horizon = tonumber(ARGV[6])
  while true do
    local batch = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
    local expired = {}
    for _, entry in ipairs(batch) do
      if tonumber(entry[2][2]) > horizon then break end
      expired[#expired + 1] = entry[1]
    end
    if #expired == 0 then break end
    redis.call('XDEL', KEYS[2], unpack(expired))
    if #expired < #batch then break end
  end
end
redis.call('PUBLISH', ARGV[7], ARGV[8] .. '[null,"p:' .. offset .. '",' .. ARGV[9])
return {epoch, offset}
"""

# KEYS: meta, stream.  ARGV: a new epoch, since, limit ("": none; "0": no
# entries, only the position), max_count (0: none).  Returns the epoch, the
# last offset, and the retained entries after since (the newest `limit` of
# them, newest first, when limited).
_READ: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', 0)
end
local last = redis.call('HGET', KEYS[1], 'last')
local since = tonumber(ARGV[2])
local kept = tonumber(ARGV[4])
if kept > 0 and since < tonumber(last) - kept then since = tonumber(last) - kept end
local entries = {}
if since < tonumber(last) and ARGV[3] ~= '0' then
  local start = string.format('%d', since + 1) .. '-0'
  if ARGV[3] == '' then
    entries = redis.call('XRANGE', KEYS[2], start, last .. '-0')
  else
    entries = redis.call('XREVRANGE', KEYS[2], last .. '-0', start, 'COUNT', ARGV[3])
  end
end
return {epoch, last, entries}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHistory:
    """History in Redis Streams, for an app served by several nodes.

    Args:
        hub: The app's :class:`~peregrine_rt.RedisHub` (its Redis, prefix and
            timeout are used; publications are delivered on its channels),
            or a Redis URL (then ``prefix`` and ``timeout`` apply, and must
            match the RedisHub of the servers that deliver).
        prefix: The namespace of keys and channels, with a URL.
        timeout: Seconds allowed for each call to Redis, with a URL.
        max_count: Publications kept per topic (None: no limit).
        max_age: Seconds a publication is kept (None: no limit).
        clock: The time source (UNIX seconds), for tests.

    Resource handling:
        :meth:`run` holds the connection pool (start it in the server's
        nursery); calls made while it is not running raise
        ``trio.ClosedResourceError``.

    Error handling:
        Redis unreachable or too slow: :class:`~peregrine_rt.exceptions.HubUnavailable`.
    """

    delivers = True

    def __init__(
        self,
        hub: RedisHub | str,
        *,
        prefix: str = "peregrine:",
        timeout: float = 1.0,
        max_count: int | None = DEFAULT_MAX_COUNT,
        max_age: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_retention(max_count, max_age)
        if isinstance(hub, str):
            hub = RedisHub(hub, prefix=prefix, timeout=timeout)
        self.hub = hub
        self.max_count = max_count
        self.max_age = max_age
        self._clock = clock
        hub.client()  # refuses a Redis Cluster URL now, not at run()
        # (client, (append script, read script)) of each run() under way
        self._runs: list[tuple[Redis[str], tuple[Script[str], Script[str]]]] = []

    def __repr__(self) -> str:
        return (
            f"RedisHistory({self.hub.url!r}, prefix={self.hub.prefix!r}, "
            f"max_count={self.max_count!r}, max_age={self.max_age!r})"
        )

    def _keys(self, topic: str) -> list[str]:
        base = f"{self.hub.prefix}history:{{{topic}}}:"
        return [base + "m", base + "s"]

    def channel(self, topic: str) -> str:
        """The Redis channel the append script publishes a publication of ``topic`` on."""
        return self.hub.prefix + hub_topic(topic)

    def _horizon(self, now: float) -> float | None:
        return now - self.max_age if self.max_age is not None else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold a connection pool to Redis until cancelled.

        Runs may overlap (one backend shared by two servers of one process):
        each holds a pool of its own, and calls use the newest one running.
        """
        client: Redis[str] = self.hub.client(decode_responses=True)
        async with client:
            running = (client, (client.register_script(_APPEND), client.register_script(_READ)))
            self._runs.append(running)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._runs.remove(running)

    def _running(self) -> tuple[Redis[str], tuple[Script[str], Script[str]]]:
        if not self._runs:
            raise trio.ClosedResourceError("RedisHistory is not running: start its run() first")
        return self._runs[-1]

    async def _call(self, what: str, topic: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` within the timeout; Redis failing raises HubUnavailable."""
        client, _ = self._running()
        timeout = self.hub.timeout
        try:
            with trio.fail_after(timeout):
                return await call()
        except trio.TooSlowError as exc:
            # The command still waits for its reply on a pooled connection.
            client.connection_pool.disconnect()
            why = f"no answer within {timeout:g} s"
            raise HubUnavailable(f"history {what} {topic!r}: {why}", topic, 0) from exc
        except _ERRORS as exc:
            raise HubUnavailable(f"history {what} {topic!r}: {exc}", topic, 0) from exc

    async def _read(
        self, topic: str, since: int, limit: int | None
    ) -> tuple[Position, list[Publication]]:
        script = self._running()[1][1]
        args = [
            new_epoch(),
            str(since),
            "" if limit is None else str(limit),
            str(self.max_count or 0),
        ]
        keys = self._keys(topic)
        reply: Any = await self._call("read", topic, lambda: script(keys=keys, args=args))
        epoch, last, entries = reply
        position = Position(int(last), _text(epoch))
        horizon = self._horizon(self._clock())
        floor = position.offset - self.max_count if self.max_count is not None else 0
        pubs = []
        for entry_id, fields in entries:
            offset = int(_text(entry_id).partition("-")[0])
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            when = float(values["t"])
            if offset > floor and (horizon is None or when > horizon):
                pubs.append(Publication(offset, values["e"], json.loads(values["p"]), when))
        if limit is not None:
            pubs.reverse()  # XREVRANGE: newest first
        return position, pubs

    async def append(
        self, topic: str, event: str, payload: Any, *, sender: str | None = None
    ) -> Publication:
        """Store, number and deliver a publication in one script; return it.

        With ``sender`` (a connection id of the Channels layer) the hub
        message is ``!<sender>\\n<frame>``: delivered to every member but
        that connection.

        Raises:
            TypeError: ``payload`` is not JSON-able.
            HubUnavailable: Redis failed or was too slow (the publication may
                or may not have been appended if the connection dropped
                after sending the script).
        """
        text = dumps(payload)
        tail = dumps([topic, event, payload])[1:]  # '"topic","event",payload]'
        now = self._clock()
        horizon = self._horizon(now)
        args: list[str | bytes] = [
            new_epoch(),
            event,
            text,
            repr(now),
            str(self.max_count or 0),
            "" if horizon is None else repr(horizon),
            self.channel(topic),
            HISTORY_NODE_ID + b"t" + (b"" if sender is None else f"!{sender}\n".encode()),
            tail,
        ]
        script = self._running()[1][0]
        keys = self._keys(topic)
        reply: Any = await self._call("append", topic, lambda: script(keys=keys, args=args))
        return Publication(int(reply[1]), event, payload, now)

    async def history(
        self, topic: str, *, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        """The retained publications with an offset above ``since``, oldest first.

        ``limit`` keeps the newest ``limit`` of those (still oldest first).
        """
        check_query(since, limit)
        return (await self._read(topic, since or 0, limit))[1]

    async def position(self, topic: str) -> Position:
        """The topic's last offset and epoch (an epoch is drawn if Redis has none)."""
        return (await self._read(topic, 0, 0))[0]

    async def recover(self, topic: str, offset: int, epoch: str) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed (see ``Recovery``)."""
        if offset < 0:
            raise ValueError(f"a recovery offset is >= 0, not {offset}")
        position, pubs = await self._read(topic, offset, None)
        return recovery(position, pubs, offset, epoch)

    async def aclose(self) -> None:
        """Nothing beyond :meth:`run`'s pool, which its cancellation closes."""
        await trio.lowlevel.checkpoint()
