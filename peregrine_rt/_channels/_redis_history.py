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
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
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

log = logging.getLogger("peregrine_rt.channels")

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

# Both scripts below start with this: the topic's epoch, drawn anew when Redis
# lost it, unless this node knew the topic (ARGV[k]: its epoch, ARGV[k+1]: the
# last offset it knew): then the epoch goes on and offsets continue past what
# it knew, so its clients recover instead of starting over; and a Redis that
# lags behind what the node knew (a replica promoted) skips past it.
_EPOCH: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[K] ~= '' then epoch = ARGV[K] else epoch = ARGV[1] end
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'last', tonumber(ARGV[K + 1]))
elseif epoch == ARGV[K] then
  if tonumber(redis.call('HGET', KEYS[1], 'last')) < tonumber(ARGV[K + 1]) then
    redis.call('HSET', KEYS[1], 'last', ARGV[K + 1])
  end
end
"""

# KEYS: meta, stream.  ARGV: a new epoch, event, payload, time, max_count (0:
# none), horizon ("" : no max_age), channel, hub header, frame tail, the
# epoch and last offset this node knew ("", 0: none), a deadline (Redis's
# clock, seconds; "": none).  Past the deadline it does nothing: the caller
# has given up and said so (a Redis frozen, then thawed, runs it late).
_APPEND: Final = (
    """
if ARGV[12] ~= '' then
  local now = redis.call('TIME')
  if tonumber(now[1]) + tonumber(now[2]) / 1000000 > tonumber(ARGV[12]) then
    return {'', 'late'}
  end
end
local K = 10"""
    + _EPOCH
    + """
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
)

# KEYS: meta, stream.  ARGV: a new epoch, since, limit ("": none; "0": no
# entries, only the position), max_count (0: none), the epoch and last offset
# this node knew.  Returns the epoch, the last offset, and the retained
# entries after since (the newest `limit` of them, newest first, when limited).
_READ: Final = (
    "local K = 5"
    + _EPOCH
    + """
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
)

# KEYS: meta, stream.  ARGV: epoch, last, max_count (0: none), then for each
# publication: offset, time, event, payload.  Puts back the ones the stream
# lacks, in offset order, if the topic is (again) in that epoch; returns how
# many (-1: the topic went on in another epoch).
_RESEED: Final = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'last', tonumber(ARGV[2]))
elseif epoch ~= ARGV[1] then
  return -1
elseif tonumber(redis.call('HGET', KEYS[1], 'last')) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'last', ARGV[2])
end
local missing = {}
for i = 4, #ARGV, 4 do
  local id = ARGV[i] .. '-0'
  if #redis.call('XRANGE', KEYS[2], id, id) == 0 then missing[#missing + 1] = i end
end
if #missing == 0 then return 0 end
local entries = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  entries[#entries + 1] = {tonumber(string.match(entry[1], '^(%d+)')), entry[2]}
end
for _, i in ipairs(missing) do
  local fields = {'t', ARGV[i + 1], 'e', ARGV[i + 2], 'p', ARGV[i + 3]}
  entries[#entries + 1] = {tonumber(ARGV[i]), fields}
end
table.sort(entries, function(a, b) return a[1] < b[1] end)
redis.call('DEL', KEYS[2])
for _, entry in ipairs(entries) do
  redis.call('XADD', KEYS[2], string.format('%d', entry[1]) .. '-0', unpack(entry[2]))
end
if tonumber(ARGV[3]) > 0 then redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[3]) end
return #missing
"""

RECENT: Final = 30.0
"""Seconds a node keeps its own appends, to put back into a Redis that lost them."""

# Redis's clock (coredis's TIME reply parsing loses the microseconds).
_TIME: Final = "return redis.call('TIME')"

SKEW_EVERY: Final = 60.0
"""Seconds between two readings of Redis's clock (an append's deadline is in it)."""

MAX_KNOWN: Final = 100_000
"""Topics whose epoch and last offset a node remembers (the least recent are forgotten)."""


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
        # (client, (append script, read script, reseed script)) of each run() under way
        self._runs: list[tuple[Redis[str], tuple[Script[str], ...]]] = []
        # What this node knows, to put back into a Redis that lost it (see _reseed):
        self._known: dict[str, tuple[str, int]] = {}  # topic: (epoch, last offset)
        self._recent: dict[str, deque[tuple[int, float, str, str]]] = {}  # own appends
        self._run_id: str | None = hub.run_id or None
        self._settled = trio.Event()
        self._settled.set()
        self._reseed_wanted = trio.Event()
        self._skew: float | None = None  # Redis's clock minus this node's, when measured
        hub.on_link(self.relinked)  # Channels also calls it (a history built from a URL)

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
        async with client, trio.open_nursery() as nursery:
            scripts = tuple(client.register_script(s) for s in (_APPEND, _READ, _RESEED))
            running = (client, scripts)
            self._runs.append(running)
            try:
                nursery.start_soon(self._reseed_after_restarts)
                nursery.start_soon(self._measure_skew, client.register_script(_TIME))
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._runs.remove(running)

    # -- a Redis that lost data ------------------------------------------------------

    def relinked(self, run_id: str) -> None:
        """The hub's link is up (``RedisHub.on_link``): a new ``run_id`` may have lost data."""
        if self._run_id is not None and run_id != self._run_id and self._settled.is_set():
            self._settled = trio.Event()
            self._reseed_wanted.set()
        self._run_id = run_id

    @property
    def clock_known(self) -> bool:
        """Whether Redis's clock was read, so that appends carry a deadline (see :meth:`append`)."""
        return self._skew is not None

    async def settled(self) -> None:
        """Wait until what this node knows is back in a Redis that restarted or failed over.

        The Channels layer waits for it before catching its members up.
        """
        await self._settled.wait()

    async def _measure_skew(self, redis_time: Script[str]) -> None:
        """Keep :attr:`_skew` (what an append's deadline needs) while running."""
        while True:
            try:
                before = time.time()
                reply: Any = await self._call("clock", "", redis_time)
                now = int(reply[0]) + int(reply[1]) / 1e6
                self._skew = now - (before + time.time()) / 2
            except HubUnavailable:
                pass  # appends go without a deadline until it is measured
            await trio.sleep(SKEW_EVERY)

    async def _reseed_after_restarts(self) -> None:
        while True:
            await self._reseed_wanted.wait()
            self._reseed_wanted = trio.Event()
            try:
                await self.reseed()
            except HubUnavailable as exc:  # the next link-up tries again
                log.warning("putting history back into Redis failed: %s", exc)
            finally:
                self._settled.set()

    async def reseed(self) -> int:
        """Put back what this node knows into a Redis that lost it; the publications put back.

        For each topic the node knew: its epoch and last offset (so that the
        topic goes on in its epoch and clients recover rather than start
        over), and the node's own appends of the last ``RECENT`` (30) seconds
        the stream lacks (so that no acknowledged publication is lost with a
        Redis restarted empty, or with a replica promoted before it had them).
        """
        script = self._running()[1][2]
        horizon = self._clock() - RECENT
        restored = 0
        for topic, (epoch, last) in list(self._known.items()):
            recent = self._recent.get(topic, ())
            args: list[str] = [epoch, str(last), str(self.max_count or 0)]
            for offset, when, event, text in recent:
                if when > horizon:
                    args += [str(offset), repr(when), event, text]
            call = partial(script, keys=self._keys(topic), args=args)
            put: Any = await self._call("reseed", topic, call)
            restored += max(0, int(put))
        if restored:
            log.warning("Redis had lost %d publications: put back", restored)
        return restored

    def seen(self, topic: str, epoch: str, offset: int) -> None:
        """A publication of ``topic`` this node delivered (the Channels layer tells it).

        So the node knows the topic's last offset even when another node
        appended it, and puts that back if Redis loses the topic.
        """
        self._know(topic, epoch, offset)

    def _know(self, topic: str, epoch: str, last: int) -> None:
        known = self._known.get(topic)
        if known is not None and known[0] == epoch and known[1] >= last:
            return  # nothing new (the node's own append, delivered back to it)
        known = self._known.pop(topic, None)
        if known is not None and known[0] == epoch:
            last = max(last, known[1])
        self._known[topic] = (epoch, last)
        if len(self._known) > MAX_KNOWN:
            forgotten = next(iter(self._known))
            del self._known[forgotten]
            self._recent.pop(forgotten, None)

    def _known_args(self, topic: str) -> list[str]:
        epoch, last = self._known.get(topic, ("", 0))
        return [epoch, str(last)]

    def _running(self) -> tuple[Redis[str], tuple[Script[str], ...]]:
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
            *self._known_args(topic),
        ]
        keys = self._keys(topic)
        reply: Any = await self._call("read", topic, lambda: script(keys=keys, args=args))
        epoch, last, entries = reply
        position = Position(int(last), _text(epoch))
        self._know(topic, position.epoch, position.offset)
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
            *self._known_args(topic),
            # Half the timeout: an append that runs in time still has half of
            # it for its answer, so "failed" means it was not stored.
            "" if self._skew is None else repr(time.time() + self._skew + self.hub.timeout / 2),
        ]
        script = self._running()[1][0]
        keys = self._keys(topic)
        reply: Any = await self._call("append", topic, lambda: script(keys=keys, args=args))
        if _text(reply[1]) == "late":
            why = "Redis ran it after its deadline: not stored"
            raise HubUnavailable(f"history append {topic!r}: {why}", topic, 0)
        offset = int(reply[1])
        self._know(topic, _text(reply[0]), offset)
        recent = self._recent.get(topic)
        if recent is None:
            recent = self._recent[topic] = deque(maxlen=self.max_count or None)
        recent.append((offset, now, event, text))
        while recent and recent[0][1] <= now - RECENT:
            recent.popleft()
        return Publication(offset, event, payload, now)

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
