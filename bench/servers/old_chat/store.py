"""Where the chat keeps what must outlive a connection: messages, rooms, presence.

Two stores with one interface; :func:`make_store` picks the one that fits the
server's hub.

* :class:`MemoryStore` (the in-memory hub, one process): dicts and lists.
* :class:`RedisStore` (a :class:`~peregrine_rt.RedisHub`, several processes or
  machines): a stream per room, a counter per room, a set of rooms, a hash per
  room for presence.  Every node then agrees on ids, order and history.

Each has ``nicks``, who holds which nick (``nicks.py``).

Message ids are integers, per room, one more than the previous one (dense),
and the first id of a room is the time it got its first message in
microseconds.  So ids keep growing across a restart of an in-memory server
(or of a Redis that lost its data): a client that saw id N before the restart
asks for "after N" and gets exactly the new messages, never an old id reused.

How a message is posted is the heart of "nothing lost, nothing twice":

* in memory, :meth:`MemoryStore.post` assigns the id, appends the message and
  delivers it on the hub (``publish_local``) with no ``await`` in between, so
  the order of ids is the order of delivery;
* with Redis, one Lua script increments the counter, adds the message to the
  room's stream (``XADD`` with the id) and ``PUBLISH``-es it on the hub's
  channel, atomically.  Redis runs scripts one at a time, so every node's
  subscription receives a room's messages in id order.  The script publishes
  under a node id that is no node's (:data:`STORE_NODE_ID`), so the posting
  node too receives its message from Redis, in that same order.

When Redis fails (see ``docs/redis.rst``, "The chat example: acknowledged
means delivered or recoverable", and "High availability"):

* every call to Redis has a deadline (the hub's ``timeout``, 1 s by
  default); one that fails or times out raises
  :class:`~peregrine_rt.HubUnavailable`, and a timed-out call drops every
  connection of the pool, so none is reused with a reply still owed;
* a post whose script answered is *acknowledged*: it is in the stream, or
  this node keeps it (:class:`Unconfirmed`) until it comes back from Redis
  or has been re-appended after a restart;
* when the hub's link comes back to a Redis that restarted, or to another
  server (a new ``run_id``: a replica that Sentinel promoted),
  :meth:`RedisStore.reseed` recreates the rooms this node knows, merges the
  messages it keeps (unconfirmed, and those seen in the last ``RECENT``
  seconds, which a promoted replica may lack) into the streams with their
  ids, and enters its connections' presence again;
* a post never reuses an id this node has seen: the script gets the highest
  id the node knows for the room and jumps the counter past it (a promoted
  replica's counter may be behind).

The store talks to Redis through :meth:`RedisHub.client
<peregrine_rt.RedisHub.client>`: the hub's URL (one server, or Sentinel
following the primary through failovers), its timeout, no retries.  A Redis
Cluster URL is refused: the scripts below read keys of several rooms and of
the node registry, which a cluster would spread across hash slots.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import trio

from peregrine_rt import Hub, HubUnavailable
from peregrine_rt.mixins import dumps

from .nicks import NICK_HOLD, SCRIPTS, MemoryNicks, RedisNicks
from .resilience import HEAD, Unconfirmed

T = TypeVar("T")

log = logging.getLogger("examples.chat")

HISTORY = 100
"""Messages sent on join (the last ones of the room)."""
MAX_RESUME = 1000
"""At most this many missed messages are sent on resume (the newest ones)."""
KEEP = 10_000
"""Messages kept per room (older ones are trimmed)."""
MSG_TOPIC = "chat.msg:"
"""Hub topic of a room's messages (``chat.msg:lobby``)."""
ROOM_TOPIC = "room:"
"""Hub topic of a room's presence and typing events (RoomsMixin's ``room_prefix``)."""
ROOMS_TOPIC = "chat.rooms"
"""Hub topic of the room list."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def first_id(after: int = 0) -> int:
    """The first message id of a room: now, in microseconds (and more than ``after``)."""
    return max(time.time_ns() // 1000, after + 1)


def _fields(room: str, nick: str, text: str, ref: str | int | None) -> dict[str, Any]:
    """A message but its type and id; with the ``ref`` of its ``say``, if any."""
    fields: dict[str, Any] = {"room": room, "nick": nick, "text": text, "ts": now_ms()}
    if ref is not None:
        fields["ref"] = ref
    return fields


def redis_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis (or the way to it) failing."""
    if isinstance(exc, (OSError, TimeoutError, trio.TooSlowError, HubUnavailable)):
        return True
    return type(exc).__module__.startswith(("coredis", "anyio"))


class MemoryStore:
    """History, rooms, presence and nicks of one process."""

    def __init__(self, hub: Hub, room_idle: float = 300.0, nick_hold: float = NICK_HOLD) -> None:
        self.hub = hub
        self.room_idle = room_idle
        self.nicks = MemoryNicks(nick_hold)
        self._ids: dict[str, list[int]] = {}
        self._messages: dict[str, list[str]] = {}
        self._rooms: set[str] = set()
        self._presence: dict[str, dict[str, str]] = {}
        self._touched: dict[str, float] = {}  # room -> when it was last used

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def on_link(self, callback: Callable[[bool], None]) -> None:
        """No link to watch: everything is in this process."""

    async def reseed(self, rooms: Iterable[str]) -> None:
        """Nothing to do: memory does not restart under a running server."""
        await trio.lowlevel.checkpoint()

    # -- messages -------------------------------------------------------------------

    async def post(
        self, room: str, nick: str, text: str, after: int = 0, ref: str | int | None = None
    ) -> int:
        """Store a message and deliver it to the room; its id (more than ``after``)."""
        ids = self._ids.setdefault(room, [])
        messages = self._messages.setdefault(room, [])
        mid = ids[-1] + 1 if ids else first_id(after)
        message = dumps({"type": "message", "id": mid, **_fields(room, nick, text, ref)})
        ids.append(mid)
        messages.append(message)
        if len(ids) > 2 * KEEP:
            del ids[:-KEEP], messages[:-KEEP]
        self.hub.publish_local(MSG_TOPIC + room, message)  # no await since the id
        self._touched[room] = trio.current_time()
        await trio.lowlevel.checkpoint()
        return mid

    async def history(self, room: str, since: int | None) -> list[dict[str, Any]]:
        """The last :data:`HISTORY` messages, or the newest MAX_RESUME after ``since``."""
        await trio.lowlevel.checkpoint()
        ids = self._ids.get(room, [])
        messages = self._messages.get(room, [])
        if since is None:
            start = max(0, len(ids) - HISTORY)
        else:
            start = max(bisect.bisect_right(ids, since), len(ids) - MAX_RESUME)
        return [json.loads(m) for m in messages[start:]]

    # -- rooms ----------------------------------------------------------------------

    async def rooms(self) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(self._rooms)

    async def add_room(self, room: str) -> bool:
        """Add ``room``; whether it is new."""
        await trio.lowlevel.checkpoint()
        self._touched[room] = trio.current_time()
        if room in self._rooms:
            return False
        self._rooms.add(room)
        return True

    async def expire_rooms(self, keep: Iterable[str]) -> list[str]:
        """Remove the rooms, but those in ``keep``, nobody was in for ``room_idle`` seconds."""
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        kept = set(keep)
        gone = [
            room
            for room in sorted(self._rooms)
            if room not in kept
            and room not in self._presence
            and now - self._touched.get(room, now) >= self.room_idle
        ]
        for room in gone:
            self._rooms.discard(room)
            for table in (self._ids, self._messages, self._touched):
                table.pop(room, None)
        return gone

    # -- presence -------------------------------------------------------------------

    async def enter(self, room: str, conn: str, nick: str) -> None:
        """``conn`` is in ``room`` as ``nick``: tell the room who is online."""
        await trio.lowlevel.checkpoint()
        self._presence.setdefault(room, {})[conn] = nick
        self._announce(room, "join", nick)

    async def exit(self, room: str, conn: str) -> None:
        await trio.lowlevel.checkpoint()
        nick = self._presence.get(room, {}).pop(conn, None)
        self._touched[room] = trio.current_time()
        if nick is not None:
            if not self._presence[room]:
                del self._presence[room]
            self._announce(room, "leave", nick)

    async def online(self, room: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        return sorted(set(self._presence.get(room, {}).values()))

    def _announce(self, room: str, event: str, nick: str) -> None:
        online = sorted(set(self._presence.get(room, {}).values()))
        event_data = {"type": "presence", "room": room, "event": event, "nick": nick}
        self.hub.publish_local(ROOM_TOPIC + room, dumps({**event_data, "online": online}))


# -- Redis --------------------------------------------------------------------------------

STORE_NODE_ID = b"examples.chat.db"
"""The node id the scripts publish under (RedisHub's payload: 16-byte node id,
``t``, UTF-8 text), so that every node, the posting one included, delivers it."""
assert len(STORE_NODE_ID) == 16

NODE_TTL_MS = 15_000
"""A node's liveness key expires this long after its last heartbeat."""
HEARTBEAT = 5.0
"""Seconds between heartbeats (refresh the liveness key, drop dead nodes' presence)."""

# KEYS: counter, stream, room's touch key.  ARGV: first id, JSON before the id,
# JSON after it, max length, channel, node id, room idle time (ms), the highest
# id the node knows (the counter jumps past it: a promoted replica may lag).
_POST = """
local id = redis.call('INCR', KEYS[1])
if id == 1 or id <= tonumber(ARGV[8]) then
  id = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], ARGV[1])
end
local sid = string.format('%.0f', id)
local message = ARGV[2] .. sid .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], sid .. '-0', 'm', message)
redis.call('PUBLISH', ARGV[5], ARGV[6] .. 't' .. message)
redis.call('SET', KEYS[3], '1', 'PX', ARGV[7])
return sid
"""

# After Redis restarted: merge messages this node keeps into the room's stream,
# with their ids, and recreate the room.  KEYS: counter, stream, rooms set,
# touch key.  ARGV: room, idle time (ms), max length, then id, message pairs.
_RESEED = """
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
local missing = false
for i = 4, #ARGV, 2 do
  if #redis.call('XRANGE', KEYS[2], ARGV[i] .. '-0', ARGV[i] .. '-0') == 0 then
    missing = true
    break
  end
end
if not missing then return 0 end
local byid, ids = {}, {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  local sid = string.match(entry[1], '^(%d+)')
  byid[sid] = entry[2][2]
  table.insert(ids, sid)
end
for i = 4, #ARGV, 2 do
  if byid[ARGV[i]] == nil then
    byid[ARGV[i]] = ARGV[i + 1]
    table.insert(ids, ARGV[i])
  end
end
table.sort(ids, function(a, b) return tonumber(a) < tonumber(b) end)
redis.call('DEL', KEYS[2])
for _, sid in ipairs(ids) do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], sid .. '-0', 'm', byid[sid])
end
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ids[#ids]) then
  redis.call('SET', KEYS[1], ids[#ids])
end
return #ids
"""
# Who is online in a room, dropping the entries of nodes whose liveness key
# expired.  KEYS: presence hash.  ARGV: node key prefix.  Returns the JSON list
# and how many entries were dropped.
_ONLINE = """
local function online(hash, node_prefix)
  local entries = redis.call('HGETALL', hash)
  local alive, seen, nicks, dropped = {}, {}, {}, 0
  for i = 1, #entries, 2 do
    local node = string.match(entries[i], '^([^:]*):')
    if alive[node] == nil then
      alive[node] = redis.call('EXISTS', node_prefix .. node) == 1
    end
    if alive[node] then
      if not seen[entries[i + 1]] then
        seen[entries[i + 1]] = true
        table.insert(nicks, entries[i + 1])
      end
    else
      redis.call('HDEL', hash, entries[i])
      dropped = dropped + 1
    end
  end
  table.sort(nicks)
  local quoted = {}
  for i, nick in ipairs(nicks) do quoted[i] = cjson.encode(nick) end
  return '[' .. table.concat(quoted, ',') .. ']', dropped
end
"""

# KEYS: presence hash, node key, room's touch key.  ARGV: node key prefix,
# field, nick ('' to leave), event, JSON before the online list, channel, node
# id, node TTL, room idle time (ms).  With event 'sync', publishes only if dead
# entries were dropped.
_PRESENCE = (
    _ONLINE
    + """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[8])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[9])
local was = redis.call('HGET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[2])
end
local list, dropped = online(KEYS[1], ARGV[1])
if ARGV[4] == 'sync' and dropped == 0 then return list end
if ARGV[4] == 'leave' and not was then return list end
redis.call('PUBLISH', ARGV[6], ARGV[7] .. 't' .. ARGV[5] .. list .. '}')
return list
"""
)

# Remove the rooms nobody is in whose touch key expired.  KEYS: rooms set.
# ARGV: key prefix (``<prefix>chat:``), then the rooms to keep.  Returns the rooms removed.
_EXPIRE = (
    _ONLINE
    + """
local gone, keep = {}, {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not keep[room] and redis.call('EXISTS', ARGV[1] .. 't:' .. room) == 0 then
    online(ARGV[1] .. 'p:' .. room, ARGV[1] .. 'node:')
    if redis.call('HLEN', ARGV[1] .. 'p:' .. room) == 0 then
      redis.call('SREM', KEYS[1], room)
      redis.call('DEL', ARGV[1] .. 's:' .. room, ARGV[1] .. 'n:' .. room)
      table.insert(gone, room)
    end
  end
end
table.sort(gone)
return gone
"""
)


class RedisStore:
    """History in Redis streams, rooms in a set, presence in hashes: shared by every node.

    Keys (under the hub's prefix, ``peregrine:`` by default):
    ``chat:n:<room>`` (the id counter), ``chat:s:<room>`` (the stream of
    messages, trimmed to about :data:`KEEP`), ``chat:rooms`` (a set),
    ``chat:p:<room>`` (a hash: ``<node>:<connection>`` → nick),
    ``chat:t:<room>`` (the room is in use; expires ``room_idle`` after the last
    post, presence change or heartbeat), ``chat:node:<node>`` (this node is
    alive; expires :data:`NODE_TTL_MS` after the last heartbeat) and
    ``chat:nick:<nick>`` (the session id holding the nick: ``nicks.py``).

    Presence across nodes: each connection in a room is one field of the
    room's hash, and each presence change runs a script that updates the hash,
    computes the list of nicks online and publishes it to the room, atomically
    (so every node sees the lists in the same order).  Entries of a node
    whose liveness key expired (it crashed, or lost Redis) are dropped by
    whichever node looks next: on every change, and every :data:`HEARTBEAT`
    seconds for the rooms each node has people in.

    Every call has a deadline of ``timeout`` seconds and raises
    :class:`~peregrine_rt.HubUnavailable` when Redis fails or is too slow.
    """

    def __init__(self, hub: Any, room_idle: float = 300.0, nick_hold: float = NICK_HOLD) -> None:
        self.hub = hub
        try:
            self._redis = hub.client(decode_responses=True)
        except ValueError as exc:
            raise ValueError(f"the chat's Redis store cannot use this URL: {exc}") from exc
        self.url: str = hub.url
        self.prefix: str = hub.prefix
        self.timeout: float = hub.timeout
        self.room_idle = room_idle
        self.node = os.urandom(8).hex()
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._members: dict[str, dict[str, str]] = {}  # room -> connection -> nick, here
        self._unconfirmed: dict[str, Unconfirmed] = {}
        self._run_id: str | None = None
        ttl = NODE_TTL_MS / 1000
        self.nicks = RedisNicks(self._script, lambda nick: self._key("nick:", nick), nick_hold, ttl)

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}chat:{kind}{name}"

    def _channel(self, topic: str) -> str:
        # The RedisHub's channel of a hub topic.
        return self.prefix + topic

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connection pool to Redis and beat the heart; until cancelled."""
        client = self._redis
        async with client:
            self._client = client
            for name, script in (("post", _POST), ("presence", _PRESENCE)):
                self._scripts[name] = client.register_script(script)
            for name, script in (("reseed", _RESEED), ("expire", _EXPIRE), *SCRIPTS.items()):
                self._scripts[name] = client.register_script(script)
            task_status.started()
            try:
                while True:
                    await trio.sleep(HEARTBEAT)
                    try:
                        await self._heartbeat()
                    except HubUnavailable as exc:  # try again at the next beat
                        log.warning("chat heartbeat failed: %s", exc)
            finally:
                with trio.move_on_after(self.timeout) as cleanup:
                    cleanup.shield = True
                    try:
                        await client.delete([self._key("node:", self.node)])
                    except Exception:
                        pass

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()`` within ``timeout``; Redis failing raises HubUnavailable."""
        try:
            with trio.fail_after(self.timeout):
                return await call()
        except trio.TooSlowError as exc:
            # The command still waits for its reply on a connection that other
            # calls share: drop them all, the pool makes new ones.
            self._client.connection_pool.disconnect()
            why = f"no answer within {self.timeout:g} s"
            raise HubUnavailable(f"chat store: {what}: {why}", what, 0) from exc
        except Exception as exc:
            if not redis_error(exc) or isinstance(exc, HubUnavailable):
                raise
            if type(exc).__name__ == "ReadOnlyError":
                # A primary demoted to replica: new connections ask the sentinels again.
                self._client.connection_pool.disconnect()
            raise HubUnavailable(f"chat store: {what}: {exc}", what, 0) from exc

    async def _script(self, name: str, keys: list[str], args: list[str]) -> Any:
        return await self._call(name, lambda: self._scripts[name](keys=keys, args=args))

    async def _heartbeat(self) -> None:
        if not self._members:
            node_key = self._key("node:", self.node)
            await self._call("heartbeat", lambda: self._client.set(node_key, "1", px=NODE_TTL_MS))
        for room in list(self._members):
            await self._presence_script(room, "", "", "sync")
        await self.nicks.refresh()

    # -- Redis restarts -------------------------------------------------------------

    def on_link(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(restarted)`` whenever the hub's link to Redis comes up again.

        ``restarted``: Redis has a new ``run_id``, so it lost what it held (call
        :meth:`reseed`).  Otherwise it kept everything: the unconfirmed messages
        are in their streams, and are forgotten.
        """
        self._run_id = self.hub.run_id

        def linked(run_id: str) -> None:
            restarted = self._run_id is not None and run_id != self._run_id
            self._run_id = run_id
            if not restarted:
                for unconfirmed in self._unconfirmed.values():
                    unconfirmed.messages.clear()
            callback(restarted)

        self.hub.on_link(linked)

    async def reseed(self, rooms: Iterable[str]) -> None:
        """After Redis restarted: recreate ``rooms``, re-append what is unconfirmed, re-enter."""
        await self.nicks.refresh()  # first: the nicks in use here are theirs again
        for room in sorted({*rooms, *self._unconfirmed, *self._members}):
            unconfirmed = self._unconfirmed.get(room)
            pairs = sorted(unconfirmed.kept().items()) if unconfirmed else []
            keys = [self._key("n:", room), self._key("s:", room), self._key("rooms")]
            args = [room, str(int(self.room_idle * 1000)), str(KEEP)]
            for mid, message in pairs:
                args += [str(mid), message]
            await self._script("reseed", [*keys, self._key("t:", room)], args)
            if unconfirmed is not None:
                for mid, _ in pairs:
                    unconfirmed.messages.pop(mid, None)  # re-appended
        for room, members in list(self._members.items()):
            for conn, nick in list(members.items()):
                await self._presence_script(room, f"{self.node}:{conn}", nick, "join")

    # -- messages -------------------------------------------------------------------

    async def post(
        self, room: str, nick: str, text: str, after: int = 0, ref: str | int | None = None
    ) -> int:
        """Append a message and publish it; its id (more than ``after``)."""
        unconfirmed = self._unconfirmed.get(room)
        if unconfirmed is None:  # subscribed before the first post, to see it back
            unconfirmed = self._unconfirmed[room] = Unconfirmed(room)
            self.hub.subscribe(unconfirmed, MSG_TOPIC + room)
        head = HEAD
        tail = "," + dumps(_fields(room, nick, text, ref))[1:]
        known = max(after, unconfirmed.seen, *unconfirmed.messages)
        sid = await self._script(
            "post",
            [self._key("n:", room), self._key("s:", room), self._key("t:", room)],
            [
                str(first_id(known)),
                head,
                tail,
                str(KEEP),
                self._channel(MSG_TOPIC + room),
                STORE_NODE_ID.decode(),
                str(int(self.room_idle * 1000)),
                str(known),
            ],
        )
        unconfirmed.add(int(sid), f"{head}{sid}{tail}")
        return int(sid)

    async def history(self, room: str, since: int | None) -> list[dict[str, Any]]:
        stream = self._key("s:", room)
        client = self._client
        if since is None:
            entries = list(
                await self._call(
                    "history", lambda: client.xrevrange(stream, "+", "-", count=HISTORY)
                )
            )
            entries.reverse()
        else:
            start = f"{since + 1}-0"
            entries = list(
                await self._call(
                    "history", lambda: client.xrange(stream, start, "+", count=MAX_RESUME + 1)
                )
            )
            if len(entries) > MAX_RESUME:  # too many missed: the newest MAX_RESUME
                entries = list(
                    await self._call(
                        "history", lambda: client.xrevrange(stream, "+", start, count=MAX_RESUME)
                    )
                )
                entries.reverse()
        return [json.loads(e.field_values["m"]) for e in entries]

    # -- rooms ----------------------------------------------------------------------

    async def rooms(self) -> list[str]:
        return sorted(await self._call("rooms", lambda: self._client.smembers(self._key("rooms"))))

    async def add_room(self, room: str) -> bool:
        touch = self._key("t:", room)
        ms = int(self.room_idle * 1000)
        await self._call("add_room", lambda: self._client.set(touch, "1", px=ms))
        return bool(
            await self._call("add_room", lambda: self._client.sadd(self._key("rooms"), [room]))
        )

    async def expire_rooms(self, keep: Iterable[str]) -> list[str]:
        """Remove the rooms, but those in ``keep``, nobody was in for ``room_idle`` seconds."""
        args = [self._key(""), *keep]
        gone = list(await self._script("expire", [self._key("rooms")], args))
        for room in gone:
            unconfirmed = self._unconfirmed.pop(room, None)
            if unconfirmed is not None:
                self.hub.unsubscribe(unconfirmed, MSG_TOPIC + room)
        return gone

    # -- presence -------------------------------------------------------------------

    async def enter(self, room: str, conn: str, nick: str) -> None:
        self._members.setdefault(room, {})[conn] = nick
        await self._presence_script(room, f"{self.node}:{conn}", nick, "join")

    async def exit(self, room: str, conn: str) -> None:
        members = self._members.get(room, {})
        members.pop(conn, None)
        if not members:
            self._members.pop(room, None)
        await self._presence_script(room, f"{self.node}:{conn}", "", "leave")

    async def online(self, room: str) -> list[str]:
        return json.loads(await self._presence_script(room, "", "", "sync"))  # type: ignore[no-any-return]

    async def _presence_script(self, room: str, field: str, nick: str, event: str) -> str:
        head = dumps({"type": "presence", "room": room, "event": event, "nick": nick})
        result = await self._script(
            "presence",
            [self._key("p:", room), self._key("node:", self.node), self._key("t:", room)],
            [
                self._key("node:"),
                field or f"{self.node}:-",
                nick,
                event,
                head[:-1] + ',"online":',
                self._channel(ROOM_TOPIC + room),
                STORE_NODE_ID.decode(),
                str(NODE_TTL_MS),
                str(int(self.room_idle * 1000)),
            ],
        )
        return str(result)


def make_store(
    hub: Hub, room_idle: float = 300.0, nick_hold: float = NICK_HOLD
) -> MemoryStore | RedisStore:
    """A :class:`RedisStore` when ``hub`` is a RedisHub, else a :class:`MemoryStore`."""
    if type(hub) is Hub:
        return MemoryStore(hub, room_idle, nick_hold)
    from peregrine_rt import RedisHub  # needs coredis

    if isinstance(hub, RedisHub):
        return RedisStore(hub, room_idle, nick_hold)
    return MemoryStore(hub, room_idle, nick_hold)
