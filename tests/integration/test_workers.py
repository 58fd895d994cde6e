"""Worker processes (``--workers N``, ``run(..., workers=N)``), run as real processes.

Each test starts a supervisor with the ``spawn`` fixture and learns its workers'
PIDs from ``/proc`` (children of the supervisor running ``worker_main``).  Only
those PIDs are ever signalled by a test, and any still alive at the end are
killed, so a failing test leaves no process behind.  Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt import _cli, _workers
from peregrine_rt.exceptions import HandlerError
from peregrine_rt.testing import wait_until_blocking

from .conftest import PYTHON, REPO, ServerProcess, get

APP = "tests.integration.apps_workers:Pid"
SCRIPT = "tests/integration/apps_workers.py"
GRACE = 2.0  # --shutdown-grace of the tests that do not set their own


# -- processes -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent PID) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def is_worker(pid: int) -> bool:
    try:
        return b"worker_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def children(parent: int) -> set[int]:
    """The live worker processes whose parent is ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat and stat[1] == parent and stat[0] != "Z" and is_worker(int(entry)):
                found.add(int(entry))
    return found


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (real clock) until truthy; return its value."""
    result: Any = None

    def check() -> Any:
        nonlocal result
        result = predicate()
        return result

    wait_until_blocking(check, timeout=timeout, message=what)
    return result


class Supervised:
    """A supervisor process, with the worker PIDs it has been seen with.

    Its stderr (where the workers log too) is read here with ``os.read``, not
    with ``ServerProcess.wait_for_log``: several lines written at once would
    sit in the text wrapper's buffer, out of ``select()``'s sight.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen: set[int] = set()
        self._partial = b""

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    @property
    def log(self) -> str:
        return self.server.log

    @property
    def port(self) -> int:
        line = self.wait_for_match(r"^.* workers on http://.*$").group(0)
        return int(line.rsplit(":", 1)[1])

    def workers(self, count: int = 2) -> set[int]:
        """The current workers, waiting (bounded) until there are ``count``."""

        def complete() -> set[int] | None:
            found = children(self.pid)
            return found if len(found) == count else None

        pids: set[int] = wait_until(complete, 10, f"{count} workers of {self.pid}")
        self.seen |= pids
        return pids

    def kill_worker(self, pid: int, signum: int = signal.SIGKILL) -> None:
        stat = _stat(pid)
        assert stat is not None and stat[1] == self.pid and is_worker(pid), pid
        os.kill(pid, signum)

    def _read(self, timeout: float) -> bool:
        """Read what stderr has within ``timeout`` into the log; False at end of file."""
        assert self.server.proc.stderr is not None
        fd = self.server.proc.stderr.fileno()
        if not select.select([fd], [], [], max(timeout, 0))[0]:
            return True
        data = os.read(fd, 65536)
        if not data:
            return False
        lines, _, self._partial = (self._partial + data).rpartition(b"\n")
        if lines:
            self.server.log += (lines + b"\n").decode()
        return True

    def read_log_for(self, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and self._read(remaining):
            pass
        return self.server.log

    def wait_for_match(self, pattern: str, since: int = 0, timeout: float = 10) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.server.log[since:], re.M)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not logged in {timeout} s: {self.log}")
            if not self._read(remaining):
                raise AssertionError(f"exited before logging {pattern!r}: {self.log}")
        return match

    def wait_for_log(self, needle: str, timeout: float = 10) -> str:
        return self.wait_for_match(rf"^.*{re.escape(needle)}.*$", timeout=timeout).group(0)

    def finish(self, timeout: float) -> tuple[int, str]:
        self.server.log += self._partial.decode()
        self._partial = b""
        return self.server.finish(timeout=timeout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = GRACE + 5) -> tuple[int, str]:
        self.server.proc.send_signal(signum)
        return self.finish(timeout=timeout)


@pytest.fixture
def supervised(spawn: Any) -> Iterator[Callable[..., Supervised]]:
    started: list[Supervised] = []

    def start(*args: str, **kwargs: Any) -> Supervised:
        one = Supervised(spawn(*args, **kwargs))
        started.append(one)
        return one

    yield start
    for one in started:
        if one.server.proc.poll() is None:
            one.server.proc.send_signal(signal.SIGSTOP)  # no restarts from here on
            one.seen |= children(one.pid)
        for pid in one.seen:
            if alive(pid) and is_worker(pid):
                os.kill(pid, signal.SIGKILL)
        one.server.kill()


def start_app(supervised: Callable[..., Supervised], *extra: str, **kwargs: Any) -> Supervised:
    return supervised(
        APP, "--port", "0", "--workers", "2", "--shutdown-grace", str(GRACE), *extra, **kwargs
    )


# -- clients -------------------------------------------------------------------------


def pid_answering(port: int) -> int:
    """The PID of the worker that answers one request on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(get("/", "Connection: close"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    return int(data.rsplit(b"\r\n\r\n", 1)[1])


def pids_until(port: int, done: Callable[[set[int]], bool], timeout: float = 10) -> set[int]:
    """PIDs answering fresh connections, until ``done(pids)``; every request must succeed."""
    answered: set[int] = set()
    deadline = time.monotonic() + timeout
    while not done(answered):
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s only these PIDs answered: {answered}")
        answered.add(pid_answering(port))
    return answered


def log_time(line: str) -> float:
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


# -- the tests -----------------------------------------------------------------------


def test_two_workers_answer_from_two_processes(supervised: Callable[..., Supervised]) -> None:
    app = start_app(supervised)
    port = app.port
    workers = app.workers()
    answered = pids_until(port, lambda pids: len(pids) >= 2)
    assert answered == workers
    assert app.pid not in answered  # the supervisor serves nothing itself
    # Each worker serves the one port (its slot's listening socket, opened by the supervisor).
    assert app.log.count(f"on http://127.0.0.1:{port}\n") == 3  # 2 workers + supervisor
    returncode, log = app.stop()
    assert returncode == 0, log
    assert "Traceback" not in log


def test_a_killed_worker_is_restarted(supervised: Callable[..., Supervised]) -> None:
    app = start_app(supervised)
    port = app.port
    before = app.workers()
    victim = min(before)
    app.kill_worker(victim)
    app.wait_for_log(f"(pid {victim}) was killed by SIGKILL; restarting it in")

    def replaced() -> set[int] | None:
        pids = children(app.pid)
        return pids if len(pids) == 2 and victim not in pids else None

    after: set[int] = wait_until(replaced, 10, "a new worker")
    app.seen |= after
    (new,) = after - before
    app.wait_for_log(f"(pid {new}) is serving")
    assert alive(min(after - {new}))  # the other worker was left alone
    answered = pids_until(port, lambda pids: new in pids)  # every request answered meanwhile
    assert victim not in answered
    assert answered <= after
    returncode, log = app.stop()
    assert returncode == 0, log


def test_a_worker_that_crashes_at_startup_is_restarted_with_backoff(
    supervised: Callable[..., Supervised], tmp_path: Path
) -> None:
    marker = tmp_path / "refuse-startup"
    app = start_app(supervised, env={"PID_APP_FAIL_IF": str(marker)})
    port = app.port
    victim = min(app.workers())
    marker.touch()  # from now on a new worker's startup() raises
    app.kill_worker(victim)
    restart = r"^(.{23}) .* worker (\d) \(pid \d+\) (.*); restarting it in ([\d.]+) s$"
    # Wait for the fourth restart: it comes after 0.1 + 0.2 + 0.4 s of backoff.
    since = 0
    found = []
    for _ in range(4):
        match = app.wait_for_match(restart, since=since, timeout=15)
        found.append(match)
        since += match.end()
    assert found[0].group(3) == "was killed by SIGKILL"
    assert all(m.group(3) == "exited with status 1 before serving" for m in found[1:])
    assert {m.group(2) for m in found} == {found[0].group(2)}  # one slot
    delays = [float(m.group(4)) for m in found]
    assert delays == [0.1, 0.2, 0.4, 0.8]  # doubling, not spinning
    times = [log_time(m.group(1)) for m in found]
    for previous, delay, at in zip(times, delays, times[1:], strict=False):
        assert at - previous >= delay - 0.01
    marker.unlink()  # the next attempt starts
    survivor = pids_until(port, lambda pids: len(pids) >= 1)  # still served meanwhile
    assert victim not in survivor
    serving = app.wait_for_match(
        rf"worker {found[0].group(2)} \(pid (\d+)\) is serving", since=since, timeout=15
    )
    app.seen.add(int(serving.group(1)))
    returncode, log = app.stop()
    assert returncode == 0, log


@pytest.mark.parametrize("group", [False, True], ids=["parent", "whole-group"])
def test_sigterm_closes_websockets_with_1001_and_stops_every_worker(
    supervised: Callable[..., Supervised], group: bool
) -> None:
    """SIGTERM to the parent; or, as systemd's KillMode=control-group does, to every process."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import ClientConnection, connect

    app = start_app(supervised)
    port = app.port
    workers = app.workers()
    connections: list[ClientConnection] = []
    holders: dict[int, ClientConnection] = {}
    with contextlib.ExitStack() as stack:
        deadline = time.monotonic() + 10
        while len(holders) < 2:  # one open WebSocket in each worker
            assert time.monotonic() < deadline, f"only {set(holders)} held WebSockets"
            url = f"ws://127.0.0.1:{port}/ws"
            ws = stack.enter_context(connect(url, open_timeout=5, close_timeout=5))
            connections.append(ws)
            ws.send("pid?")
            holders.setdefault(int(ws.recv(timeout=5)), ws)
        assert set(holders) == workers
        start = time.monotonic()
        app.server.proc.send_signal(signal.SIGTERM)
        if group:  # the workers get it too, and must still shut down gracefully
            for pid in workers:
                app.kill_worker(pid, signal.SIGTERM)
        for ws in connections:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=GRACE + 3)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
        returncode, log = app.finish(timeout=GRACE + _workers.KILL_MARGIN + 2)
    assert time.monotonic() - start < GRACE + 1  # graceful, not killed after the margin
    assert returncode == 0, log
    assert "received SIGTERM; stopping 2 workers" in log
    assert log.count("INFO shutting down (grace 2.0 s)") == 2  # each worker's graceful shutdown
    assert "killing" not in log
    assert "Traceback" not in log
    for pid in workers:
        assert not alive(pid)


def test_a_second_signal_stops_the_workers_at_once(
    supervised: Callable[..., Supervised],
) -> None:
    app = start_app(supervised, "--shutdown-grace", "30")  # the last option wins
    port = app.port
    workers = app.workers()
    hanging = []
    for _ in range(8):  # requests that never finish, in one worker or both
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(get("/hang"))
        hanging.append(sock)
    try:
        app.server.proc.send_signal(signal.SIGTERM)
        app.wait_for_log("received SIGTERM; stopping 2 workers")
        time.sleep(0.5)
        assert app.server.proc.poll() is None  # draining: the grace is 30 s
        start = time.monotonic()
        returncode, log = app.stop(signal.SIGINT, timeout=5)
        assert time.monotonic() - start < 2
    finally:
        for sock in hanging:
            sock.close()
    assert returncode == 0, log
    assert "second signal: workers stop now" in log
    assert "killing" not in log
    for pid in workers:
        assert not alive(pid)


def test_workers_still_running_after_the_grace_are_killed(
    supervised: Callable[..., Supervised],
) -> None:
    grace = 1.0
    app = supervised(
        APP,
        "--port",
        "0",
        "--workers",
        "2",
        "--shutdown-grace",
        str(grace),
        env={"PID_APP_HANG_SHUTDOWN": "1"},
    )
    app.wait_for_log("workers on http://")
    workers = app.workers()
    start = time.monotonic()
    returncode, log = app.stop(timeout=grace + _workers.KILL_MARGIN + 5)
    elapsed = time.monotonic() - start
    assert grace + _workers.KILL_MARGIN <= elapsed < grace + _workers.KILL_MARGIN + 2, log
    assert log.count("after the signal; killing it") == 2
    assert returncode == 1, log
    for pid in workers:
        assert not alive(pid)


def test_workers_shut_down_when_the_supervisor_is_killed(
    supervised: Callable[..., Supervised],
) -> None:
    app = start_app(supervised)
    port = app.port
    workers = app.workers()
    app.server.proc.kill()  # SIGKILL: no chance to forward anything
    app.server.proc.wait(timeout=5)
    wait_until(lambda: not any(alive(pid) for pid in workers), GRACE + 5, "workers to exit")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    log = app.read_log_for(0.5)
    assert log.count("the supervisor exited; shutting down") == 2


def test_several_workers_without_redis_warn_that_topics_stay_in_one_process(
    supervised: Callable[..., Supervised],
) -> None:
    app = start_app(supervised)
    line = app.wait_for_log("do not cross processes")
    assert "WARNING 2 workers without Redis" in line
    assert "use --redis URL" in line
    returncode, log = app.stop()
    assert returncode == 0, log


def test_the_first_worker_failing_to_start_stops_the_program(tmp_path: Path) -> None:
    marker = tmp_path / "refuse-startup"
    marker.touch()
    result = subprocess.run(
        [PYTHON, "-m", "peregrine_rt", APP, "--port", "0", "--workers", "2"],
        cwd=REPO,
        env={**os.environ, "PID_APP_FAIL_IF": str(marker)},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "RuntimeError: startup refused" in result.stderr  # the worker's traceback
    assert "worker 0 (pid " in result.stderr
    assert "exited with status 1 before serving; stopping" in result.stderr
    assert "restarting" not in result.stderr
    assert result.stderr.count("RuntimeError: startup refused") == 1  # tried once, by worker 0


def test_run_with_workers_serves_a_class_from_a_script(
    supervised: Callable[..., Supervised],
) -> None:
    """``python script.py`` whose ``__main__`` calls ``run(Pid, workers=2)``."""
    app = supervised("0", command=[PYTHON, SCRIPT])
    port = app.port
    workers = app.workers()
    assert pids_until(port, lambda pids: len(pids) >= 2) == workers
    returncode, log = app.stop(signal.SIGINT)
    assert returncode == 0, log
    assert "received SIGINT; stopping 2 workers" in log
    for pid in workers:
        assert not alive(pid)


class _Nested:
    class Inner:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.text("x")


def test_run_refuses_handlers_the_workers_could_not_import(tmp_path: Path) -> None:
    class Local:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.text("x")

    with pytest.raises(HandlerError, match=r"Local is defined inside a function"):
        pr.run(Local, port=0, workers=2)
    with pytest.raises(HandlerError, match=r"not an instance of _Nested.Inner"):
        pr.run(_Nested.Inner(), port=0, workers=2)
    with pytest.raises(ValueError, match="not a Unix socket"):
        pr.run(_Nested.Inner, uds=str(tmp_path / "s.sock"), workers=2)
    assert _workers.handler_target(_Nested.Inner) == (f"{__name__}:_Nested.Inner", None)


def test_the_plan_sent_to_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The port is reserved and concrete, SO_REUSEPORT is on, and --redis reaches the workers."""
    plans: list[tuple[_workers.WorkerPlan, int]] = []

    class FakeSupervisor:
        def __init__(
            self,
            plan: _workers.WorkerPlan,
            count: int,
            name: str,
            url: str,
            reserved: list[socket.socket],
        ) -> None:
            plans.append((plan, count))
            port = plan.config.port
            assert [sock.getsockname()[1] for sock in reserved] == [port]
            with socket.socket() as other, pytest.raises(OSError):  # reserved meanwhile
                other.bind(("127.0.0.1", port))

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(_workers, "_Supervisor", FakeSupervisor)
    root = logging.getLogger("peregrine_rt")
    monkeypatch.setattr(root, "level", root.level)  # main() sets it
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.1:6379")
    assert _cli.main([APP, "--port", "0", "--workers", "3"]) == 0
    assert _cli.main([APP, "--workers", "2", "--port", "0", "--redis", "redis://h:1/2"]) == 0
    (first, count), (second, _) = plans
    assert count == 3
    assert first.target == APP
    assert first.config.port != 0
    assert (first.config.workers, first.config.reuse_port) == (1, True)
    assert first.config.redis_url == "redis://10.0.0.1:6379"  # from $REDIS_URL
    assert second.config.redis_url == "redis://h:1/2"  # --redis wins


@dataclass
class FakeProcess:
    pid: int


@dataclass
class FakeWorker:
    index: int
    process: FakeProcess
    ready_at: float | None = None


async def test_the_redis_warning_only_without_redis(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="peregrine_rt")
    for redis_url, warned in ((None, True), ("redis://127.0.0.1:6379", False)):
        plan = _workers.WorkerPlan(APP, pr.Config(workers=1, redis_url=redis_url))
        supervisor = _workers._Supervisor(plan, 2, "Pid", "http://127.0.0.1:1", [])
        caplog.clear()
        for index in (0, 1):
            supervisor._on_ready(FakeWorker(index, FakeProcess(4242 + index)))  # type: ignore[arg-type]
        assert ("do not cross processes" in caplog.text) is warned
        assert "serving Pid with 2 workers on http://127.0.0.1:1" in caplog.text
