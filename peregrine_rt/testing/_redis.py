"""A throwaway ``redis-server`` for tests: a free port, a temporary directory, stopped by PID.

Plain blocking code (a subprocess and a socket), so that a session-scoped
pytest fixture can hold it outside any trio run.  Also a replica
(``start_redis_server(d, replica_of=primary)``) and Redis Sentinel processes
(:func:`start_redis_sentinel`, the same ``redis-server`` binary run with
``--sentinel``), to test failovers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "REDIS_MISSING",
    "REDIS_MISSING_IN_CI",
    "RedisReplyError",
    "RedisServer",
    "in_ci",
    "redis_server_path",
    "sentinel_url",
    "start_redis_sentinel",
    "start_redis_server",
]

REDIS_MISSING = "redis-server is not installed (CI would fail here: install Debian's redis-server)"
REDIS_MISSING_IN_CI = (
    "redis-server is not installed, and CI must test with it: "
    "install Debian's redis-server (apt-get install -y redis-server)"
)

_PING = b"*1\r\n$4\r\nPING\r\n"
_FLUSHALL = b"*1\r\n$8\r\nFLUSHALL\r\n"
_ATTEMPTS = 3  # another process may take the free port before redis-server binds it


def redis_server_path() -> str | None:
    """The ``redis-server`` executable on ``PATH``, or ``None``."""
    return shutil.which("redis-server")


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (to anything but ``""``, ``0``, ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _options(port: int, directory: Path) -> dict[str, str]:
    """redis-server's options: loopback only, no persistence, the log on stdout."""
    return {
        "--port": str(port),
        "--bind": "127.0.0.1",
        "--dir": str(directory),
        "--save": "",
        "--appendonly": "no",
        "--daemonize": "no",
        "--logfile": "",
    }


def _encode(words: tuple[str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = str(word).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    """Reads one RESP2 reply from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.data:
            part = self.sock.recv(65536)
            if not part:
                raise ConnectionError("redis closed the connection")
            self.data += part
        line, _, self.data = self.data.partition(b"\r\n")
        return line

    def reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.data) < size + 2:
                part = self.sock.recv(65536)
                if not part:
                    raise ConnectionError("redis closed the connection")
                self.data += part
            value, self.data = self.data[:size], self.data[size + 2 :]
            return value.decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.reply() for _ in range(size)]
        raise ConnectionError(f"not a RESP reply: {line[:80]!r}")


class RedisReplyError(Exception):
    """Redis answered a :meth:`RedisServer.command` with an error."""


def _command(port: int, reply: bytes, timeout: float = 1.0) -> bytes:
    """Send one RESP command to 127.0.0.1:``port``; the first line of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(reply)
        data = b""
        while not data.endswith(b"\r\n"):
            part = sock.recv(1024)
            if not part:
                break
            data += part
        return data


@dataclass
class RedisServer:
    """A running ``redis-server`` child process (a context manager that stops it).

    Attributes:
        process: the ``subprocess.Popen``.
        port: its port on 127.0.0.1.
        directory: its working directory (and log file, ``redis.log``).
    """

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        """What the server logged so far."""
        try:
            return (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def ping(self) -> bool:
        """Whether it answers ``PING`` with ``PONG``."""
        try:
            return _command(self.port, _PING).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str | int, timeout: float = 1.0) -> object:
        """Send one command; its reply (str, int, None or a list of them).

        Raises:
            RedisReplyError: Redis answered with an error.
            OSError: it cannot be reached.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(_encode(words))
            return _Reader(sock).reply()

    def kill(self) -> None:
        """Kill it with SIGKILL (no shutdown, no goodbye to its clients) and reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def flushall(self) -> None:
        """Delete every key of every database."""
        reply = _command(self.port, _FLUSHALL)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL answered {reply!r}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop it by PID: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_redis_server(
    directory: Path,
    *,
    executable: str | None = None,
    timeout: float = 10.0,
    port: int | None = None,
    replica_of: RedisServer | None = None,
) -> RedisServer:
    """Start ``redis-server`` on a free port, persisting nothing, and wait until it answers PING.

    Args:
        directory: an empty directory for it (``--dir``) and its log.
        executable: the ``redis-server`` to run (default: the one on ``PATH``).
        timeout: seconds to wait for the first ``PONG`` (and, for a replica,
            for its link to the primary to be up).
        port: this port instead of a free one (to restart a stopped server
            where its clients expect it: ``start_redis_server(d, port=old.port)``).
        replica_of: make it a replica of this server (``--replicaof``).

    Raises:
        FileNotFoundError: there is no ``redis-server``.
        RuntimeError: it exited, or did not answer in time (the message quotes its log).
    """
    options = _options(0, directory)
    if replica_of is not None:
        options["--replicaof"] = f"127.0.0.1 {replica_of.port}"
    server = _start(directory, options, executable, timeout, port)
    if replica_of is not None:
        _wait_for(
            lambda: "master_link_status:up" in str(server.command("INFO", "replication")),
            timeout,
            f"the replica on port {server.port} did not sync with port {replica_of.port}",
            server,
        )
    return server


def start_redis_sentinel(
    directory: Path,
    primary: RedisServer,
    *,
    service: str = "mymaster",
    quorum: int = 2,
    down_after: float = 0.5,
    failover_timeout: float = 3.0,
    executable: str | None = None,
    timeout: float = 10.0,
) -> RedisServer:
    """Start a Redis Sentinel (``redis-server CONF --sentinel``) watching ``primary``.

    Its ``sentinel.conf`` (which Sentinel rewrites as it learns) and log are
    in ``directory``.  Start the replicas first (and wait for them, as
    :func:`start_redis_server` does): a sentinel learns of them from the
    primary's ``INFO``, which it reads at once, then every 10 s.

    Args:
        directory: an empty directory for it.
        primary: the server it monitors as ``service``.
        quorum: sentinels that must agree the primary is down.
        down_after: seconds without an answer before a sentinel thinks so
            (``down-after-milliseconds``).
        failover_timeout: ``failover-timeout``, in seconds.

    Raises:
        FileNotFoundError: there is no ``redis-server``.
        RuntimeError: it exited, or did not answer in time.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "sentinel.conf"
    lines = [
        "bind 127.0.0.1",
        f"dir {directory}",
        f"sentinel monitor {service} 127.0.0.1 {primary.port} {quorum}",
        f"sentinel down-after-milliseconds {service} {round(down_after * 1000)}",
        f"sentinel failover-timeout {service} {round(failover_timeout * 1000)}",
        f"sentinel parallel-syncs {service} 1",
    ]
    config.write_text("\n".join(lines) + "\n")
    options = {str(config): "--sentinel", "--daemonize": "no", "--logfile": ""}
    return _start(directory, options, executable, timeout, None)


def sentinel_url(sentinels: list[RedisServer], service: str = "mymaster") -> str:
    """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../service`` for these sentinels."""
    hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
    return f"redis+sentinel://{hosts}/{service}"


def _wait_for(
    condition: Callable[[], bool], timeout: float, what: str, server: RedisServer
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (OSError, RedisReplyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s:\n{server.log}")
        time.sleep(0.02)


def _start(
    directory: Path,
    options: dict[str, str],
    executable: str | None,
    timeout: float,
    port: int | None,
) -> RedisServer:
    executable = executable or redis_server_path()
    if executable is None:
        raise FileNotFoundError(REDIS_MISSING)
    directory.mkdir(parents=True, exist_ok=True)
    attempts = _ATTEMPTS if port is None else 1
    for attempt in range(1, attempts + 1):
        port_now = _free_port() if port is None else port
        options["--port"] = str(port_now)
        with open(directory / "redis.log", "wb") as log:
            process = subprocess.Popen(
                [executable, *itertools.chain.from_iterable(options.items())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )
        server = RedisServer(process, port_now, directory)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                if "in use" in server.log and attempt < attempts:
                    break  # the port was taken meanwhile: try another
                raise RuntimeError(
                    f"redis-server exited with status {process.returncode}:\n{server.log}"
                )
            if server.ping():
                return server
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"redis-server did not answer PING within {timeout} s:\n{server.log}"
                )
            time.sleep(0.02)
    raise AssertionError("unreachable")  # pragma: no cover
