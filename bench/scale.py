"""Many idle WebSockets on one server process: event-loop stalls from heartbeats and broadcasts.

Run: ``.venv/bin/python bench/scale.py [--sockets 20000] [--quick] [--before DIR] [--tree DIR]``
(the load generator needs picows and uvloop: ``pip install -r bench/requirements-ws.txt``)

Issue 21, item 4: with 20,000 idle sockets, heartbeat pings must not stall
the server over 50 ms, and during a broadcast to all of them a fresh HTTP
request must still answer within 50 ms (p99).  One server process
(``bench/servers/scale_peregrine.py``, run by its path) pinned to CPU 0; the
load generator (``bench/scale_client.py``, picows on uvloop, one process)
pinned to CPU 1 opens the sockets, answers every ping and notes when each
broadcast reaches each socket.  Every socket subscribes to one hub topic.
Both raise their open-file limit to the hard limit (this script first raises
the hard limit itself when it is root and the hard limit is too low for the
sockets).  Loopback only.

The server's RSS (``VmRSS``) is read before the first socket opens, once they
are open (after the settling pause), after the heartbeat phase and after the
broadcasts, and reported with the growth per socket over the first reading.

Per tree, after the sockets are open and a settling pause:

With ``--gc-freeze`` the server calls ``gc.freeze()`` once the sockets are
open, so that Python's cyclic garbage collector no longer walks them (a full
collection of a heap holding 20,000 sockets is itself a stall; ``/lag``
reports the longest collection and the count per generation next to the lag).

1. **heartbeat** (``--heartbeat`` s, 30; pings every ``--ping-interval`` s, 5;
   the server closes a socket whose pong is ``--ping-timeout`` s late):
   nothing else happens.  Measured: the server's own lag monitor (``GET /lag``
   every second: the worst wake-up delay of ``Server.lag`` since the previous
   call; ``null`` on a tree without it), and from outside a probe: a fresh
   TCP connection and ``GET /ping`` every 20 ms, open loop (a request starts on
   schedule even if earlier ones have not answered, and its latency counts
   from its scheduled time, so a stall is not hidden by the probe waiting on
   it), p50/p99/max.  Also the pings the load generator answered, and the
   most in any 100 ms (waves show as a high peak against the mean).
2. **broadcast** (``--broadcasts`` of them, 10, one every ``--every`` s, 2):
   ``GET /bcast`` publishes one message to every socket; heartbeats go on.
   Measured: the same probe and lag monitor, and per broadcast the time from
   sending ``GET /bcast`` to the last socket receiving the message
   (``time.monotonic()`` in both processes: one machine, one clock), how many
   sockets got it, and the time the server spent in ``publish()``.

The probe runs in this script (asyncio on uvloop, not pinned): its own
scheduling delay is reported too (``probe self-lag``), so that a late probe is
not mistaken for a late server, and so are the CPU time of the server and of
the load generator per phase, how long the server waited for its CPU while
ready to run (``/proc/PID/schedstat``: the part of its lag that other
processes caused), and how busy each CPU was (a load generator near 100 % of
its CPU may be the limit; a CPU much busier than its pinned process was shared
with someone else).

Trees: the ``peregrine_rt`` this Python imports (``after``), or ``--tree DIR``
instead; ``--before DIR`` also measures another tree (``PYTHONPATH=DIR`` for
its server only), and ``--rounds N`` alternates them N times.  Each server's
line says which ``peregrine_rt`` it loaded (the C extension it mapped).

One summary line per run: ``scale tree=<name> sockets=<ok> hb_lag_max_ms=...
hb_probe_p99_ms=... bc_probe_p99_ms=... bc_reach_all_ms=<median>/<max> ...``.
Every phase is bounded in time (``--quick``: 5,000 sockets, 12 s of heartbeat
at 3 s, 5 broadcasts); every process started here is stopped by its PID
(SIGTERM, then SIGKILL) in ``finally`` blocks, and gets SIGKILL if this script
dies first.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from _procs import (
    HOST,
    ROOT,
    SERVER_CPU,
    BenchError,
    LineReader,
    busy_pct,
    check_tree,
    cpu_seconds,
    cpu_times,
    free_port,
    median,
    peregrine_origin,
    rss_kib,
    spawn,
    stop_process,
)
from ws import CLIENT_CPU, CLIENT_CPU_WARN, Client, _loadavg

SERVER = ROOT / "bench" / "servers" / "scale_peregrine.py"
LOAD_GENERATOR = ROOT / "bench" / "scale_client.py"
PROBE_INTERVAL = 0.02
PROBE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 240.0
FD_MARGIN = 1000
GOAL_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 if empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def raise_fd_limit(need: int) -> str:
    """Soft limit to the hard one; the hard one to ``need`` first if it is lower and we may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = ""
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            note = f"hard limit raised {hard} -> {need}; "
        except (ValueError, OSError):
            note = f"hard limit {hard} < {need} and cannot be raised; "
    _soft2, hard2 = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard2, hard2))
    return f"{note}open files: soft {soft} -> {hard2} (children inherit it)"


# --- HTTP from the probe -----------------------------------------------------------


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        return status, body
    finally:
        writer.close()


@dataclass
class Phase:
    name: str
    seconds: float
    probe_ms: list[float] = field(default_factory=list)
    probe_errors: int = 0
    probe_self_lag_ms: list[float] = field(default_factory=list)
    server_lag_ms: list[float | None] = field(default_factory=list)
    gc_ms: list[float] = field(default_factory=list)  # the longest collection per ~1 s
    gc_counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    bcasts: list[dict[str, Any]] = field(default_factory=list)
    server_cpu: float = 0.0
    server_wait: float = 0.0  # % of the phase the server was runnable but not running
    client_cpu: float = 0.0
    busy: tuple[float, float] = (0.0, 0.0)
    pings: int = 0
    ping_peak_100ms: int = 0
    ping_mean_100ms: float = 0.0
    closed_during: int = 0
    notes: list[str] = field(default_factory=list)

    def probe(self) -> str:
        p = self.probe_ms
        errors = f", {self.probe_errors} failed" if self.probe_errors else ""
        return (
            f"probe {len(p)} requests p50/p99/max {percentile(p, 0.5):.1f}/"
            f"{percentile(p, 0.99):.1f}/{max(p, default=0):.1f} ms{errors} "
            f"(probe self-lag max {max(self.probe_self_lag_ms, default=0):.1f} ms)"
        )

    def lag(self) -> str:
        gcs = (
            f"; gc: longest {max(self.gc_ms, default=0):.1f} ms, collections of generation "
            f"0/1/2: {'/'.join(str(n) for n in self.gc_counts)}"
        )
        known = [x for x in self.server_lag_ms if x is not None]
        if not known:
            return "server lag monitor: none in this tree" + gcs
        over = sum(1 for x in known if x > GOAL_MS)
        # a second whose worst lag is mostly one collection: the collector's stall, not ours
        by_gc = sum(
            1
            for lag, pause in zip(self.server_lag_ms, self.gc_ms, strict=False)
            if lag is not None and lag > GOAL_MS and pause >= 0.8 * lag
        )
        return (
            f"server lag (worst per ~1 s) max {max(known):.1f} ms, median "
            f"{median(known):.1f} ms, {over} of {len(known)} seconds over {GOAL_MS:.0f} ms "
            f"({by_gc} of them mostly a garbage collection)" + gcs
        )


async def run_phase(port: int, phase: Phase, broadcasts: int = 0, every: float = 2.0) -> None:
    """The probe every PROBE_INTERVAL, /lag every second, and /bcast ``broadcasts`` times."""
    start = time.monotonic() + 0.05
    end = start + phase.seconds
    tasks: set[asyncio.Task[None]] = set()

    async def probe(intended: float) -> None:
        try:
            status, body = await asyncio.wait_for(http_get(port, "/ping"), PROBE_TIMEOUT)
            if status == 200 and body == b"pong":
                phase.probe_ms.append((time.monotonic() - intended) * 1000)
                return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass
        phase.probe_errors += 1

    async def lag_poller() -> None:
        await http_get(port, "/lag")  # reset the window
        t = start
        while True:
            t += 1.0
            if t > end:
                return
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            try:
                _, body = await asyncio.wait_for(http_get(port, "/lag"), PROBE_TIMEOUT)
                info = json.loads(body)
                phase.server_lag_ms.append(info["worst_ms"])
                phase.gc_ms.append(info.get("gc_ms", 0.0))
                for g, n in enumerate(info.get("gc", [])):
                    phase.gc_counts[g] += n
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                phase.notes.append("a /lag request failed")

    async def broadcaster() -> None:
        t = start + 1.0
        for _ in range(broadcasts):
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            sent = time.monotonic()
            try:
                status, body = await asyncio.wait_for(http_get(port, "/bcast"), 30)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                phase.notes.append(f"/bcast failed: {exc!r}")
                continue
            if status != 200:
                phase.notes.append(f"/bcast answered {status}: {body[:100]!r}")
                continue
            answered = time.monotonic()
            info = json.loads(body)
            phase.bcasts.append({**info, "sent": sent, "answer_ms": (answered - sent) * 1000})
            t += every

    side = [asyncio.create_task(lag_poller())]
    if broadcasts:
        side.append(asyncio.create_task(broadcaster()))
    k = 0
    while True:
        intended = start + k * PROBE_INTERVAL
        if intended >= end:
            break
        delay = intended - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.probe_self_lag_ms.append(max(0.0, time.monotonic() - intended) * 1000)
        task = asyncio.create_task(probe(intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        k += 1
    await asyncio.wait([*side, *tasks], timeout=PROBE_TIMEOUT + 30)


# --- one tree ------------------------------------------------------------------------


class ScaleClient(Client):
    """``bench/scale_client.py`` pinned to CLIENT_CPU, spoken to by lines on stdin/stdout."""

    def __init__(self, url: str, sockets: int, max_seconds: float, log: Any) -> None:
        argv = [
            "taskset",
            "-c",
            str(CLIENT_CPU),
            sys.executable,
            "-P",
            str(LOAD_GENERATOR),
            url,
            "--sockets",
            str(sockets),
            "--max-seconds",
            f"{max_seconds:g}",
        ]
        self.command = " ".join(argv)
        self.log = log
        self.proc = spawn(argv, subprocess.PIPE, stdin=subprocess.PIPE, stderr=log)
        self._lines = LineReader(self.proc, f"load generator ({self.command})")

    def report(self) -> dict[str, Any]:
        self.send("REPORT")
        line = self.line(60.0)
        try:
            return json.loads(line)  # type: ignore[no-any-return]
        except ValueError:
            raise BenchError(f"load generator said {line[:200]!r}") from None


@dataclass
class TreeResult:
    name: str
    origin: str = "?"
    sockets: int = 0
    connect_s: float = 0.0
    phases: list[Phase] = field(default_factory=list)
    closed: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rss_kib: dict[str, int] = field(default_factory=dict)  # the server's RSS at each step

    def rss_per_socket(self, step: str) -> float | None:
        """KiB per socket at ``step`` over the server's RSS before any socket opened."""
        base, now = self.rss_kib.get("base"), self.rss_kib.get(step)
        if base is None or now is None or not self.sockets:
            return None
        return (now - base) / self.sockets


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise BenchError(f"server exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError("server not accepting connections after 30 s") from None
            time.sleep(0.05)


def run_queue_wait(pid: int) -> float:
    """Seconds the process's main thread has waited on a run queue (``/proc/PID/schedstat``).

    Time it was ready to run while the CPU ran something else: on a shared
    machine, the part of a stall that other processes caused.
    """
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def measure_phase(
    server: subprocess.Popen[bytes],
    client: ScaleClient,
    port: int,
    phase: Phase,
    sockets: int,
    broadcasts: int = 0,
    every: float = 2.0,
) -> None:
    cpus0 = cpu_times()
    s0, c0 = cpu_seconds(server.pid), cpu_seconds(client.pid)
    w0 = run_queue_wait(server.pid)
    t0 = time.monotonic()
    uvloop.run(run_phase(port, phase, broadcasts, every))
    if broadcasts:
        time.sleep(2.0)  # deliveries still in flight
    elapsed = time.monotonic() - t0
    s1, c1 = cpu_seconds(server.pid), cpu_seconds(client.pid)
    phase.server_wait = 100 * (run_queue_wait(server.pid) - w0) / elapsed
    cpus1 = cpu_times()
    phase.server_cpu = 100 * (s1 - s0) / elapsed
    phase.client_cpu = 100 * (c1 - c0) / elapsed
    phase.busy = (busy_pct(cpus0, cpus1, SERVER_CPU), busy_pct(cpus0, cpus1, CLIENT_CPU))
    report = client.report()
    phase.pings = len(report["ping_times"])
    times = [t for t in report["ping_times"] if t0 <= t <= t0 + phase.seconds]
    bins: dict[int, int] = {}
    for t in times:
        b = int((t - t0) * 10)
        bins[b] = bins.get(b, 0) + 1
    phase.ping_peak_100ms = max(bins.values(), default=0)
    phase.ping_mean_100ms = len(times) / max(1.0, phase.seconds * 10)
    phase.closed_during = report["closed"]
    for b in phase.bcasts:
        got = report["broadcasts"].get(str(b["seq"]))
        if got is None:
            b.update(count=0, reach_all_ms=None)
        else:
            b.update(count=got[0], reach_all_ms=(got[2] - b["sent"]) * 1000)
    if phase.client_cpu > CLIENT_CPU_WARN:
        phase.notes.append(f"WARNING: load generator at {phase.client_cpu:.0f}% of its CPU")
    if phase.busy[0] - phase.server_cpu > 15:
        phase.notes.append(
            f"CPU {SERVER_CPU} {phase.busy[0]:.0f}% busy, server {phase.server_cpu:.0f}%: "
            "someone else used it"
        )
    if phase.busy[1] - phase.client_cpu > 15:
        phase.notes.append(
            f"CPU {CLIENT_CPU} {phase.busy[1]:.0f}% busy, load generator "
            f"{phase.client_cpu:.0f}% (and the probe): someone else used it"
        )


def run_tree(name: str, tree: Path | None, args: argparse.Namespace, logdir: Path) -> TreeResult:
    res = TreeResult(name)
    port = free_port()
    env = {"PYTHONPATH": str(tree)} if tree else {}
    log_path = logdir / f"server-{name}-{args.round}.log"
    argv = [
        "taskset",
        "-c",
        str(SERVER_CPU),
        sys.executable,
        str(SERVER),
        "--host",
        HOST,
        "--port",
        str(port),
        "--ping-interval",
        f"{args.ping_interval:g}",
        "--ping-timeout",
        f"{args.ping_timeout:g}",
        "--max-connections",
        str(args.sockets + FD_MARGIN),
    ]
    budget = CONNECT_TIMEOUT + args.settle + args.heartbeat + args.broadcasts * args.every + 120
    with open(log_path, "wb") as log, open(logdir / f"client-{name}.log", "wb") as clog:
        server = spawn(argv, log, env=env)
        client: ScaleClient | None = None
        try:
            _wait_ready(server, port, log_path)
            status, _ = uvloop.run(http_get(port, "/ping"))
            if status != 200:
                raise BenchError(f"GET /ping answered {status}")
            res.origin = peregrine_origin(server.pid)
            res.rss_kib["base"] = rss_kib(server.pid)  # taskset execs the server: same pid
            shown = " ".join(f"{k}={v}" for k, v in env.items())
            print(f"  server: {shown + ' ' if shown else ''}{' '.join(argv)}", flush=True)
            print(f"  peregrine_rt from {res.origin}", flush=True)
            client = ScaleClient(f"ws://{HOST}:{port}/ws", args.sockets, budget, clog)
            line = client.line(CONNECT_TIMEOUT)
            if not line.startswith("READY "):
                raise BenchError(f"load generator said {line!r}")
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            res.sockets, res.connect_s = int(fields["ok"]), float(fields["seconds"])
            failed = int(fields["failed"])
            print(
                f"  {res.sockets} sockets open in {res.connect_s:.1f} s"
                + (f", {failed} failed" if failed else "")
                + f" (load {_loadavg()})",
                flush=True,
            )
            if res.sockets == 0:
                raise BenchError("no socket opened")
            if args.gc_freeze:
                status, body = uvloop.run(http_get(port, "/gc-freeze"))
                print(f"  gc.freeze() in the server: {body.decode()}", flush=True)
            time.sleep(args.settle)
            res.rss_kib["open"] = rss_kib(server.pid)
            client.report()  # drop the pings of the settling pause
            hb = Phase("heartbeat", args.heartbeat)
            measure_phase(server, client, port, hb, res.sockets)
            res.phases.append(hb)
            res.rss_kib["heartbeat"] = rss_kib(server.pid)
            bc = Phase("broadcast", args.broadcasts * args.every + 1.0)
            measure_phase(server, client, port, bc, res.sockets, args.broadcasts, args.every)
            res.phases.append(bc)
            res.rss_kib["broadcast"] = rss_kib(server.pid)
            final = client.report()
            res.closed, res.close_codes = final["closed"], final["close_codes"]
        except BenchError as exc:
            res.errors.append(str(exc))
        finally:
            if client is not None:
                try:
                    client.send("STOP")
                except BenchError:
                    pass
                client.finish()
            stop_process(server, signal.SIGTERM, timeout=20)
    return res


# --- report ----------------------------------------------------------------------------


def print_tree(res: TreeResult, args: argparse.Namespace) -> str:
    for err in res.errors:
        print(f"  FAILED: {err}")
    by = {p.name: p for p in res.phases}
    hb, bc = by.get("heartbeat"), by.get("broadcast")
    if hb:
        print(
            f"  heartbeat {hb.seconds:g} s, pings every {args.ping_interval:g} s: "
            f"{hb.pings} pings answered, at most {hb.ping_peak_100ms} in 100 ms "
            f"(mean {hb.ping_mean_100ms:.0f})"
        )
        print(f"    {hb.lag()}")
        print(f"    {hb.probe()}")
        print(
            f"    CPU: server {hb.server_cpu:.0f}% (and {hb.server_wait:.0f}% waiting for its CPU), "
            f"load generator {hb.client_cpu:.0f}%; "
            f"cpu{SERVER_CPU}/{CLIENT_CPU} busy {hb.busy[0]:.0f}/{hb.busy[1]:.0f}%"
        )
        for note in hb.notes:
            print(f"    {note}")
    reach: list[float] = []
    if bc:
        reach = [b["reach_all_ms"] for b in bc.bcasts if b.get("reach_all_ms") is not None]
        counts = [b["count"] for b in bc.bcasts]
        publish = [b["publish_ms"] for b in bc.bcasts]
        print(
            f"  broadcast x{len(bc.bcasts)} to {res.sockets} sockets: reached all in "
            f"median {median(reach) if reach else 0:.0f} ms, max {max(reach, default=0):.0f} ms; "
            f"sockets reached min {min(counts, default=0)}; publish() "
            f"median {median(publish) if publish else 0:.0f} ms, max {max(publish, default=0):.0f} ms"
        )
        print(f"    {bc.lag()}")
        print(f"    {bc.probe()}")
        print(
            f"    CPU: server {bc.server_cpu:.0f}% (and {bc.server_wait:.0f}% waiting for its CPU), "
            f"load generator {bc.client_cpu:.0f}%; "
            f"cpu{SERVER_CPU}/{CLIENT_CPU} busy {bc.busy[0]:.0f}/{bc.busy[1]:.0f}%"
        )
        for note in bc.notes:
            print(f"    {note}")
    closed = f"{res.closed} {res.close_codes}" if res.closed else "0"
    print(f"  sockets closed by the server: {closed}")
    if "base" in res.rss_kib:
        steps = [
            f"{step} {res.rss_kib[step] / 1024:.1f} MiB"
            + (f" ({per:.2f} KiB/socket)" if (per := res.rss_per_socket(step)) is not None else "")
            for step in ("open", "heartbeat", "broadcast")
            if step in res.rss_kib
        ]
        print(
            f"  server RSS: before the sockets {res.rss_kib['base'] / 1024:.1f} MiB; "
            + "; ".join(steps)
        )
    per_open = res.rss_per_socket("open")
    per_hb = res.rss_per_socket("heartbeat")

    def lag_max(p: Phase | None) -> str:
        known = [x for x in (p.server_lag_ms if p else []) if x is not None]
        return f"{max(known):.1f}" if known else "null"

    def p99(p: Phase | None) -> str:
        return f"{percentile(p.probe_ms, 0.99):.1f}" if p and p.probe_ms else "n/a"

    def pmax(p: Phase | None) -> str:
        return f"{max(p.probe_ms):.1f}" if p and p.probe_ms else "n/a"

    return (
        f"scale tree={res.name} sockets={res.sockets} hb_lag_max_ms={lag_max(hb)} "
        f"hb_probe_p99_ms={p99(hb)} hb_probe_max_ms={pmax(hb)} bc_lag_max_ms={lag_max(bc)} "
        f"bc_probe_p99_ms={p99(bc)} bc_probe_max_ms={pmax(bc)} "
        f"bc_reach_all_ms={median(reach) if reach else 0:.0f}/{max(reach, default=0):.0f} "
        f"closed={res.closed} "
        f"rss_kib_per_socket={'n/a' if per_open is None else f'{per_open:.2f}'}"
        f"/{'n/a' if per_hb is None else f'{per_hb:.2f}'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sockets", type=int, default=None, help="idle sockets (default 20000)")
    ap.add_argument("--quick", action="store_true", help="5000 sockets, short phases")
    ap.add_argument("--heartbeat", type=float, default=None, help="seconds (default 30)")
    ap.add_argument("--ping-interval", type=float, default=None, help="seconds (default 5)")
    ap.add_argument("--ping-timeout", type=float, default=20.0)
    ap.add_argument("--broadcasts", type=int, default=None, help="how many (default 10)")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between broadcasts")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after opening")
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="once the sockets are open, the server calls gc.freeze() (GET /gc-freeze)",
    )
    ap.add_argument("--tree", type=Path, help="measure this tree instead of the installed one")
    ap.add_argument("--before", type=Path, metavar="DIR", help="also measure this tree")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the trees this many times")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quick = args.quick
    args.sockets = args.sockets or (5000 if quick else 20_000)
    args.heartbeat = args.heartbeat or (12.0 if quick else 30.0)
    args.ping_interval = args.ping_interval or (3.0 if quick else 5.0)
    if args.broadcasts is None:
        args.broadcasts = 5 if quick else 10
    trees: list[tuple[str, Path | None]] = []
    try:
        trees.append(("after", check_tree(args.tree)) if args.tree else ("after", None))
        if args.before:
            trees.append(("before", check_tree(args.before)))
    except BenchError as exc:
        ap.error(str(exc))
    fd_note = raise_fd_limit(args.sockets + FD_MARGIN)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and args.sockets + 200 > hard:
        args.sockets = hard - 200
        fd_note += f"; sockets capped at {args.sockets}"
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC  "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average {_loadavg()}"
    )
    print(
        f"# server on CPU {SERVER_CPU}, load generator (picows on uvloop) on CPU {CLIENT_CPU}, "
        f"probe in this process (unpinned); {args.sockets} sockets; heartbeat phase "
        f"{args.heartbeat:g} s with pings every {args.ping_interval:g} s; "
        f"{args.broadcasts} broadcasts every {args.every:g} s; {fd_note}"
    )
    lines = []
    with tempfile.TemporaryDirectory(prefix="peregrine-scale-bench-") as tmp:
        for i in range(args.rounds):
            args.round = i
            for name, tree in trees:
                where = str(tree) if tree else "the installed peregrine_rt"
                print(f"{name} ({where}), round {i + 1}/{args.rounds}  (load {_loadavg()})")
                res = run_tree(name, tree, args, Path(tmp))
                lines.append(print_tree(res, args))
                sys.stdout.flush()
    print(f"# load average at the end: {_loadavg()}")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
