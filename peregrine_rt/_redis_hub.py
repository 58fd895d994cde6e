"""RedisHub: the hub over Redis pub/sub, so that several processes or machines serve one app.

Each node (server process) holds two connections to Redis: one publishes, one
is subscribed with a single pattern, ``PSUBSCRIBE {prefix}*``.  A topic
``"room.lobby"`` is the channel ``"peregrine:room.lobby"``; a payload is this
node's random id (16 bytes), ``b"t"`` (text) or ``b"b"`` (bytes), then the
message (UTF-8 for text).

:meth:`RedisHub.publish` delivers to the local subscribers first, then
publishes; when the message comes back from Redis the node recognises its own
id and skips it, so local subscribers get it exactly once.  Other nodes
deliver it to their local subscribers.

The guarantee (``docs/redis.rst`` says the same for users):

* A message that :meth:`~RedisHub.publish` returned for reaches every
  subscriber of its topic on every node whose link to Redis is up, exactly
  once (Redis pub/sub sends each message once per subscribed connection, and
  this node subscribes once).
* Messages of one publisher (one node) arrive in the order of the
  ``publish`` calls, from any number of tasks: each call queues its
  ``PUBLISH`` on the one publishing connection before its first await, and
  Redis answers and forwards them in that order.  Calls that overlap are
  pipelined (written together), not serialised by a lock.
* While Redis is unreachable ``publish`` still delivers locally, then raises
  :class:`~peregrine_rt.exceptions.HubUnavailable` and counts the message in
  ``hub.lost``; nothing is queued or retried (no duplicates, no late
  delivery).  A message whose connection dropped before Redis answered is
  reported the same way, although Redis may have forwarded it.
* While this node is disconnected, what other nodes publish does not reach
  its subscribers, then or later: pub/sub has no replay.  Use Redis streams
  (as the chat example does) for history.

Every call to Redis is bounded by ``timeout`` (a trio deadline around it, not
only coredis's own ``stream_timeout``): a Redis that stops answering (frozen
with SIGSTOP, say) makes ``publish`` raise ``HubUnavailable`` within
``timeout``, and drops the link.  A command that timed out leaves its request
queued on the connection, so the connection is never reused: both are
invalidated and the link is rebuilt from new ones.

Epochs: at each link-up the hub reads the server's ``run_id`` (``INFO
server``); a new one means Redis restarted, with whatever it kept lost.
Callbacks registered with :meth:`RedisHub.on_link` learn of each link-up
before any message received on the new link is delivered, so that an app can
catch up on what it missed (and re-seed a restarted Redis) in order.

Reconnection: the link is watched (a ``PING`` on both connections every
``PING_INTERVAL`` seconds, answered within ``timeout``); when it drops, it is
rebuilt with exponential backoff (``BACKOFF_MIN`` doubling to ``BACKOFF_MAX``,
with jitter) and the pattern subscribed again.

High availability (``_redis_url.py``): each connection goes where the URL
leads *then*: with ``redis+sentinel://`` the sentinels are asked for the
primary at every attempt and the connection checks ``ROLE``, so the
reconnection loop above is also the failover: when the primary dies the link
drops, and comes back up on the replica Sentinel promoted (a new ``run_id``,
so ``on_link`` callbacks learn that the server changed).  While linked, the
keepalive asks ``ROLE`` instead of ``PING``: a primary demoted under us (a
partition that healed) drops the link too.  With ``redis+cluster://`` the
link is to one node, tried in turn: classic pub/sub reaches every node of a
cluster.  Drops and reconnections are
logged on the ``peregrine_rt.hub`` logger.

The trade-off of one pattern per node: every node receives every message of
the namespace, including topics it has no subscriber for (dropped after a
dictionary lookup).  That keeps the subscription state trivial across
reconnects and subscribe/unsubscribe churn; give each app its own ``prefix``
so that apps sharing a Redis do not receive each other's traffic.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

try:
    import anyio
    from coredis import Redis
    from coredis.connection import BaseConnection
    from coredis.exceptions import ConnectionError as RedisConnectionError
    from coredis.exceptions import RedisError
    from coredis.retry import NoRetryPolicy

    from ._redis_url import RedisEndpoint, Topology, close_buffers
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        "RedisHub needs coredis: pip install 'peregrine_rt[redis]'", name=exc.name
    ) from exc

from ._hub import Hub
from .exceptions import HubUnavailable

__all__ = ["RedisHub"]

log = logging.getLogger("peregrine_rt.hub")

NODE_ID_SIZE = 16
"""Bytes of random node id at the start of every payload."""
DEFAULT_PREFIX = "peregrine:"
DEFAULT_TIMEOUT = 1.0
"""Seconds allowed for every call to Redis: connecting, subscribing, each reply."""
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
BACKOFF_MAX_SENTINEL = 1.0
"""The backoff's cap with a Sentinel URL: each attempt asks the sentinels first, which is
cheap, and waiting longer would add to the failover window (``docs/redis.rst``)."""
PING_INTERVAL = 5.0

_TEXT = b"t"
_BYTES = b"b"
_HEADER = NODE_ID_SIZE + 1

# What a broken or unreachable Redis raises (coredis, anyio and trio timeouts).
_LINK_ERRORS: tuple[type[Exception], ...] = (
    RedisError,
    OSError,
    TimeoutError,
    trio.TooSlowError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


def _glob_escape(text: bytes) -> bytes:
    """``text`` matched literally by a Redis glob pattern."""
    for special in (b"\\", b"*", b"?", b"[", b"]"):
        text = text.replace(special, b"\\" + special)
    return text


def _run_id(info: Any) -> str:
    """The ``run_id`` field of an ``INFO server`` reply ("" if it has none)."""
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line[len("run_id:") :].strip()
    return ""


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _first_leaf(exc)
    text = str(leaf)
    cause = leaf.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


class RedisHub(Hub):
    """The hub over Redis pub/sub: topics cross processes and machines.

    The same interface as :class:`~peregrine_rt.Hub` (subscriptions are
    local, as are :meth:`~Hub.subscribers`, :meth:`~Hub.count` and
    :meth:`~Hub.topics`); :meth:`publish` reaches the subscribers of every
    node.  ``Config.redis_url`` (``--redis URL`` on the command line) makes a
    server use one; the server runs :meth:`serve`.

    Args:
        url: ``redis://[:password@]host:port[/db]`` (``rediss://`` for TLS,
            ``unix://path``); ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``
            for a primary watched by Redis Sentinel (the addresses are the
            sentinels'; ``sentinel://`` is read the same way); or
            ``redis+cluster://host:port[,host:port...]`` for a Redis Cluster
            (pub/sub through any one node).  Anything else raises ``ValueError``.
        prefix: the channel namespace of this app: topic ``t`` is channel
            ``prefix + t``, and the node subscribes to ``prefix*``.
        timeout: seconds allowed for every call to Redis: to connect, to have
            the subscription acknowledged, and for Redis to answer a publish,
            a ping or ``INFO``.

    Attributes:
        node_id: this node's random id, which tags what it publishes.
        lost: how many messages :meth:`publish` could not send to the other
            nodes (each also raised :class:`~peregrine_rt.exceptions.HubUnavailable`).
        run_id: the ``run_id`` of the Redis server at the last link-up
            (``None`` before the first): it changes when Redis restarts, and
            when the link moves to another server (a promoted replica after a
            Sentinel failover, another node of a cluster).
        address: ``host:port`` of the server the link is (or was last) up
            with (``None`` before the first link-up).

    Resource handling:
        :meth:`serve` owns both connections to Redis; cancelling it closes them.

    Error handling:
        Redis being unreachable never stops the server: :meth:`publish` raises
        :class:`~peregrine_rt.exceptions.HubUnavailable` after delivering
        locally, and :meth:`serve` keeps reconnecting, logging each drop and
        reconnection on the ``peregrine_rt.hub`` logger.
    """

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__()
        # Parsed now, so that a malformed URL fails when the server is built.
        self._endpoint = RedisEndpoint(url, timeout=timeout)
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.node_id = os.urandom(NODE_ID_SIZE)
        self.lost = 0
        self.run_id: str | None = None
        self.address: str | None = None
        self._link_callbacks: list[Callable[[str], None]] = []
        self._where = self._endpoint.where  # host:port, never the password
        self._channel_prefix = prefix.encode()
        self._pattern = _glob_escape(self._channel_prefix) + b"*"
        self._pub: BaseConnection | None = None  # while the link is up
        self._broken: trio.Event | None = None
        self._down_since: float | None = None
        self._lost_in_outage = 0  # reported, and reset, at reconnection

    @property
    def connected(self) -> bool:
        """Whether the link to Redis is up (publishes reach the other nodes)."""
        return self._pub is not None

    def client(self, **options: Any) -> Redis[Any]:
        """A coredis client (not yet entered) to the Redis this hub uses, for keys and scripts.

        It goes where the hub's URL leads at each new connection, so it
        follows a Sentinel failover as the hub does; each connection and
        reply is bounded by the hub's ``timeout``, and a command is never
        retried (a script that may have run is not run twice).  ``options``
        are coredis connection options, ``decode_responses=True`` say.  Use
        it as ``async with hub.client() as redis: ...``.

        Raises:
            ValueError: the URL is a Redis Cluster's: the hub's pub/sub works
                through any node, but scripts and multi-key commands need
                their keys in one hash slot, which this client does not route.
        """
        pool = self._endpoint.pool(**options)
        return Redis(
            connection_pool=pool,
            decode_responses=bool(options.get("decode_responses", False)),
            retry_policy=NoRetryPolicy(),
        )

    def on_link(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(run_id)`` each time the link to Redis comes up.

        It is called (synchronously, from the hub's task) once subscribed and
        before any message received on the new link is delivered, so what it
        starts (buffering, say) sees every later message.  ``run_id`` is the
        Redis server's (see :attr:`run_id`); a new one means Redis restarted
        and kept nothing it had not persisted.  A callback that raises is
        logged and does not stop the link.
        """
        self._link_callbacks.append(callback)

    # -- publishing ---------------------------------------------------------------

    async def publish(self, topic: str, message: str | bytes) -> int:
        """Deliver ``message`` to the subscribers of ``topic`` here, then on every other node.

        Returns:
            How many local subscribers took it.

        Raises:
            HubUnavailable: Redis is unreachable (or the connection dropped
                before it answered): the local subscribers have the message,
                the other nodes do not; ``hub.lost`` counted it.
        """
        if not isinstance(topic, str):
            raise TypeError(f"topics are str, not {type(topic).__name__}")
        self.stats.hub_publishes += 1
        delivered = await self.fan_out(topic, message)
        conn = self._pub
        if conn is None:
            raise self._unavailable(topic, delivered, "not connected to Redis")
        if isinstance(message, str):
            payload = b"".join((self.node_id, _TEXT, message.encode()))
        else:
            payload = b"".join((self.node_id, _BYTES, message))
        try:
            # Queued on the connection now, in call order; written (pipelined
            # with any other queued publishes) by its writer task.  The trio
            # deadline bounds the wait whatever coredis does with its own.
            request = conn.create_request(
                b"PUBLISH", self._channel_prefix + topic.encode(), payload
            )
            with trio.fail_after(self.timeout):
                await request
        except _LINK_ERRORS as exc:
            if self._pub is conn:
                self._pub = None  # the next publishes fail fast until reconnected
                if self._broken is not None:
                    self._broken.set()
            why = (
                f"no answer within {self.timeout:g} s"
                if isinstance(exc, trio.TooSlowError)
                else _describe(exc)
            )
            raise self._unavailable(topic, delivered, why) from exc
        return delivered

    def _unavailable(self, topic: str, delivered: int, why: str) -> HubUnavailable:
        self.lost += 1
        self.stats.hub_lost += 1
        self._lost_in_outage += 1
        if self._lost_in_outage == 1:  # once per outage; the count comes at reconnection
            log.warning(
                "publishing on %r reached this process only (%s); until Redis at %s is back, "
                "messages do not reach other nodes (counted in hub.lost)",
                topic,
                why,
                self._where,
            )
        return HubUnavailable(
            f"{topic!r}: delivered to {delivered} local subscriber(s), "
            f"not sent to other nodes ({why})",
            topic,
            delivered,
        )

    # -- the link to Redis --------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to Redis, relay what other nodes publish, reconnect when needed.

        Reports started once subscribed, or after ``timeout`` seconds if Redis
        cannot be reached: the server then starts anyway (its publishes stay
        local and raise HubUnavailable) and the hub keeps trying in the
        background.  Runs until cancelled.
        """
        up = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stay_linked, up)
            with trio.move_on_after(self.timeout):
                await up.wait()
            if not up.is_set():
                log.warning(
                    "Redis at %s is unreachable: serving anyway; publishes reach this "
                    "process only until it connects",
                    self._where,
                )
            task_status.started()

    async def _stay_linked(self, up: trio.Event) -> None:
        delay = BACKOFF_MIN
        while True:
            linked = False

            def on_up() -> None:
                nonlocal delay, linked
                linked, delay = True, BACKOFF_MIN
                where = self._where
                if self._endpoint.topology is not Topology.SERVER:
                    where = f"{self.address} via {where}"
                if self._down_since is None:
                    log.info("connected to Redis at %s (channels %s*)", where, self.prefix)
                else:
                    log.warning(
                        "reconnected to Redis at %s after %.1f s; %d message(s) published "
                        "meanwhile reached this process only",
                        where,
                        trio.current_time() - self._down_since,
                        self._lost_in_outage,
                    )
                self._down_since = None
                self._lost_in_outage = 0
                up.set()

            error: BaseException | None = None
            try:
                await self._link(on_up)
            except* _LINK_ERRORS as group:
                error = group
            reason = _describe(error) if error is not None else "closed"
            if linked or self._down_since is None:
                self._down_since = trio.current_time()
                log.warning(
                    "%s Redis at %s (%s); retrying, and until then messages published on "
                    "other nodes do not reach this one",
                    "lost the connection to" if linked else "cannot connect to",
                    self._where,
                    reason,
                )
            else:
                log.info("still cannot connect to Redis at %s (%s)", self._where, reason)
            await trio.sleep(random.uniform(delay / 2, delay))
            sentinel = self._endpoint.topology is Topology.SENTINEL
            delay = min(delay * 2, BACKOFF_MAX_SENTINEL if sentinel else BACKOFF_MAX)

    async def _connect(self, nursery: trio.Nursery) -> BaseConnection:
        """A connection to where the URL leads now (asking the sentinels again, if any)."""
        with trio.fail_after(self.timeout):
            location = await self._endpoint.locate()
        conn = self._endpoint.connection(location)
        try:
            with trio.fail_after(self.timeout):
                await nursery.start(conn.run)
        except BaseException:
            close_buffers(conn)
            raise
        return conn

    async def _link(self, on_up: Callable[[], None]) -> None:
        """Connect, subscribe, relay until the link breaks (raises a link error)."""
        async with trio.open_nursery() as nursery:
            pub = sub = None
            try:
                pub = await self._connect(nursery)
                sub = await self._connect(nursery)
                messages: AsyncIterator[list[Any]] = sub.push_messages.__aiter__()
                sub.send_command(b"PSUBSCRIBE", self._pattern)
                with trio.fail_after(self.timeout):
                    reply = await messages.__anext__()
                if reply[:2] != [b"psubscribe", self._pattern]:
                    raise RedisError(f"unexpected answer to PSUBSCRIBE: {reply!r}")
                with trio.fail_after(self.timeout):
                    info = await pub.create_request(b"INFO", b"server", decode=False)
                self.run_id = _run_id(info)
                self.address = str(pub.location)
                self._broken = broken = trio.Event()
                self._pub = pub
                on_up()
                for callback in list(self._link_callbacks):
                    try:
                        callback(self.run_id)
                    except Exception:
                        log.exception("a link callback of the hub raised")
                nursery.start_soon(self._keepalive, pub, sub, broken)
                await self._relay(messages)
            finally:
                self._pub = None
                for conn in (pub, sub):
                    if conn is not None:
                        conn.invalidate()
                nursery.cancel_scope.cancel()

    async def _keepalive(
        self, pub: BaseConnection, sub: BaseConnection, broken: trio.Event
    ) -> None:
        while True:
            with trio.move_on_after(PING_INTERVAL):
                await broken.wait()
                raise RedisConnectionError("a publish failed")
            with trio.fail_after(self.timeout):
                if self._endpoint.topology is Topology.SENTINEL:
                    # Still the primary?  One that was demoted (and came back
                    # as a replica) would keep our publishes to itself.
                    role = await pub.create_request(b"ROLE", decode=False)
                    if not isinstance(role, list) or role[:1] != [b"master"]:
                        raise RedisConnectionError(f"{pub.location} is no longer the primary")
                else:
                    await pub.create_request(b"PING")
                await sub.create_request(b"PING")

    async def _relay(self, messages: AsyncIterator[list[Any]]) -> None:
        """Deliver what other nodes publish to the local subscribers."""
        node_id = self.node_id
        skip = len(self._channel_prefix)
        async for item in messages:
            if item[0] != b"pmessage":
                continue
            payload = item[3]
            if payload[:NODE_ID_SIZE] == node_id:
                continue  # ours: delivered locally when published
            try:
                topic = item[2][skip:].decode()
                if topic not in self._topics and not self._patterns:
                    continue  # no subscriber here (the cost of one pattern per node)
                kind = payload[NODE_ID_SIZE:_HEADER]
                if kind == _TEXT:
                    message: str | bytes = payload[_HEADER:].decode()
                elif kind == _BYTES:
                    message = payload[_HEADER:]
                else:
                    raise ValueError(f"unknown kind {kind!r}")
            except ValueError as exc:  # UnicodeDecodeError included
                log.warning("dropped a malformed message on channel %r: %s", item[2], exc)
                continue
            await self.fan_out(topic, message)
        raise RedisConnectionError("the subscription ended")

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        topics = len(self._topics) + len(self._patterns)
        return f"<RedisHub {self._where} {self.prefix!r} {state}, {topics} topics lost={self.lost}>"
