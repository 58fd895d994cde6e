"""Redis URLs: one server, a primary watched by Sentinel, or a Cluster; and where each leads now.

Three forms (``docs/redis.rst``, "High availability", says the same for users):

* ``redis://[[user]:password@]host:port[/db]``, ``rediss://`` (TLS),
  ``unix:///path/to/redis.sock``: one server, parsed by coredis.
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
  (``sentinel://`` is read the same way): the addresses are the
  *sentinels* (port 26379 when left out), ``service`` the name they monitor
  (``sentinel monitor <service> ...``), the password the primary's.  A
  ``?sentinel_password=...`` query authenticates to the sentinels.  This is
  the form of the ``redis-sentinel-url`` package and of several ops tools.
* ``redis+cluster://[[user]:password@]host:port[,host:port...]``: seed nodes
  of a Redis Cluster (db 0 only, as cluster mode has no other).

:meth:`RedisEndpoint.locate` answers "where do I connect *now*" and is asked
again at every connection, so a client that reconnects after a failure
follows a failover: with Sentinel it asks the sentinels (the one that
answered last first) for the current primary, and the connection checks
``ROLE`` before it is used, so a stale answer (an old primary that came back
as a replica) fails the connection rather than serving reads of a replica or
refusing writes with ``READONLY``.  With a cluster it tries the seed nodes in
turn.  The sentinel query is a few lines of RESP over a trio stream, bounded
by the caller's timeout, so that locating needs no task group.

What a cluster cannot do is said here and refused where it is asked for:
pub/sub (``PUBLISH``/``PSUBSCRIBE``, classic, not sharded) is broadcast to
every node of a cluster, so the hub works through any one node; a key-value
client (:meth:`RedisEndpoint.pool`) is not offered for a cluster, since
scripts and transactions there must keep their keys in one hash slot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from coredis import ConnectionPool
from coredis.connection import (
    BaseConnection,
    Location,
    TCPConnection,
    TCPLocation,
    UnixDomainSocketConnection,
)
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError

__all__ = ["RedisEndpoint", "Topology", "close_buffers", "parse_redis_url"]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
CLUSTER_SCHEMES = ("redis+cluster",)
SERVER_SCHEMES = ("redis", "rediss", "unix")
MAX_REPLY = 64 * 1024
"""Bytes a sentinel's answer to get-master-addr-by-name may take (it is a few dozen)."""

FORMS = (
    "redis://HOST:PORT[/DB], rediss://, unix:///PATH, "
    "redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB] or "
    "redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]"
)


class Topology(enum.Enum):
    """What a Redis URL names."""

    SERVER = "server"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True, slots=True)
class RedisURL:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL."""

    topology: Topology
    hosts: tuple[tuple[str, int], ...]
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def _host_port(text: str, default: int, url: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise ValueError(f"bad host:port {text!r} in Redis URL {url!r}")
    port = int(port_text) if port_text else default
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port} in Redis URL {url!r}")
    return host, port


def parse_redis_url(url: str) -> RedisURL | None:
    """The parts of a Sentinel or Cluster URL; ``None`` for a one-server URL (coredis parses those).

    Raises:
        ValueError: not a Redis URL of a supported form, or a malformed one
            (the message names the forms).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme in SERVER_SCHEMES:
        return None
    if not sep or scheme not in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
        raise ValueError(f"not a Redis URL ({FORMS}): {url!r}")
    topology = Topology.SENTINEL if scheme in SENTINEL_SCHEMES else Topology.CLUSTER
    rest, _, query_text = rest.partition("?")
    query = parse_qs(query_text, keep_blank_values=True, strict_parsing=bool(query_text))
    unknown = set(query) - ({"sentinel_password"} if topology is Topology.SENTINEL else set())
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in Redis URL {url!r}")
    netloc, _, path = rest.partition("/")
    userinfo, at, host_list = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None if colon else None
        password = unquote(secret if colon else user) or None
    default = DEFAULT_SENTINEL_PORT if topology is Topology.SENTINEL else DEFAULT_PORT
    hosts = tuple(_host_port(h, default, url) for h in host_list.split(",") if h)
    if not hosts:
        raise ValueError(f"no host in Redis URL {url!r}")
    parts = [p for p in path.split("/") if p]
    db_text = "0"
    if topology is Topology.SENTINEL:
        if not parts or len(parts) > 2:
            raise ValueError(
                f"a Sentinel URL names the monitored service (and optionally a db): "
                f"redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB], not {url!r}"
            )
        service = unquote(parts[0])
        db_text = parts[1] if len(parts) == 2 else "0"
    else:
        service = ""
        if len(parts) > 1 or (parts and parts[0] != "0"):
            raise ValueError(f"Redis Cluster has database 0 only: {url!r}")
    if not db_text.isdigit():
        raise ValueError(f"bad database number {db_text!r} in Redis URL {url!r}")
    sentinel_password = query.get("sentinel_password", [None])[-1]
    return RedisURL(
        topology, hosts, service, int(db_text), username, password, sentinel_password or None
    )


def close_buffers(conn: BaseConnection) -> None:
    """Close the memory streams of a connection that never connected.

    coredis 6.9 creates them with the connection and closes them only when
    ``run`` got connected; otherwise they warn (ResourceWarning) when collected.
    """
    for value in vars(conn).values():
        if isinstance(value, (MemoryObjectSendStream, MemoryObjectReceiveStream)):
            value.close()


class _Closing:
    """Mixed into coredis connection classes: close the buffers however ``run`` ends."""

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await super().run(task_status=task_status)  # type: ignore[misc]  # the mixin's partner
        finally:
            close_buffers(self)  # type: ignore[arg-type]  # self is a BaseConnection


class _ClosingTCP(_Closing, TCPConnection):
    pass


class _ClosingUnix(_Closing, UnixDomainSocketConnection):
    pass


def _encode(*words: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _ask(location: tuple[str, int], commands: list[bytes]) -> list[bytes]:
    """Send RESP ``commands`` to ``location``; the reply to the last one, as a list of bulk strings.

    Enough of RESP2 for AUTH and SENTINEL get-master-addr-by-name: ``+OK``,
    ``-ERR ...`` (raised as RedisError), ``*-1`` (an empty list) and arrays
    of bulk strings.
    """
    stream = await trio.open_tcp_stream(*location)
    async with stream:
        await stream.send_all(b"".join(commands))
        data = b""
        replies: list[list[bytes]] = []
        while len(replies) < len(commands):
            chunk = await stream.receive_some(MAX_REPLY)
            if not chunk:
                raise RedisConnectionError(f"sentinel at {location[0]}:{location[1]} closed")
            data += chunk
            if len(data) > MAX_REPLY:
                raise RedisError(f"sentinel at {location[0]}:{location[1]}: reply too long")
            while len(replies) < len(commands):
                parsed = _parse(data)
                if parsed is None:
                    break
                reply, data = parsed
                replies.append(reply)
        return replies[-1]


def _parse(data: bytes) -> tuple[list[bytes], bytes] | None:
    """One reply from the start of ``data`` and what follows, or None if incomplete."""
    line, found, rest = data.partition(b"\r\n")
    if not found:
        return None
    if line.startswith(b"-"):
        raise RedisError(line[1:].decode(errors="replace"))
    if line.startswith(b"+"):
        return [line[1:]], rest
    if not line.startswith(b"*"):
        raise RedisError(f"unexpected reply from a sentinel: {line[:80]!r}")
    items: list[bytes] = []
    for _ in range(max(0, int(line[1:]))):
        head, found, rest = rest.partition(b"\r\n")
        if not found:
            return None
        size = int(head[1:])
        if len(rest) < size + 2:
            return None
        items.append(rest[:size])
        rest = rest[size + 2 :]
    return items, rest


class RedisEndpoint:
    """Where a Redis URL leads, asked again at every connection so that failovers are followed.

    Args:
        url: one of the forms above.
        timeout: seconds for connecting and for each reply (the connections'
            coredis timeouts; :meth:`locate` is bounded by its caller).

    Attributes:
        topology: what the URL names.
        where: the URL's hosts (and service), never its password, for logs.
        server_location: where a one-server URL leads (``None`` for the others).
        connection_class: the coredis connection class of every connection.
        options: the connections' options (timeouts, credentials, db).

    Raises:
        ValueError: the URL is of no supported form, or malformed.
    """

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.parts = parse_redis_url(url)
        self.topology = Topology.SERVER if self.parts is None else self.parts.topology
        self._next = 0  # the sentinel, or cluster node, to try first
        self.options: dict[str, Any] = {"connect_timeout": timeout, "stream_timeout": timeout}
        self.server_location: Location | None = None
        if self.parts is None:
            pool: ConnectionPool[Any] = ConnectionPool.from_url(url, **self.options)
            assert pool.location is not None  # from_url always sets it
            self.server_location = pool.location
            self.options = {
                k: v for k, v in pool.connection_kwargs.items() if k != "processing_budget"
            }
            self.connection_class: type[BaseConnection] = (
                _ClosingTCP if isinstance(self.server_location, TCPLocation) else _ClosingUnix
            )
            self.where = str(self.server_location)
        else:
            parts = self.parts
            self.options.update(db=parts.db, username=parts.username, password=parts.password)
            self.connection_class = _ClosingTCP
            hosts = ",".join(f"{h}:{p}" for h, p in parts.hosts)
            self.where = (
                f"sentinels {hosts} (service {parts.service!r})"
                if parts.topology is Topology.SENTINEL
                else f"cluster {hosts}"
            )

    async def locate(self) -> Location:
        """Where to connect now: the server, the primary the sentinels name, or a cluster node.

        Raises:
            RedisError: no sentinel answered, or none knows the service.
            OSError: a sentinel cannot be reached (only when it is the last one tried).
        """
        if self.server_location is not None:
            return self.server_location
        assert self.parts is not None
        hosts = self.parts.hosts
        if self.parts.topology is Topology.CLUSTER:
            host, port = hosts[self._next % len(hosts)]
            self._next += 1  # the next connection tries the next node; a good one is kept
            return TCPLocation(host, port)
        return await self._primary()

    async def _primary(self) -> TCPLocation:
        parts = self.parts
        assert parts is not None
        query = _encode("SENTINEL", "get-master-addr-by-name", parts.service)
        commands = [query]
        if parts.sentinel_password is not None:
            commands.insert(0, _encode("AUTH", parts.sentinel_password))
        errors: list[str] = []
        for i in range(len(parts.hosts)):
            index = (self._next + i) % len(parts.hosts)
            host, port = parts.hosts[index]
            try:
                reply = await _ask((host, port), commands)
            except (OSError, RedisError, ValueError) as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
            if len(reply) != 2 or not reply[1].isdigit():
                errors.append(f"{host}:{port}: does not know {parts.service!r}")
                continue
            self._next = index  # ask this one first next time
            return TCPLocation(reply[0].decode(), int(reply[1]))
        raise RedisConnectionError(
            f"no sentinel named a primary for {parts.service!r}: {'; '.join(errors)}"
        )

    def connection(self, location: Location, **kwargs: Any) -> BaseConnection:
        """A connection (not yet running) to ``location``, with the URL's credentials and db.

        For a Sentinel URL the connection checks, once connected, that the
        server is the primary (``ROLE``) and fails otherwise.
        """
        conn = self.connection_class(location, **{**self.options, **kwargs})
        if self.topology is Topology.SENTINEL:
            conn.register_connect_callback(_check_primary)
        return conn

    def pool(self, **kwargs: Any) -> ConnectionPool[Any]:
        """A coredis connection pool whose every new connection goes where :meth:`locate` says.

        Give it to ``coredis.Redis(connection_pool=...)``.  ``kwargs`` are
        connection options (``decode_responses=True``, say).

        Raises:
            ValueError: for a cluster URL (see the module's docstring).
        """
        if self.topology is Topology.CLUSTER:
            raise ValueError(
                f"a Redis Cluster URL ({self.where}) serves pub/sub only here: scripts and "
                "multi-key commands need every key in one hash slot; give a "
                "redis:// or redis+sentinel:// URL for keys"
            )
        return _LocatingPool(self, **kwargs)


async def _check_primary(conn: BaseConnection) -> None:
    role = await conn.create_request(b"ROLE", decode=False)
    name = role[0] if isinstance(role, list) and role else role
    if name != b"master":
        raise RedisConnectionError(f"{conn.location} is not the primary (ROLE: {name!r})")


class _LocatingPool(ConnectionPool[Any]):
    """A pool that asks its endpoint where to connect for each new connection."""

    def __init__(self, endpoint: RedisEndpoint, **kwargs: Any) -> None:
        super().__init__(
            connection_class=endpoint.connection_class, **{**endpoint.options, **kwargs}
        )
        self.endpoint = endpoint
        self.location = endpoint.server_location

    async def _construct_connection(self) -> Any:
        # coredis 6.x's hook for a new connection (SentinelConnectionPool
        # overrides it the same way); pinned by coredis<7 in pyproject.toml.
        with trio.fail_after(self.endpoint.timeout):
            location = await self.endpoint.locate()
        kwargs = dict(self.connection_kwargs)
        return self.endpoint.connection(location, **kwargs)
