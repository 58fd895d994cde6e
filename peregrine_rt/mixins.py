"""Handler mixins: rooms, JSON messages, presence, static files.

Each is a class to list among a handler's bases; they work together in one
class (``class Chat(PresenceMixin, JSONMixin, StaticMixin): ...``) and with
the handler's own methods.  Methods a mixin defines that the handler may also
define (``handle``, ``on_open``, ``on_close``) call ``super()`` so that every
class in the chain gets its turn: a handler that overrides them should do the
same (``await super().on_close(ws, code, reason)``).

Every mixin reaches the server's hub as ``self.hub`` (the server sets it
before ``startup()``), so what it publishes crosses processes when the hub is
a :class:`~peregrine_rt.RedisHub`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from ._hub import Hub
from ._json import dumps, loads
from ._upgrade import upgrade
from .exceptions import HubUnavailable, InvalidJSON
from .websocket import WebSocket

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response
    from ._static import DirServer

__all__ = ["HubMixin", "JSONMixin", "PresenceMixin", "RoomsMixin", "StaticMixin"]

error_log = logging.getLogger("peregrine_rt.error")


async def _super_call(obj: Any, cls: type, name: str, *args: Any) -> None:
    method = getattr(super(cls, obj), name, None)
    if method is not None:
        await method(*args)


class HubMixin:
    """Gives the handler ``self.hub``: the server's hub, set before ``startup()``.

    Methods a mixin requires from the handler are listed in
    ``_peregrine_requires`` (name → parameters after ``self``); ``Server()``
    checks them like the rest of the handler contract.

    The mixins publish through :meth:`_publish`: when a RedisHub cannot reach
    Redis, the message still reaches this process's sockets, the hub logs the
    outage and counts the message in ``hub.lost``, and the mixin carries on
    (a chat should not close every client because Redis restarts).
    """

    hub: Hub
    _peregrine_requires: ClassVar[dict[str, tuple[str, ...]]] = {}

    def attach_hub(self, hub: Hub) -> None:
        """Called by the server with its hub, before ``startup()``.

        Any handler may define ``attach_hub(self, hub)`` to be given the hub
        this way; this mixin keeps it as ``self.hub``.
        """
        self.hub = hub

    async def _publish(self, topic: str, message: str | bytes) -> int:
        try:
            return await self.hub.publish(topic, message)
        except HubUnavailable as exc:
            return exc.delivered


class JSONMixin(HubMixin):
    """Every message is JSON: ``on_message`` parses it and calls ``on_json(ws, data)``.

    A text message that is not JSON closes the socket with 1007 (invalid
    payload, reason ``invalid JSON``), and so does one whose arrays and
    objects nest deeper than ``Config.json_max_depth`` (64 by default; reason
    ``JSON nested deeper than 64 levels``), before Python's recursive parser
    sees it; each is one warning line on ``peregrine_rt.error``, without a
    traceback.  A binary message closes the socket with 1003 (unsupported
    data).  The handler must define ``async def on_json(self, ws, data)``.
    """

    _peregrine_requires: ClassVar[dict[str, tuple[str, ...]]] = {"on_json": ("ws", "data")}

    async def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        if not isinstance(message, str):
            await ws.close(1003, "messages are JSON text")
            return
        try:
            data = loads(message, ws.request.config.json_max_depth)
        except InvalidJSON as exc:
            reason = str(exc)
            error_log.warning("%r: closing with 1007: %s", ws, reason)
            # Malformed JSON keeps the short reason "invalid JSON" (where the parser
            # stopped is in the log line); too deep says the limit.
            await ws.close(1007, reason if reason.startswith("JSON nested") else "invalid JSON")
            return
        await self.on_json(ws, data)  # type: ignore[attr-defined]  # checked by Server()

    async def send_json(self, ws: WebSocket, data: Any) -> None:
        """Send ``data`` to ``ws`` as a JSON text message."""
        await ws.send(dumps(data))

    async def publish_json(self, topic: str, data: Any) -> int:
        """Publish ``data`` as JSON text to a hub topic (encoded once for all).

        Returns the local deliveries; see :class:`HubMixin` for a Redis outage.
        """
        return await self._publish(topic, dumps(data))


class RoomsMixin(HubMixin):
    """Rooms: named groups of sockets, on the hub (topic ``room_prefix + name``).

    ``await self.join(ws, "lobby")``, ``await self.leave(ws, "lobby")``,
    ``await self.broadcast("lobby", message)``; a socket leaves its rooms when
    it closes.  :meth:`members` and :meth:`rooms` see this process's sockets.
    """

    room_prefix: ClassVar[str] = "room:"

    async def join(self, ws: WebSocket, room: str) -> None:
        """Add ``ws`` to ``room`` (joining twice is joining once)."""
        ws.hub.subscribe(ws, self.room_prefix + room)

    async def leave(self, ws: WebSocket, room: str) -> None:
        """Remove ``ws`` from ``room``."""
        ws.hub.unsubscribe(ws, self.room_prefix + room)

    def rooms(self, ws: WebSocket) -> list[str]:
        """The rooms ``ws`` is in, sorted."""
        prefix = self.room_prefix
        return [t[len(prefix) :] for t in ws.hub.topics(ws) if t.startswith(prefix)]

    def members(self, room: str) -> list[WebSocket]:
        """This process's sockets in ``room``."""
        return [s for s in self.hub.subscribers(self.room_prefix + room) if type(s) is WebSocket]

    async def broadcast(self, room: str, message: str | bytes) -> int:
        """Send ``message`` to everyone in ``room`` (every node, with Redis), sender included."""
        return await self._publish(self.room_prefix + room, message)

    async def broadcast_json(self, room: str, data: Any) -> int:
        """:meth:`broadcast` ``data`` as JSON text."""
        return await self._publish(self.room_prefix + room, dumps(data))


class PresenceMixin(RoomsMixin):
    """Who is in each room, with join and leave events sent to the room.

    ``await self.enter(ws, room, user)`` joins ``ws`` to ``room`` as ``user``;
    when a user's first socket enters, the room receives
    ``{"type": "presence", "event": "join", "room": room, "user": user,
    "online": [...]}``, and when their last socket leaves (or closes) the
    same with ``"event": "leave"``.  A user with several tabs open is one
    presence.  :meth:`online` lists the users this process has in a room;
    several nodes behind a RedisHub each know their own (the events reach all).
    """

    def _presence(self) -> dict[str, dict[str, int]]:
        try:
            return self.__dict__["_presence_rooms"]  # type: ignore[no-any-return]
        except KeyError:
            rooms: dict[str, dict[str, int]] = {}
            self.__dict__["_presence_rooms"] = rooms
            return rooms

    def online(self, room: str) -> list[str]:
        """The users present in ``room`` (on this process), sorted."""
        return sorted(self._presence().get(room, ()))

    async def enter(self, ws: WebSocket, room: str, user: str) -> None:
        """Join ``ws`` to ``room`` as ``user`` and announce it if the user was not there."""
        entered: dict[str, str] = ws.state.setdefault("presence", {})
        if entered.get(room) == user:
            return
        if room in entered:
            await self.exit(ws, room)
        await self.join(ws, room)
        entered[room] = user
        users = self._presence().setdefault(room, {})
        users[user] = users.get(user, 0) + 1
        if users[user] == 1:
            await self._announce("join", room, user)

    async def exit(self, ws: WebSocket, room: str) -> None:
        """Take ``ws`` out of ``room``; announce it if it was the user's last socket there."""
        user = ws.state.get("presence", {}).pop(room, None)
        if not ws.closed:
            await self.leave(ws, room)
        if user is None:
            return
        rooms = self._presence()
        users = rooms.get(room, {})
        users[user] = users.get(user, 1) - 1
        if users[user] <= 0:
            users.pop(user, None)
            if not users:
                rooms.pop(room, None)
            await self._announce("leave", room, user)

    async def _announce(self, event: str, room: str, user: str) -> None:
        await self.broadcast_json(
            room,
            {
                "type": "presence",
                "event": event,
                "room": room,
                "user": user,
                "online": self.online(room),
            },
        )

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        try:
            for room in list(ws.state.get("presence", {})):
                try:
                    await self.exit(ws, room)
                except Exception:  # one room's announcement must not keep the others
                    error_log.exception("presence: leaving %r failed", room)
        finally:
            await _super_call(self, PresenceMixin, "on_close", ws, code, reason)


class StaticMixin(HubMixin):
    """Serve files for every request that is not a WebSocket upgrade.

    Set ``static`` to a :class:`~peregrine_rt.DirServer` and list the
    WebSocket paths in ``websocket_paths``; ``handle`` then upgrades those and
    serves everything else from the directory.  Define ``handle`` yourself for
    other routes and end it with ``await super().handle(request, response)``.
    """

    static: ClassVar[DirServer]
    websocket_paths: ClassVar[tuple[str, ...]] = ("/ws",)

    async def handle(self, request: Request, response: Response) -> None:
        if (
            request.upgrade is not None
            and request.path in self.websocket_paths
            and callable(getattr(self, "on_message", None))
        ):
            await upgrade(request, response)
            return
        await self.static.serve(request, response)
