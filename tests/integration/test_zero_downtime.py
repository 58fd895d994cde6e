"""Zero-downtime restarts: SIGHUP to the supervisor replaces every worker, with new code.

The app is a module written into ``tmp_path`` (``--app-dir``) and rewritten
before each SIGHUP: each answer is ``PID VERSION``, so a test sees which
process answered and with which code.  Client threads hammer the server
meanwhile, some with a new connection per request, some on keep-alive
connections; a keep-alive request whose *reused* connection the server
closed before answering is retried once, as RFC 9112 section 9.3.1 allows
(browsers, curl and Go's client do it), and counted.  Anything else that is
not a ``200`` is a failure.  The supervisor and worker helpers are
test_workers.py's.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .test_workers import Supervised, alive, children, supervised, wait_until

__all__ = ["supervised"]  # the fixture, imported for the tests below

GRACE = 2.0
APP = """\
import os

VERSION = {version!r}


class App:
    async def handle(self, request, response):
        if request.upgrade is not None:
            import peregrine_rt as pr

            await pr.upgrade(request, response)
            return
        response.text(f"{{os.getpid()}} {{VERSION}}")

    async def on_message(self, ws, message):
        await ws.send(f"{{os.getpid()}} {{VERSION}}")
"""


def write_app(directory: Path, version: str) -> None:
    (directory / "zd_app.py").write_text(APP.format(version=version))


def start(supervised: Callable[..., Supervised], app_dir: Path) -> Supervised:
    return supervised(
        "zd_app:App",
        "--app-dir",
        str(app_dir),
        "--port",
        "0",
        "--workers",
        "2",
        "--shutdown-grace",
        str(GRACE),
    )


# -- the clients -----------------------------------------------------------------------


@dataclass
class Tally:
    ok: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)
    answers: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, body: bytes) -> None:
        with self.lock:
            self.ok += 1
            self.answers.add(body.decode())


class NoAnswer(Exception):
    """The connection ended before any byte of an answer."""


def read_answer(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bool]:
    """(body, connection kept) of a 200 answer, consuming it from ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            if buffer:
                raise ValueError(f"end of stream inside a head: {bytes(buffer)!r}")
            raise NoAnswer
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    if not lines[0].startswith(b"http/1.1 200 "):
        raise ValueError(lines[0])
    length = next(int(line[15:]) for line in lines if line.startswith(b"content-length:"))
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise ValueError("end of stream inside a body")
        rest += data
    buffer[:] = rest[length:]
    return rest[:length], b"connection: close" not in lines


def fresh_connections(port: int, tally: Tally, stop: threading.Event) -> None:
    request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                body, _ = read_answer(sock, bytearray())
        except (OSError, NoAnswer, ValueError) as exc:
            tally.failures.append(f"fresh: {exc!r}")
        else:
            tally.answered(body)


def keep_alive(port: int, tally: Tally, stop: threading.Event) -> None:
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    sock: socket.socket | None = None
    reused = False
    buffer = bytearray()
    try:
        while not stop.is_set():
            for attempt in (1, 2):
                try:
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                        reused = False
                        buffer.clear()
                    sock.sendall(request)
                    body, kept = read_answer(sock, buffer)
                except (OSError, NoAnswer, ValueError) as exc:
                    if sock is not None:
                        sock.close()
                        sock = None
                    retryable = not isinstance(exc, ValueError) and reused and not buffer
                    if attempt == 1 and retryable:
                        tally.retried += 1
                        continue
                    tally.failures.append(f"keep-alive: {exc!r}")
                else:
                    tally.answered(body)
                    reused = True
                    if not kept:
                        sock.close()
                        sock = None
                break
    finally:
        if sock is not None:
            sock.close()


@contextlib.contextmanager
def hammering(port: int, fresh: int = 3, kept: int = 3) -> Iterator[Tally]:
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=fresh_connections, args=(port, tally, stop)) for _ in range(fresh)
    ]
    threads += [threading.Thread(target=keep_alive, args=(port, tally, stop)) for _ in range(kept)]
    for thread in threads:
        thread.start()
    try:
        yield tally
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        assert not any(thread.is_alive() for thread in threads)


def wait_for_version(tally: Tally, version: str) -> set[int]:
    """The PIDs that answered with ``version``, once one has."""

    def pids() -> set[int]:
        with tally.lock:
            return {int(a.split()[0]) for a in tally.answers if a.endswith(f" {version}")}

    return wait_until(pids, 10, f"an answer from {version}")  # type: ignore[no-any-return]


# -- the tests ---------------------------------------------------------------------------


def test_sighup_replaces_every_worker_with_new_code_and_no_request_fails(
    supervised: Callable[..., Supervised], tmp_path: Path
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    write_app(tmp_path, "v0")
    app = start(supervised, tmp_path)
    port = app.port
    generations = [app.workers()]
    with contextlib.ExitStack() as stack:
        sockets = {}  # an open WebSocket in each worker
        deadline = time.monotonic() + 10
        while len(sockets) < 2:
            assert time.monotonic() < deadline, f"only {set(sockets)} held WebSockets"
            ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/", open_timeout=5))
            ws.send("who?")
            sockets.setdefault(int(ws.recv(timeout=5).split()[0]), ws)
        assert set(sockets) == generations[0]
        with hammering(port) as tally:
            for version in ("v1", "v2"):
                wait_until(lambda: tally.ok > 200, 10, "requests answered before the restart")
                write_app(tmp_path, version)
                since = len(app.log)
                app.server.proc.send_signal(signal.SIGHUP)
                app.wait_for_match(r"restart done: 2 workers replaced", since=since, timeout=20)
                new = app.workers()
                assert not new & set().union(*generations), "every worker was replaced"
                generations.append(new)
                assert wait_for_version(tally, version) <= new  # the new code answers
                if version == "v1":  # the WebSockets of the first workers were told to come back
                    for ws in sockets.values():
                        with pytest.raises(ConnectionClosed) as closed:
                            ws.recv(timeout=GRACE + 3)
                        assert closed.value.rcvd is not None
                        assert closed.value.rcvd.code == 1012
                        assert closed.value.rcvd.reason == "service restart"
            wait_until(lambda: tally.ok > 2 * 200, 10, "requests answered after the restarts")
    assert tally.failures == [], tally.failures[:10]
    print(f"{tally.ok} requests answered, {tally.retried} keep-alive retries")
    answered = {int(a.split()[0]) for a in tally.answers}
    assert answered == set().union(*generations)  # all three generations served
    log = app.log
    # One at a time: each replacement is logged before the next new worker starts.
    steps = [line for line in log.splitlines() if "replaces pid" in line or "is serving" in line]
    assert len([s for s in steps if "replaces pid" in s]) == 4
    returncode, log = app.stop()
    assert returncode == 0, log
    assert "Traceback" not in log
    for pid in set().union(*generations):
        assert not alive(pid)


def test_a_new_worker_that_cannot_start_leaves_the_old_ones_serving(
    supervised: Callable[..., Supervised], tmp_path: Path
) -> None:
    write_app(tmp_path, "v0")
    app = start(supervised, tmp_path)
    port = app.port
    before = app.workers()
    (tmp_path / "zd_app.py").write_text("raise RuntimeError('broken deploy')\n")
    since = len(app.log)
    with hammering(port, fresh=2, kept=2) as tally:
        app.server.proc.send_signal(signal.SIGHUP)
        line = app.wait_for_match(r"^.*restart stopped.*$", since=since, timeout=20).group(0)
        assert "the workers that are serving keep serving" in line
        wait_until(lambda: children(app.pid) == before, 10, "the failed new worker to be gone")
        served = tally.ok
        wait_until(lambda: tally.ok > served + 100, 10, "the old workers to keep serving")
    assert tally.failures == [], tally.failures[:10]
    assert {a.split()[1] for a in tally.answers} == {"v0"}
    write_app(tmp_path, "v1")  # the fix is deployed: the next SIGHUP goes through
    since = len(app.log)
    app.server.proc.send_signal(signal.SIGHUP)
    app.wait_for_match(r"restart done", since=since, timeout=20)
    assert not app.workers() & before
    returncode, log = app.stop()
    assert returncode == 0, log
