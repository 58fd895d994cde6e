"""Where the chat keeps what must outlive a connection: messages, rooms, presence.

Two stores with one interface; :func:`make_store` picks the one that fits the
server's hub.

* :class:`MemoryStore` (the in-memory hub, one process): dicts and lists.
* :class:`RedisStore` (a :class:`~peregrine_rt.RedisHub`, several processes or
  machines): a stream per room, a counter per room, a set of rooms, a hash per
  room for presence.  Every node then agrees on ids, order and history.

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
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from typing import Any

import trio

from peregrine_rt import Hub
from peregrine_rt.mixins import dumps

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


def first_id() -> int:
    """The first message id of a room: now, in microseconds."""
    return time.time_ns() // 1000


class MemoryStore:
    """History, rooms and presence of one process."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._ids: dict[str, list[int]] = {}
        self._messages: dict[str, list[str]] = {}
        self._rooms: set[str] = set()
        self._presence: dict[str, dict[str, str]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    # -- messages -------------------------------------------------------------------

    async def post(self, room: str, nick: str, text: str) -> int:
        """Store a message and deliver it to the room; its id."""
        ids = self._ids.setdefault(room, [])
        messages = self._messages.setdefault(room, [])
        mid = ids[-1] + 1 if ids else first_id()
        message = dumps(
            {"type": "message", "id": mid, "room": room, "nick": nick, "text": text, "ts": now_ms()}
        )
        ids.append(mid)
        messages.append(message)
        if len(ids) > 2 * KEEP:
            del ids[:-KEEP], messages[:-KEEP]
        self.hub.publish_local(MSG_TOPIC + room, message)  # no await since the id
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
        if room in self._rooms:
            return False
        self._rooms.add(room)
        return True

    # -- presence -------------------------------------------------------------------

    async def enter(self, room: str, conn: str, nick: str) -> None:
        """``conn`` is in ``room`` as ``nick``: tell the room who is online."""
        await trio.lowlevel.checkpoint()
        self._presence.setdefault(room, {})[conn] = nick
        self._announce(room, "join", nick)

    async def exit(self, room: str, conn: str) -> None:
        await trio.lowlevel.checkpoint()
        nick = self._presence.get(room, {}).pop(conn, None)
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

# KEYS: counter, stream.  ARGV: first id, JSON before the id, JSON after it,
# max length, channel, node id.
_POST = """
local id = redis.call('INCR', KEYS[1])
if id == 1 then
  id = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], ARGV[1])
end
local sid = string.format('%.0f', id)
local message = ARGV[2] .. sid .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], sid .. '-0', 'm', message)
redis.call('PUBLISH', ARGV[5], ARGV[6] .. 't' .. message)
return sid
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

# KEYS: presence hash, node key.  ARGV: node key prefix, field, nick ('' to
# leave), event, JSON before the online list, channel, node id, node TTL.
# With event 'sync', publishes only if dead entries were dropped.
_PRESENCE = (
    _ONLINE
    + """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[8])
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


class RedisStore:
    """History in Redis streams, rooms in a set, presence in hashes: shared by every node.

    Keys (under the hub's prefix, ``peregrine:`` by default):
    ``chat:n:<room>`` (the id counter), ``chat:s:<room>`` (the stream of
    messages, trimmed to about :data:`KEEP`), ``chat:rooms`` (a set),
    ``chat:p:<room>`` (a hash: ``<node>:<connection>`` → nick) and
    ``chat:node:<node>`` (this node is alive; expires :data:`NODE_TTL_MS`
    after the last heartbeat).

    Presence across nodes: each connection in a room is one field of the
    room's hash, and each presence change runs a script that updates the hash,
    computes the list of nicks online and publishes it to the room, atomically
    (so every node sees the lists in the same order).  Entries of a node
    whose liveness key expired (it crashed, or lost Redis) are dropped by
    whichever node looks next: on every change, and every :data:`HEARTBEAT`
    seconds for the rooms each node has people in.
    """

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.url: str = hub.url
        self.prefix: str = hub.prefix
        self.node = os.urandom(8).hex()
        self._client: Any = None
        self._post: Any = None
        self._presence: Any = None
        self._local: dict[str, int] = {}  # rooms with people on this node -> how many

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}chat:{kind}{name}"

    def _channel(self, topic: str) -> str:
        # The RedisHub's channel of a hub topic.
        return self.prefix + topic

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connection pool to Redis and beat the heart; until cancelled."""
        import coredis  # noqa: PLC0415 - the redis extra

        async with coredis.Redis.from_url(self.url, decode_responses=True) as client:
            self._client = client
            self._post = client.register_script(_POST)
            self._presence = client.register_script(_PRESENCE)
            task_status.started()
            try:
                while True:
                    await trio.sleep(HEARTBEAT)
                    try:
                        await self._heartbeat()
                    except Exception as exc:  # Redis down: try again at the next beat
                        log.warning("chat heartbeat failed: %s", exc)
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    try:
                        await client.delete([self._key("node:", self.node)])
                    except Exception:
                        pass

    async def _heartbeat(self) -> None:
        if not self._local:
            await self._client.set(self._key("node:", self.node), "1", px=NODE_TTL_MS)
        for room in list(self._local):
            await self._presence_script(room, "", "", "sync")

    # -- messages -------------------------------------------------------------------

    async def post(self, room: str, nick: str, text: str) -> int:
        head = '{"type":"message","id":'
        tail = dumps({"room": room, "nick": nick, "text": text, "ts": now_ms()})
        sid = await self._post(
            keys=[self._key("n:", room), self._key("s:", room)],
            args=[
                str(first_id()),
                head,
                "," + tail[1:],
                str(KEEP),
                self._channel(MSG_TOPIC + room),
                STORE_NODE_ID.decode(),
            ],
        )
        return int(sid)

    async def history(self, room: str, since: int | None) -> list[dict[str, Any]]:
        stream = self._key("s:", room)
        if since is None:
            entries = list(await self._client.xrevrange(stream, "+", "-", count=HISTORY))
            entries.reverse()
        else:
            entries = list(
                await self._client.xrange(stream, f"{since + 1}-0", "+", count=MAX_RESUME + 1)
            )
            if len(entries) > MAX_RESUME:  # too many missed: the newest MAX_RESUME
                entries = list(
                    await self._client.xrevrange(stream, "+", f"{since + 1}-0", count=MAX_RESUME)
                )
                entries.reverse()
        return [json.loads(e.field_values["m"]) for e in entries]

    # -- rooms ----------------------------------------------------------------------

    async def rooms(self) -> list[str]:
        return sorted(await self._client.smembers(self._key("rooms")))

    async def add_room(self, room: str) -> bool:
        return bool(await self._client.sadd(self._key("rooms"), [room]))

    # -- presence -------------------------------------------------------------------

    async def enter(self, room: str, conn: str, nick: str) -> None:
        self._local[room] = self._local.get(room, 0) + 1
        await self._presence_script(room, f"{self.node}:{conn}", nick, "join")

    async def exit(self, room: str, conn: str) -> None:
        left = self._local.get(room, 1) - 1
        if left > 0:
            self._local[room] = left
        else:
            self._local.pop(room, None)
        await self._presence_script(room, f"{self.node}:{conn}", "", "leave")

    async def online(self, room: str) -> list[str]:
        return json.loads(await self._presence_script(room, "", "", "sync"))  # type: ignore[no-any-return]

    async def _presence_script(self, room: str, field: str, nick: str, event: str) -> str:
        head = dumps({"type": "presence", "room": room, "event": event, "nick": nick})
        result = await self._presence(
            keys=[self._key("p:", room), self._key("node:", self.node)],
            args=[
                self._key("node:"),
                field or f"{self.node}:-",
                nick,
                event,
                head[:-1] + ',"online":',
                self._channel(ROOM_TOPIC + room),
                STORE_NODE_ID.decode(),
                str(NODE_TTL_MS),
            ],
        )
        return str(result)


def make_store(hub: Hub) -> MemoryStore | RedisStore:
    """A :class:`RedisStore` when ``hub`` is a RedisHub, else a :class:`MemoryStore`."""
    if type(hub) is Hub:
        return MemoryStore(hub)
    from peregrine_rt import RedisHub  # noqa: PLC0415 - needs coredis

    if isinstance(hub, RedisHub):
        return RedisStore(hub)
    return MemoryStore(hub)
