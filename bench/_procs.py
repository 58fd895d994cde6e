"""Processes for the benchmark scripts: start a peer server, watch its CPU, stop it.

Shared by ``bench/http_load.py`` and ``bench/ws.py`` (imported as ``_procs``:
a script run as ``python bench/<script>.py`` has this folder on ``sys.path``).
Linux only: it reads ``/proc`` and sets a parent-death signal with ``prctl``.

Every process started here has its own session (Ctrl-C reaches only the
script, whose ``finally`` blocks stop the children in order) and gets SIGKILL
if the script dies without cleaning up.  A server runs pinned to
``SERVER_CPU`` with ``taskset``, which execs it: the PID is the server's.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, ClassVar

ROOT = Path(__file__).resolve().parent.parent  # the repository: children run from here
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # loopback only
SERVER_CPU = 0
START_TIMEOUT = 20.0  # seconds for a server to accept connections
STOP_TIMEOUT = 10.0  # seconds after the stop signal before SIGKILL
CLK_TCK = os.sysconf("SC_CLK_TCK")

CpuTimes = dict[int, tuple[int, int]]  # CPU number -> (busy, total) jiffies


class BenchError(Exception):
    """A problem that stops the benchmark (or one server's runs), with a message for the user."""


def script(name: str, module: str) -> list[str]:
    """The console script next to this Python, else ``python -m module``."""
    path = BIN / name
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


@dataclass(frozen=True)
class Peer:
    """A server to measure: its key on the command line, its label, how to start it."""

    key: str
    label: str
    modules: tuple[str, ...]  # importable modules the server needs
    argv: Callable[[int], list[str]]  # port -> command line
    env: Mapping[str, str] = field(default_factory=dict)  # added to this server's environment


# --- processes ---------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the script dies without cleaning up."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: list[str],
    stdout: IO[bytes] | int,
    *,
    stdin: IO[bytes] | int = subprocess.DEVNULL,
    stderr: IO[bytes] | int = subprocess.STDOUT,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` from ROOT in its own session, killed if the script dies.

    ``env`` is added to this process's environment, for this child only.
    """
    # Own session: Ctrl-C reaches only the script, whose finally blocks stop
    # the children in order; the death signal covers a SIGKILL of the script.
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        env={**os.environ, **env} if env else None,
        preexec_fn=die_with_parent,  # noqa: PLW1509  (single-threaded scripts)
    )


def stop_process(
    proc: subprocess.Popen[bytes],
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = STOP_TIMEOUT,
    *,
    group: bool = False,
) -> bool:
    """``sig``, then SIGKILL after ``timeout``; True if it had to be killed.

    With ``group``, SIGKILL also goes to the process group it leads (its session,
    started by ``spawn``) whether or not it stopped by itself: anything it
    spawned dies too.  Without, only its PID is signalled.  Safe to call twice.
    """
    killed = False
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            killed = True
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    elif killed:
        proc.kill()
    proc.wait()
    return killed


# --- /proc --------------------------------------------------------------------


class LineReader:
    """Lines of a child's stdout, each awaited with a deadline.

    Read with ``select`` and ``os.read``, not the pipe's text wrapper: lines
    written at once would sit in its buffer, out of ``select``'s sight.
    """

    def __init__(self, proc: subprocess.Popen[bytes], what: str) -> None:
        self.proc = proc
        self.what = what  # names the child in errors
        self._buf = b""

    def line(self, timeout: float) -> str:
        """The next line (stripped); BenchError on timeout or when the child exits first."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.what} silent for {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise BenchError(f"{self.what} exited ({self.proc.wait()}) early")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").strip()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, all threads, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_kib(pid: int) -> int:
    """A process's resident set (``VmRSS`` in ``/proc/PID/status``), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError as exc:
        raise BenchError(f"cannot read the RSS of pid {pid}: {exc}") from None
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_times() -> CpuTimes:
    """Per CPU: (busy, total) jiffies since boot, from /proc/stat."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in values[:8]]
                total = sum(v)
                times[int(name[3:])] = (total - v[3] - v[4], total)  # minus idle, iowait
    return times


def busy_pct(before: CpuTimes, after: CpuTimes, cpu: int) -> float:
    """How busy ``cpu`` was between two ``cpu_times()`` readings, in %."""
    busy = after[cpu][0] - before[cpu][0]
    total = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total if total else 0.0


def free_port() -> int:
    """A TCP port on HOST that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- a server -----------------------------------------------------------------


class RunningServer:
    """A server subprocess pinned to SERVER_CPU; ``stop()`` is safe to call twice.

    Its output goes to ``<logdir>/<peer key>[-<tag>].log``.  Subclasses choose
    how it is stopped: ``stop_signal``, and ``kill_group`` (SIGKILL its process
    group at the end, or only its PID after a timeout).
    """

    stop_signal: ClassVar[signal.Signals] = signal.SIGINT
    kill_group: ClassVar[bool] = True

    def __init__(self, peer: Peer, logdir: Path, tag: str | None = None) -> None:
        self.peer = peer
        self.port = free_port()
        name = peer.key if tag is None else f"{peer.key}-{tag}"
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        argv = ["taskset", "-c", str(SERVER_CPU), *peer.argv(self.port)]
        self.command = " ".join(argv)
        self.proc = spawn(argv, self._log, env=peer.env)

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of its output, indented."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        return "\n".join("    " + line for line in text[-lines:]) or "    (no output)"

    def check_alive(self) -> None:
        """BenchError, with the command and its output, if it has exited."""
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.peer.label} exited with status {self.proc.returncode}\n"
                f"  command: {self.command}\n{self.log_tail()}"
            )

    def wait_ready(self) -> None:
        """Return once it accepts a TCP connection; BenchError after START_TIMEOUT."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{self.peer.label} did not accept connections on port {self.port} "
                        f"within {START_TIMEOUT:g} s\n  command: {self.command}\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """Its CPU time so far, in seconds."""
        return cpu_seconds(self.proc.pid)

    def stop(self) -> str | None:
        """``stop_signal``, then SIGKILL after STOP_TIMEOUT; a note if it had to."""
        note = None
        if stop_process(self.proc, self.stop_signal, group=self.kill_group):
            note = (
                f"{self.peer.label} ignored {self.stop_signal.name} for {STOP_TIMEOUT:g} s; killed"
            )
        self._log.close()
        return note


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid`` (children first), from ``/proc/<pid>/task/*/children``."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process and its live descendants (worker processes), in seconds."""
    total = cpu_seconds(pid)
    for child in descendants(pid):
        try:
            total += cpu_seconds(child)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


CpuDetail = dict[int, tuple[int, int, int]]  # CPU number -> (busy, irq + softirq, total) jiffies


def cpu_times_detail() -> CpuDetail:
    """Per CPU: (busy, irq + softirq, total) jiffies since boot, from /proc/stat.

    Interrupt time is charged to no process: on loopback, much of the TCP
    receive work of the peer runs as softirq on the sender's CPU.
    """
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in values[:8]]
                total = sum(v)
                times[int(name[3:])] = (total - v[3] - v[4], v[5] + v[6], total)
    return times


def cpu_split_pct(before: CpuDetail, after: CpuDetail, cpu: int) -> tuple[float, float]:
    """How busy ``cpu`` was between two ``cpu_times_detail()`` readings, and in interrupts, in %."""
    total = after[cpu][2] - before[cpu][2]
    if not total:
        return 0.0, 0.0
    busy = after[cpu][0] - before[cpu][0]
    irq = after[cpu][1] - before[cpu][1]
    return 100.0 * busy / total, 100.0 * irq / total


# --- before/after: the same peer, run from another tree ------------------------

BEFORE_HELP = (
    "a source tree of peregrine_rt to measure next to this one (e.g. a git worktree of an "
    "older commit, its C extension built): every selected peregrine server also runs with "
    "PYTHONPATH=DIR (that subprocess only), as <key>_before"
)
ROUNDS_HELP = (
    "run the whole list of servers this many times, interleaved (A B C, A B C, ...), and "
    "report the median of the rounds per point"
)


def before_peer(peer: Peer, tree: Path) -> Peer:
    """``peer`` run from ``tree``: ``PYTHONPATH=tree`` puts its ``peregrine_rt`` first.

    The console script ``peregrine-rt`` (and a server started by its path, not
    with ``-m``) has no current directory on ``sys.path`` ahead of
    ``PYTHONPATH``, so the tree's package wins over the editable install; the
    bench's own ``bench.servers`` modules still come from this checkout.
    ``peregrine_origin`` tells which one a running server loaded.
    """
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    return replace(
        peer,
        key=f"{peer.key}_before",
        label=f"{peer.label} BEFORE",
        env={**peer.env, "PYTHONPATH": path},
    )


def check_tree(tree: Path) -> Path:
    """``tree`` resolved; BenchError unless it holds a ``peregrine_rt`` package."""
    tree = tree.expanduser().resolve()
    if not (tree / "peregrine_rt" / "__init__.py").is_file():
        raise BenchError(f"--before {tree}: no peregrine_rt/__init__.py there")
    return tree


def with_before(peers: list[Peer], tree: Path | None) -> list[Peer]:
    """``peers``, each peregrine one followed by its twin from ``tree`` (if given)."""
    out: list[Peer] = []
    for peer in peers:
        out.append(peer)
        if tree is not None and peer.key.startswith("peregrine"):
            out.append(before_peer(peer, tree))
    return out


def peregrine_origin(pid: int) -> str:
    """Where a running server's ``peregrine_rt`` comes from: its C extension's folder.

    Read from ``/proc/<pid>/maps`` (the extension is loaded when the server
    parses its first request); "?" if it is not mapped (yet, or at all).
    """
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "/peregrine_rt/" in path and "_speedups" in path:
                    return path.split("/peregrine_rt/", 1)[0]
    except OSError:
        pass
    return "?"


def median(values: list[float]) -> float:
    """The median (of an odd count, the middle value; of an even one, the mean of the two)."""
    return statistics.median(values)
