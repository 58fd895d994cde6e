"""Publishing to Channels topics without a socket: the emitter and the signed POST endpoint.

:func:`emit` is for another process (a worker, a cron job) of an app whose
nodes share a :class:`~peregrine_rt.RedisHub`: it publishes, on the Redis
channel of hub topic ``channels:<topic>``, the same frame a node's
``broadcast`` would, so every node delivers it to its clients.  With
``history=True`` it appends through :class:`RedisHistory` instead, whose
script assigns the offset and publishes atomically.

:class:`PublishEndpoint` takes ``POST`` requests signed with a shared
secret, for services that speak HTTP.  The signature header is::

    x-peregrine-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A request is refused with 401 when the header is missing or malformed, the
time is outside the replay window (``window`` seconds either way), the MAC
does not match (compared in constant time), or the same signature was
already used within the window; 413 when the body exceeds ``max_body``;
400 when the body is not ``{"topic": str, "event": str, "payload": any}``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import TYPE_CHECKING, Any, Final

from .._json import loads
from ..exceptions import HTTPError, InvalidJSON
from ._history import hub_topic
from ._phoenix import RESERVED_EVENTS, Frame, encode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._request import Request
    from .._response import Response

__all__ = ["SIGNATURE_HEADER", "PublishEndpoint", "emit", "sign"]

SIGNATURE_HEADER: Final = "x-peregrine-signature"
_NODE_ID_SIZE: Final = 16  # RedisHub's payload: node id, b"t", the text
_TEXT: Final = b"t"


async def emit(
    redis_url: str,
    topic: str,
    event: str,
    payload: Any,
    *,
    history: bool = False,
    prefix: str = "peregrine:",
) -> None:
    """Broadcast ``event`` to ``topic`` on every node of an app, from outside it.

    Args:
        redis_url: the Redis of the app's RedisHub.
        history: the topic keeps its history in Redis (``RedisHistory``):
            append it there, so that it gets an offset and can be recovered.
        prefix: the RedisHub's ``prefix`` (the app's namespace).
    """
    if event in RESERVED_EVENTS:
        raise ValueError(f"{event!r} is a protocol event: it cannot be broadcast")
    if history:
        import trio  # noqa: PLC0415 - only this path runs a backend

        from ._redis_history import RedisHistory  # noqa: PLC0415

        backend = RedisHistory(redis_url, prefix=prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(backend.run)
            await backend.append(topic, event, payload)
            nursery.cancel_scope.cancel()
        return
    text = encode(Frame(None, None, topic, event, payload))
    from coredis import Redis  # noqa: PLC0415  # the optional redis extra, on first use

    client: Redis[bytes] = Redis.from_url(redis_url)
    async with client:
        channel = (prefix + hub_topic(topic)).encode()
        await client.publish(channel, os.urandom(_NODE_ID_SIZE) + _TEXT + text.encode())


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The ``x-peregrine-signature`` value of ``body`` (for the services that post)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class PublishEndpoint:
    """An HMAC-signed ``POST`` endpoint that broadcasts (see the module docs).

    Made by :meth:`Channels.publish_endpoint`; route its :meth:`handle`:
    ``router.route("/publish", chat.publish_endpoint(secret), methods=("POST",))``.
    """

    def __init__(
        self,
        publish: Callable[[str, str, Any], Awaitable[object]],
        secret: bytes,
        *,
        window: float = 300.0,
        max_body: int = 65_536,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the secret must be at least 16 bytes")
        self._publish = publish
        self._secret = secret
        self.window = window
        self.max_body = max_body
        self._clock = clock
        self._seen: dict[str, float] = {}  # signatures used, until they leave the window

    async def handle(self, request: Request, response: Response) -> None:
        """Check the signature, then broadcast; answers 202 with ``{"ok": true}``."""
        if request.method != "POST":
            raise HTTPError(405, "POST only", {"allow": "POST"})
        body = await request.body()
        if len(body) > self.max_body:
            raise HTTPError(413, f"body over {self.max_body} bytes")
        self._check(request.headers.get(SIGNATURE_HEADER), body)
        try:
            data = loads(body)
        except InvalidJSON as exc:
            raise HTTPError(400, str(exc)) from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("topic"), str)
            or not isinstance(data.get("event"), str)
            or data["event"] in RESERVED_EVENTS
            or "payload" not in data
        ):
            raise HTTPError(400, 'expected {"topic": str, "event": str, "payload": ...}')
        await self._publish(data["topic"], data["event"], data["payload"])
        response.json({"ok": True}, status=202)

    def _check(self, header: str | None, body: bytes) -> None:
        now = self._clock()
        fields = dict(part.split("=", 1) for part in (header or "").split(",") if "=" in part)
        stamp, mac = fields.get("t", ""), fields.get("v1", "")
        if not stamp.isdigit() or not mac:
            raise HTTPError(401, "missing or malformed signature")
        if abs(now - int(stamp)) > self.window:
            raise HTTPError(401, "signature outside the replay window")
        expected = hmac.new(self._secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, mac):
            raise HTTPError(401, "bad signature")
        self._seen = {m: until for m, until in self._seen.items() if until > now}
        if mac in self._seen:
            raise HTTPError(401, "signature already used")
        self._seen[mac] = now + 2 * self.window
