"""A throwaway ``redis-server`` for tests: a free port, a temporary directory, stopped by PID.

Plain blocking code (a subprocess and a socket), so that a session-scoped
pytest fixture can hold it outside any trio run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "REDIS_MISSING",
    "REDIS_MISSING_IN_CI",
    "RedisServer",
    "in_ci",
    "redis_server_path",
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
) -> RedisServer:
    """Start ``redis-server`` on a free port, persisting nothing, and wait until it answers PING.

    Args:
        directory: an empty directory for it (``--dir``) and its log.
        executable: the ``redis-server`` to run (default: the one on ``PATH``).
        timeout: seconds to wait for the first ``PONG``.
        port: this port instead of a free one (to restart a stopped server
            where its clients expect it: ``start_redis_server(d, port=old.port)``).

    Raises:
        FileNotFoundError: there is no ``redis-server``.
        RuntimeError: it exited, or did not answer in time (the message quotes its log).
    """
    executable = executable or redis_server_path()
    if executable is None:
        raise FileNotFoundError(REDIS_MISSING)
    directory.mkdir(parents=True, exist_ok=True)
    attempts = _ATTEMPTS if port is None else 1
    for attempt in range(1, attempts + 1):
        port_now = _free_port() if port is None else port
        with open(directory / "redis.log", "wb") as log:
            process = subprocess.Popen(
                [executable, *itertools.chain.from_iterable(_options(port_now, directory).items())],
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
