"""Fan-out: a chat room of N WebSocket clients, every message delivered to all (issue #6).

Run: ``.venv/bin/python bench/fanout.py [--quick] [--duration 10] [--window 8]
[--subscribers 1000,100] [--servers peregrine,websockets_asyncio]
[--quiet-wait 300 --retries 2]``
(Makefile target ``bench-fanout``; peers and the load generator:
``.venv/bin/pip install -r bench/requirements-ws.txt``; the ``--workers 2``
row needs ``/usr/bin/redis-server`` and ``pip install -e '.[redis]'``)

One server at a time, pinned to CPU 0 with ``taskset``; the load generator
(``bench/fanout_client.py``: picows on uvloop, one process) pinned to CPU 1;
loopback only, compression off.  Each server is a chat room: every connection
joins it, and every message a connection sends goes to every member, the
sender included:

* peregrine: ``bench/servers/fanout_peregrine.py:Room``, the hub
  (``ws.hub.subscribe(ws, "room")`` on open, ``await ws.hub.publish("room",
  message)`` per message), one process;
* peregrine_broadcast: ``...fanout_peregrine:Broadcast``, the handler's own
  member set and ``peregrine_rt.broadcast(members, message)``;
* peregrine_w2_redis: ``Room`` under ``peregrine-rt --workers 2 --redis URL``
  with a throwaway ``redis-server`` (started and stopped here).  Workers and
  redis-server run on both CPUs (the load generator's included): on a
  two-core machine this row is CPU-starved and says so; it is skipped, with a
  message, while ``peregrine-rt`` has no ``--workers``/``--redis``;
* websockets_asyncio: ``websockets.asyncio.server.broadcast()`` on uvloop;
* websockets_trio: ``await websockets.trio.server.broadcast()``;
* trio_websocket: a loop of ``await ws.send_message(message)`` over the
  members (trio-websocket has no broadcast helper; the loop beat a nursery
  with one task per member here: ``trio_websocket_nursery``, not run by
  default).

Scenario: N connections (1000, and 100 for a second row) open; connection 0
is also the publisher.  It sends 32-byte text messages carrying a sequence
number and its send time; every member counts its deliveries and records the
delivery latency (receive time minus send time; one process, one clock).
Pacing is a closed loop with a window: the next message is published as soon
as fewer than ``--window`` messages are still missing from some live member.
The server is then never more than ``window`` x N deliveries ahead of the
slowest member (a bounded queue, not an unbounded one, whatever the server's
own buffering), and the window is large enough that the server is never idle
waiting for the publisher (it is the bottleneck: check its CPU, ~100 %).  The
latency is then mostly queueing behind the window: about ``window`` x (time to
fan one message out), so it is comparable between servers only at the same
window.  ``--warmup`` seconds are discarded, ``--duration`` seconds measured:
deliveries/s is what all members received in that window, per second.

Every member must receive every message from its first one on exactly once,
in order; losses (gaps), duplicates, reordering, members missing messages at
the end, and members the server disconnected (with the close codes, e.g. 1008
from a slow-consumer policy) are printed with the row, never hidden.

CPU time of the server (all its processes), of redis-server and of the load
generator over the measured window comes from ``/proc/<pid>/stat``, how busy
CPUs 0 and 1 were, and how much of it was irq/softirq, from ``/proc/stat``.
On loopback much of the receiver's TCP work runs as softirq on the sending
CPU (a fan-out server's core shows 20-40 % of it), charged to whatever process
it interrupted or to none, so the process figures and the softirq figure may
overlap.  A load generator above 90 % of its CPU is flagged (it may be the
limit), and so is a CPU busier than its pinned process plus softirq by more
than 10 points (someone else used it).  The header says which
``peregrine_rt`` the servers import and its git state (run from an exported
tree with ``PYTHONPATH`` to measure a given commit).  On a shared machine,
``--quiet-wait`` waits before each point for both CPUs to be idle, and
``--retries`` measures a contended point again (the row says so).

Before/after: ``--before DIR`` also runs each selected peregrine server from
another source tree (``PYTHONPATH=DIR`` for that subprocess only, as
``<key>_before``; each server's line says which ``peregrine_rt`` it loaded), and
``--rounds N`` runs the whole list N times, interleaved (A B C, A B C, ...); the
tables then hold the median round per point, after every round's figure and
the ``after/before`` ratio of each.

The last line is ``peregrine_fanout n1000=<deliveries/s> p99_ms=<n>
vs_websockets_asyncio=<r>x`` (with ``--before``, `` vs_before=<r>x`` too).  Every phase is bounded in time; every process
started here is stopped by its PID (SIGTERM, then SIGKILL) in ``finally``
blocks, and gets SIGKILL if this script dies first.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from _procs import (
    BEFORE_HELP,
    HOST,
    ROOT,
    ROUNDS_HELP,
    SERVER_CPU,
    BenchError,
    LineReader,
    Peer,
    before_peer,
    check_tree,
    cpu_seconds,
    cpu_split_pct,
    cpu_times_detail,
    free_port,
    median,
    peregrine_origin,
    script,
    spawn,
    stop_process,
    tree_cpu_seconds,
)
from ws import (
    CLIENT_CPU,
    CLIENT_CPU_WARN,
    Client,
    WsServer,
    _has_module,
    _loadavg,
    _read_ready,
    _version,
    check_echo,
    raise_fd_limit,
)

CLIENT = ROOT / "bench" / "fanout_client.py"
SUBSCRIBERS = (1000, 100)
MESSAGE_SIZE = 32
WINDOW = 8
CONNECT_TIMEOUT = 180.0  # seconds for the client to open all its connections
SYNC_TIMEOUT = 20.0  # seconds for every member to get a first message
DRAIN_SECONDS = 10.0  # seconds, after STOP, for the messages in flight to arrive
RESULT_TIMEOUT = 30.0
REDIS = "/usr/bin/redis-server"
BASE = "websockets_asyncio"


def _peregrine(app: str, *extra: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *script("peregrine-rt", "peregrine_rt"),
        f"bench.servers.fanout_peregrine:{app}",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]


def _module(name: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", name, "--host", HOST, "--port", str(port)]


PEERS = {
    "peregrine": Peer(
        "peregrine", "peregrine_rt (hub)", ("peregrine_rt", "trio"), _peregrine("Room")
    ),
    "peregrine_broadcast": Peer(
        "peregrine_broadcast",
        "peregrine_rt broadcast()",
        ("peregrine_rt", "trio"),
        _peregrine("Broadcast"),
    ),
    # argv filled in once redis-server runs (its port)
    "peregrine_w2_redis": Peer(
        "peregrine_w2_redis",
        "peregrine_rt w2+redis*",
        ("peregrine_rt", "trio", "coredis", "peregrine_rt._redis_hub"),
        _peregrine("Room", "--workers", "2"),
    ),
    "websockets_asyncio": Peer(
        "websockets_asyncio",
        "websockets asyncio+uvloop",
        ("websockets.asyncio.server", "uvloop"),
        _module("bench.servers.fanout_websockets_asyncio"),
    ),
    "websockets_trio": Peer(
        "websockets_trio",
        "websockets trio",
        ("websockets.trio.server", "trio"),
        _module("bench.servers.fanout_websockets_trio"),
    ),
    "trio_websocket": Peer(
        "trio_websocket",
        "trio-websocket (loop)",
        ("trio_websocket",),
        _module("bench.servers.fanout_trio_websocket"),
    ),
    "trio_websocket_nursery": Peer(
        "trio_websocket_nursery",
        "trio-websocket (nursery)",
        ("trio_websocket",),
        lambda port: [
            *_module("bench.servers.fanout_trio_websocket")(port),
            "--fanout",
            "nursery",
        ],
    ),
}
DEFAULT_SERVERS = (
    "peregrine",
    "peregrine_broadcast",
    "websockets_asyncio",
    "websockets_trio",
    "trio_websocket",
    "peregrine_w2_redis",
)
DISTRIBUTIONS = (
    "peregrine_rt",
    "wsproto",
    "trio",
    "websockets",
    "uvloop",
    "trio-websocket",
    "picows",
    "coredis",
)


# --- servers -----------------------------------------------------------------


class MultiServer(WsServer):
    """A server with worker processes, on both CPUs; its CPU is the sum over its process tree."""

    def __init__(self, peer: Peer, logdir: Path, tag: str | None = None) -> None:
        self.peer = peer
        self.port = free_port()
        name = peer.key if tag is None else f"{peer.key}-{tag}"
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        argv = ["taskset", "-c", f"{SERVER_CPU},{CLIENT_CPU}", *peer.argv(self.port)]
        self.command = " ".join(argv)
        self.proc = spawn(argv, self._log)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)


class Redis:
    """A throwaway redis-server on a free port (no persistence), stopped by its PID."""

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.dir = logdir / "redis"
        self.dir.mkdir(exist_ok=True)
        self._log = open(logdir / "redis.log", "wb")  # noqa: SIM115  (closed in stop())
        argv = [
            "taskset",
            "-c",
            f"{SERVER_CPU},{CLIENT_CPU}",
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
        ]
        self.command = " ".join(argv)
        self.proc = spawn(argv, self._log)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited ({self.proc.returncode}): {self.command}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server not answering PING after {timeout:g} s")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def workers_missing() -> str | None:
    """Why the ``--workers 2`` + Redis row cannot run yet (None: it can)."""
    reasons = []
    try:
        out = subprocess.run(
            [*script("peregrine-rt", "peregrine_rt"), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        out = ""
        reasons.append(f"peregrine-rt --help failed: {exc}")
    for flag in ("--workers", "--redis"):
        if flag not in out:
            reasons.append(f"`peregrine-rt --help` has no {flag}")
    if not _has_module("peregrine_rt._redis_hub"):
        reasons.append("no peregrine_rt._redis_hub (RedisHub)")
    if not _has_module("coredis"):
        reasons.append("coredis not installed (pip install -e '.[redis]')")
    if not Path(REDIS).exists():
        reasons.append(f"no {REDIS} (apt-get install -y redis-server)")
    return "; ".join(reasons) or None


def provenance() -> str:
    """Which peregrine_rt the servers run: its folder, and the git state when there is one."""
    spec = importlib.util.find_spec("peregrine_rt")
    where = Path(spec.origin).parent if spec and spec.origin else Path("?")
    try:
        git = ["git", "-C", str(where.parent)]
        sha = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "peregrine_rt"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        state = f"git {sha}" + (", with uncommitted changes in peregrine_rt/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        state = "not a git checkout"
    return f"peregrine_rt from {where} ({state})"


# --- the load generator --------------------------------------------------------


class FanoutClient(Client):
    """``bench/fanout_client.py`` pinned to CLIENT_CPU, spoken to by lines on stdin/stdout."""

    def __init__(self, url: str, subscribers: int, window: int, max_seconds: float, log: IO[bytes]):
        argv = [
            "taskset",
            "-c",
            str(CLIENT_CPU),
            sys.executable,
            "-P",
            str(CLIENT),
            url,
            "--subscribers",
            str(subscribers),
            "--window",
            str(window),
            "--size",
            str(MESSAGE_SIZE),
            "--sync-timeout",
            f"{SYNC_TIMEOUT:g}",
            "--drain-seconds",
            f"{DRAIN_SECONDS:g}",
            "--max-seconds",
            f"{max_seconds:g}",
        ]
        self.command = " ".join(argv)
        self.log = log
        self.proc = spawn(argv, subprocess.PIPE, stdin=subprocess.PIPE, stderr=log)
        self._lines = LineReader(self.proc, f"load generator ({self.command})")


@dataclass
class FanResult:
    subscribers: int
    rate: float  # deliveries/s
    messages: float  # published messages/s
    p50_ms: float
    p99_ms: float
    client_cpu: float  # % of one CPU over the measured window
    server_cpu: float  # all the server's processes
    redis_cpu: float | None
    busy: tuple[float, float]  # % busy of SERVER_CPU, CLIENT_CPU
    irq: tuple[float, float]  # of which irq + softirq (charged to no process)
    check: str  # the delivery check, one line
    lossless: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class PeerResult:
    peer: Peer
    runs: dict[int, FanResult] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def delivery_check(r: dict[str, object], n: int) -> tuple[str, bool]:
    """One line on the exactly-once, in-order check, and whether it passed."""
    problems = []
    for key, what in (
        ("gaps", "messages lost (gaps)"),
        ("duplicates", "duplicates"),
        ("reordered", "out of order"),
        ("malformed", "malformed"),
        ("disconnected", "members disconnected by the server"),
    ):
        if r[key]:
            problems.append(f"{r[key]} {what}")
    if r["short"]:
        problems.append(f"{r['short']} live members missing {r['missing']} messages at the end")
    if r["close_codes"]:
        problems.append(f"close codes {r['close_codes']}")
    if not r["drained"]:
        problems.append(f"not drained within {DRAIN_SECONDS:g} s")
    live = r["subscribers_live"]
    if live != n:
        problems.append(f"{live} of {n} members live at the end")
    total = int(r["published"]) - int(r["base"])  # type: ignore[call-overload]
    if problems:
        return "DELIVERY CHECK FAILED: " + "; ".join(problems), False
    return f"every member got all {total} windowed messages exactly once, in order", True


def run_fanout(
    server: WsServer,
    redis: Redis | None,
    n: int,
    window: int,
    warmup: float,
    duration: float,
    logdir: Path,
) -> FanResult:
    notes: list[str] = []
    budget = CONNECT_TIMEOUT + SYNC_TIMEOUT + warmup + duration + DRAIN_SECONDS + 60
    with open(logdir / f"client-{server.peer.key}-{n}.log", "wb") as log:
        client = FanoutClient(server.url, n, window, budget, log)
        try:
            ok, ready_notes = _read_ready(client, n)
            notes.extend(ready_notes)
            client.send("START")
            line = client.line(SYNC_TIMEOUT + 10)
            if not line.startswith("STARTED "):
                raise BenchError(f"load generator said {line!r} (not every member got a message)")
            time.sleep(warmup)
            server.check_alive()
            cpus0 = cpu_times_detail()
            client0 = cpu_seconds(client.pid)
            server0 = server.cpu_seconds()
            redis0 = redis.cpu_seconds() if redis else 0.0
            t0 = time.monotonic()
            client.send("MARK")
            time.sleep(duration)
            client.send("STOP")
            elapsed = time.monotonic() - t0
            client1 = cpu_seconds(client.pid)
            server1 = server.cpu_seconds()
            redis1 = redis.cpu_seconds() if redis else 0.0
            cpus1 = cpu_times_detail()
            line = client.line(DRAIN_SECONDS + RESULT_TIMEOUT)
            try:
                result = json.loads(line)
            except ValueError:
                raise BenchError(f"load generator said {line!r}") from None
            if client.finish():
                notes.append("load generator had to be killed")
        finally:
            stop_process(client.proc, timeout=1.0)
    server.check_alive()
    if result["deliveries"] == 0:
        raise BenchError(f"no delivery in {duration:g} s with {n} members")
    if ok < n:
        notes.append(f"ran with {ok} members")
    check, lossless = delivery_check(result, ok)
    split0 = cpu_split_pct(cpus0, cpus1, SERVER_CPU)
    split1 = cpu_split_pct(cpus0, cpus1, CLIENT_CPU)
    res = FanResult(
        subscribers=n,
        rate=result["deliveries"] / result["seconds"],
        messages=result["messages"] / result["seconds"],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        client_cpu=100 * (client1 - client0) / elapsed,
        server_cpu=100 * (server1 - server0) / elapsed,
        redis_cpu=100 * (redis1 - redis0) / elapsed if redis else None,
        busy=(split0[0], split1[0]),
        irq=(split0[1], split1[1]),
        check=check,
        lossless=lossless,
        notes=notes,
    )
    if res.client_cpu > CLIENT_CPU_WARN:
        res.notes.append(
            f"WARNING: load generator at {res.client_cpu:.0f}% CPU: it may be the limit"
        )
    if redis is None:
        # softirq time (loopback TCP work of both ends) may be charged to no process
        for cpu, who, mine, busy, irq in (
            (SERVER_CPU, "server", res.server_cpu, res.busy[0], res.irq[0]),
            (CLIENT_CPU, "client", res.client_cpu, res.busy[1], res.irq[1]),
        ):
            if busy - irq - mine > 10:
                res.notes.append(
                    f"CPU {cpu} {busy:.0f}% busy ({irq:.0f}% softirq), {who} {mine:.0f}%: "
                    "someone else used it"
                )
    else:
        ours = res.server_cpu + (res.redis_cpu or 0) + res.client_cpu + res.irq[0] + res.irq[1]
        both = res.busy[0] + res.busy[1]
        res.notes.append(
            f"CPU-starved by design: 2 workers {res.server_cpu:.0f}% + redis-server "
            f"{res.redis_cpu:.0f}% + load generator {res.client_cpu:.0f}% + softirq "
            f"{res.irq[0] + res.irq[1]:.0f}% of {both:.0f}% busy over both CPUs"
        )
        if both - ours > 25:
            res.notes.append(f"{both - ours:.0f}% of a CPU went to someone else")
    return res


def bench_peer(peer: Peer, args: argparse.Namespace, counts: list[int], logdir: Path) -> PeerResult:
    res = PeerResult(peer)
    redis: Redis | None = None
    server: WsServer | None = None
    try:
        if peer.key == "peregrine_w2_redis":
            redis = Redis(logdir)
            redis.wait_ready()
            url = redis.url
            base_argv = peer.argv
            peer = Peer(
                peer.key, peer.label, peer.modules, lambda port: [*base_argv(port), "--redis", url]
            )
            res.peer = peer
            server = MultiServer(peer, logdir, f"fanout{args.round}")
        else:
            server = WsServer(peer, logdir, f"fanout{args.round}")
        server.wait_ready()
        check_echo(server)
        if peer.key.startswith("peregrine"):
            env = " ".join(f"{k}={v}" for k, v in peer.env.items()) or "(no env)"
            print(f"  peregrine_rt from {peregrine_origin(server.proc.pid)}; {env}", flush=True)
        for n in counts:
            try:
                for attempt in range(args.retries + 1):
                    waited = wait_quiet(args.quiet_wait)
                    r = run_fanout(
                        server, redis, n, args.window, args.warmup, args.duration, logdir
                    )
                    if waited:
                        r.notes.append(waited)
                    contended = any("someone else" in note for note in r.notes)
                    if not contended or attempt == args.retries:
                        break
                    print(f"  n={n:<5} contended ({r.rate:.0f} deliveries/s); measuring again")
                if attempt:
                    r.notes.append(f"measured {attempt + 1} times; earlier runs were contended")
            except BenchError as exc:
                res.errors.append(f"n{n}: {exc}")
                server.check_alive()
                continue
            res.runs[n] = r
            extra = f" redis {r.redis_cpu:3.0f}%" if r.redis_cpu is not None else ""
            print(
                f"  n={n:<5} {r.rate:>9.0f} deliveries/s ({r.messages:.0f} msg/s)  "
                f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  client {r.client_cpu:3.0f}% CPU  "
                f"server {r.server_cpu:3.0f}%{extra}  cpu{SERVER_CPU}/{CLIENT_CPU} busy "
                f"{r.busy[0]:.0f}/{r.busy[1]:.0f}% (softirq {r.irq[0]:.0f}/{r.irq[1]:.0f}%)",
                flush=True,
            )
            print(f"    {r.check}", flush=True)
            for note in r.notes:
                print(f"    {note}", flush=True)
    except BenchError as exc:
        res.errors.append(str(exc))
    finally:
        if server is not None:
            note = server.stop()
            if note:
                res.notes.append(note)
        if redis is not None:
            redis.stop()
    for err in res.errors:
        print(f"  FAILED: {err}", flush=True)
    for note in res.notes:
        print(f"  note: {note}", flush=True)
    return res


def wait_quiet(limit: float, busy_max: float = 15.0) -> str | None:
    """Wait (at most ``limit`` s) until both CPUs are under ``busy_max`` % busy over 2 s.

    Other people's work on a shared machine shows up as a CPU busier than its
    pinned process; this waits for it to pass.  Returns a note, or None.
    """
    if limit <= 0:
        return None
    t0 = time.monotonic()
    while True:
        before = cpu_times_detail()
        time.sleep(2.0)
        after = cpu_times_detail()
        busy = [cpu_split_pct(before, after, cpu)[0] for cpu in (SERVER_CPU, CLIENT_CPU)]
        waited = time.monotonic() - t0
        if max(busy) < busy_max:
            return f"waited {waited:.0f} s for idle CPUs" if waited > 3 else None
        if waited >= limit:
            return (
                f"CPUs still {busy[0]:.0f}/{busy[1]:.0f}% busy after waiting {waited:.0f} s; "
                "measured anyway"
            )


# --- the report ------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def print_table(results: dict[str, PeerResult], counts: list[int]) -> None:
    print()
    head = f"{'server':<27}"
    for n in counts:
        head += f"{f'n{n} deliv/s':>13}{'p50/p99 ms':>16}{'srv/cli CPU':>13}{'check':>7}"
    print(head)
    for res in results.values():
        row = f"{res.peer.label:<27}"
        for n in counts:
            r = res.runs.get(n)
            if r is None:
                row += f"{'failed':>13}{'':>16}{'':>13}{'':>7}"
            else:
                lat = f"{r.p50_ms:.1f}/{r.p99_ms:.1f}"
                cpu = f"{r.server_cpu:.0f}/{r.client_cpu:.0f}%"
                row += f"{r.rate:>13.0f}{lat:>16}{cpu:>13}{'ok' if r.lossless else 'LOSS':>7}"
        print(row)
    if BASE not in results:
        return
    print()
    print(f"{'ratios (deliveries/s)':<27}" + "".join(f"{f'n{n}/{BASE}':>26}" for n in counts))
    base = results[BASE]
    for res in results.values():
        row = f"{res.peer.label:<27}"
        for n in counts:
            mine, theirs = res.runs.get(n), base.runs.get(n)
            row += f"{_ratio(mine and mine.rate, theirs and theirs.rate):>26}"
        print(row)
    if any(k == "peregrine_w2_redis" for k in results):
        print("* 2 workers + redis-server + load generator on 2 CPUs: CPU-starved, see the notes")


def final_line(results: dict[str, PeerResult], counts: list[int]) -> str:
    n = max(counts)
    me = results.get("peregrine")
    mine = me.runs.get(n) if me else None
    base = results.get(BASE)
    theirs = base.runs.get(n) if base else None
    rate = f"{mine.rate:.0f}" if mine else "n/a"
    p99 = f"{mine.p99_ms:.1f}" if mine else "n/a"
    ratio = _ratio(mine and mine.rate, theirs and theirs.rate)
    line = f"peregrine_fanout n{n}={rate} p99_ms={p99} vs_websockets_asyncio={ratio}"
    old = results.get("peregrine_before")
    if old is not None:
        theirs = old.runs.get(n)
        line += f" vs_before={_ratio(mine and mine.rate, theirs and theirs.rate)}"
    return line


def merge_rounds(runs: list[PeerResult], counts: list[int]) -> PeerResult:
    """One result from several rounds of a peer: the median round per point."""
    out = PeerResult(runs[0].peer)
    for n in counts:
        got = sorted((r.runs[n] for r in runs if n in r.runs), key=lambda x: x.rate)
        if got:
            out.runs[n] = got[(len(got) - 1) // 2]
    for r in runs:
        out.errors.extend(r.errors)
        out.notes.extend(r.notes)
    return out


def print_rounds(rounds: dict[str, list[PeerResult]], counts: list[int]) -> None:
    """Every round's deliveries/s per server, and after/before per round when both ran."""
    print()
    print("rounds (deliveries/s):")
    for runs in rounds.values():
        for n in counts:
            rates = [r.runs[n].rate for r in runs if n in r.runs]
            cells = " ".join(f"{x:>9.0f}" for x in rates)
            med = f"median {median(rates):.0f}" if rates else "failed"
            print(f"  {runs[0].peer.label:<28} n={n:<5} {cells}   {med}")
    print("server CPU per delivery (us; its CPU time over the window / deliveries: steadier")
    print("than deliveries/s when other processes share the machine):")
    for runs in rounds.values():
        for n in counts:
            us = [r.runs[n].server_cpu * 1e4 / r.runs[n].rate for r in runs if n in r.runs]
            cells = " ".join(f"{x:>9.2f}" for x in us)
            print(f"  {runs[0].peer.label:<28} n={n:<5} {cells}   median {median(us):.2f}")
    for key in [k for k in rounds if k + "_before" in rounds]:
        for n in counts:
            cpu = [
                median(
                    [r.runs[n].server_cpu * 1e4 / r.runs[n].rate for r in rounds[k] if n in r.runs]
                )
                for k in (key, key + "_before")
            ]
            print(
                f"  {key} CPU per delivery after/before n={n:<5} {cpu[0] / cpu[1]:.3f} "
                f"(medians {cpu[0]:.2f} / {cpu[1]:.2f} us)"
            )
        for n in counts:
            per = [
                a.runs[n].rate / b.runs[n].rate
                for a, b in zip(rounds[key], rounds[key + "_before"], strict=True)
                if n in a.runs and n in b.runs
            ]
            if per:
                print(
                    f"  {key} after/before n={n:<5} "
                    + " ".join(f"{x:.3f}" for x in per)
                    + f"   median {median(per):.3f}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each run")
    ap.add_argument("--window", type=int, default=WINDOW, help="messages in flight at most")
    ap.add_argument(
        "--subscribers",
        default=None,
        help="comma-separated room sizes (default 1000,100; 1000 with --quick)",
    )
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up, 1000 members only")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each point, wait up to this many seconds for both CPUs to be idle "
        "(a shared machine); 0: do not wait",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=0,
        help="measure a point again (up to this many times) when another process used "
        "a benchmark CPU during it",
    )
    ap.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated subset of {','.join(PEERS)}",
    )
    ap.add_argument("--before", type=Path, metavar="DIR", help=BEFORE_HELP)
    ap.add_argument("--rounds", type=int, default=1, help=ROUNDS_HELP)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    try:
        tree = check_tree(args.before) if args.before else None
    except BenchError as exc:
        ap.error(str(exc))
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
        if args.subscribers is None:
            args.subscribers = "1000"
    if args.subscribers is None:
        args.subscribers = ",".join(str(n) for n in SUBSCRIBERS)
    counts = [int(n) for n in args.subscribers.split(",") if n.strip()]
    if not counts or min(counts) < 2:
        ap.error("--subscribers: room sizes of at least 2")
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PEERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; choose from {','.join(PEERS)}")
    if shutil.which("taskset") is None:
        sys.exit("taskset not found: apt-get install -y util-linux")
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        sys.exit("needs two CPUs: the server on CPU 0, the load generator on CPU 1")
    if not _has_module("picows") or not _has_module("uvloop"):
        sys.exit(
            "the load generator needs picows and uvloop: pip install -r bench/requirements-ws.txt"
        )
    raise_fd_limit(max(counts) + 500)

    print(
        f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}  "
        f"{platform.python_implementation()} {platform.python_version()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {_loadavg()}"
    )
    print("# " + ", ".join(f"{d} {_version(d)}" for d in DISTRIBUTIONS))
    print(f"# {provenance()}")
    print(
        f"# server on CPU {SERVER_CPU}, load generator (picows on uvloop, 1 process) on "
        f"CPU {CLIENT_CPU}; one room of N members, member 0 publishes {MESSAGE_SIZE}-byte "
        f"text messages, window {args.window} messages; {args.warmup:g} s warm-up + "
        f"{args.duration:g} s per run; compression off"
    )

    selected: list[Peer] = []
    for key in keys:
        peer = PEERS[key]
        if key == "peregrine_w2_redis":
            why = workers_missing()
            if why:
                print(f"# {key}: skipped, not in this peregrine_rt yet: {why}")
                continue
        missing = [m for m in peer.modules if not _has_module(m)]
        if missing:
            print(f"# {key}: skipped, {', '.join(missing)} not importable")
            continue
        selected.append(peer)
    if tree is not None:
        # the twin of each peregrine row, except the Redis one (its argv is built per run)
        twins = []
        for peer in selected:
            twins.append(peer)
            if peer.key.startswith("peregrine") and peer.key != "peregrine_w2_redis":
                twins.append(before_peer(peer, tree))
        selected = twins
        print(f"# before: PYTHONPATH={tree} for the *_before servers")
    if args.rounds > 1:
        print(f"# {args.rounds} rounds, interleaved; the tables hold the median round per point")

    rounds: dict[str, list[PeerResult]] = {p.key: [] for p in selected}
    with tempfile.TemporaryDirectory(prefix="peregrine-fanout-bench-") as tmp:
        logdir = Path(tmp)
        for i in range(args.rounds):
            args.round = i
            for peer in selected:
                tag = f" round {i + 1}/{args.rounds}" if args.rounds > 1 else ""
                print(f"{peer.label}{tag}  (load {_loadavg()})", flush=True)
                rounds[peer.key].append(bench_peer(peer, args, counts, logdir))
    results = {key: merge_rounds(runs, counts) for key, runs in rounds.items()}
    if args.rounds > 1:
        print_rounds(rounds, counts)
    print_table(results, counts)
    print(f"# load average at the end: {_loadavg()}")
    print(final_line(results, counts))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
