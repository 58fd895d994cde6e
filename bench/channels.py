"""Channels: K clients in one topic at a fixed offered load, peregrine's backends against python-socketio.

Run: ``.venv/bin/python bench/channels.py [--clients 1000,100] [--rate 60000,180000]
[--duration 10] [--warmup 3] [--servers memory,sqlite,redis2,chat,socketio,socketio_asgi]``
(peers: ``.venv/bin/pip install -r bench/requirements-channels.txt``; ``redis2``
needs ``redis-server`` and ``pip install -e '.[redis]'``; issue #14 item 9).

Servers (each started here, stopped by PID at the end of its point):

* ``memory``: ``bench/servers/channels_peregrine.py:Memory``, peregrine
  Channels with ``MemoryHistory``: every publish is appended and carries its
  offset (recovery on), one process pinned to CPU 0;
* ``sqlite``: ``...:SQLite``, ``SQLiteHistory`` in a fresh temporary data
  directory (WAL, ``synchronous=NORMAL``), pinned to CPU 0;
* ``redis2``: ``...:Redis``, ``RedisHistory`` on two nodes
  (``--redis-url``) and a throwaway ``redis-server``; the clients are split
  between the nodes; nodes, redis-server and the load generator all share the
  two cores (unpinned), as ``bench/chat.py``'s ``chat_redis2``: not a
  multi-core figure;
* ``chat``: the old chat path, the chat as it was before it moved to
  Channels (``bench/servers/old_chat``, frozen at commit 9afa2d8: its own JSON
  protocol, ids, in-memory history) with its per-connection rate limit raised
  (``bench/servers/channels_chat.py``), pinned to CPU 0;
* ``socketio``: python-socketio's ``AsyncServer(async_mode="aiohttp")`` on
  aiohttp and uvloop, one room, ``emit(..., room=)`` per message, an offset
  and a bounded history per publish (``bench/servers/channels_socketio.py``),
  pinned to CPU 0; ``socketio_asgi``: the same app as
  ``AsyncServer(async_mode="asgi")`` under uvicorn (uvloop, httptools,
  websockets).  The faster of the two here is aiohttp (see bench/RESULTS.md);
  ratios are to the better of the two at each point.

The load generator is ``bench/channels_client.py`` (one asyncio + uvloop
process, websockets' Sans-I/O client, the protocols hand-rolled), pinned to
CPU 1.  Every client joins the one topic; the offered load is ``--rate``
deliveries a second in all (``rate / K`` messages a second, round-robin over
the clients; every message goes to all K, the sender included).  Per point:
connect and join, 1 s settle, ``--warmup`` s, ``--duration`` s measured,
then a bounded drain.  Reported: delivered/s in the measured window, p50/p99
latency (send to receive, one clock, every 8th delivery), server CPU (all its
processes) and redis-server CPU over the window, server RSS at the end of the
window (summed over nodes), load-generator CPU, deliveries of the window's
messages still missing after the drain (loss for a server that kept up; its
backlog for an overloaded one), duplicates, clients closed, and the share of
deliveries carrying an offset.  Then the ratio of every server's delivered/s
to python-socketio's, per point, and of the best of each server at a K to
the best of python-socketio there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import (
    HOST,
    cpu_seconds,
    descendants,
    free_port,
    spawn,
    stop_process,
    tree_cpu_seconds,
)
from chat import wait_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SERVER_CPU, CLIENT_CPU = 0, 1
SERVERS = ("memory", "sqlite", "redis2", "chat", "socketio", "socketio_asgi")
SOCKETIO = ("socketio", "socketio_asgi")
PEREGRINE = [PY, "-m", "peregrine_rt", "--host", HOST, "--log-level", "warning"]


@dataclass
class Started:
    """The processes of one server configuration, and where clients connect."""

    kind: str
    protocol: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    redis: subprocess.Popen[bytes] | None = None
    pinned: bool = True

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, signal.SIGTERM, group=True)
        if self.redis is not None:
            stop_process(self.redis, signal.SIGTERM, group=True)


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return spawn(argv, fd, env=env)
    finally:
        os.close(fd)


def start(kind: str, tmp: Path) -> Started:
    pin = ["taskset", "-c", str(SERVER_CPU)]
    if kind in ("memory", "sqlite"):
        started = Started(kind, "phoenix")
        port = free_port()
        env = {"BENCH_CHANNELS_DIR": str(tmp / "data")} if kind == "sqlite" else None
        app = "bench.servers.channels_peregrine:" + ("Memory" if kind == "memory" else "SQLite")
        argv = [*pin, *PEREGRINE, "--port", str(port), app]
        started.procs.append(_spawn(argv, tmp / f"{kind}.log", env))
        started.urls.append(f"ws://{HOST}:{port}/socket/websocket")
    elif kind == "redis2":
        started = Started(kind, "phoenix", pinned=False)
        rport = free_port()
        started.redis = _spawn(
            ["redis-server", "--port", str(rport), "--bind", HOST, "--save", "", "--appendonly",
             "no", "--dir", str(tmp)],
            tmp / "redis.log",
        )  # fmt: skip
        wait_port(rport, started.redis)
        url = f"redis://{HOST}:{rport}"
        for n in range(2):
            port = free_port()
            argv = [*PEREGRINE, "--port", str(port), "--redis-url", url,
                    "bench.servers.channels_peregrine:Redis"]  # fmt: skip
            started.procs.append(_spawn(argv, tmp / f"redis2-{n}.log", {"BENCH_REDIS_URL": url}))
            started.urls.append(f"ws://{HOST}:{port}/socket/websocket")
    elif kind == "chat":
        started = Started(kind, "chat")
        port = free_port()
        argv = [*pin, *PEREGRINE, "--port", str(port), "bench.servers.channels_chat:Chat"]
        started.procs.append(_spawn(argv, tmp / "chat.log"))
        started.urls.append(f"ws://{HOST}:{port}/ws")
    elif kind in SOCKETIO:
        started = Started(kind, "socketio")
        port = free_port()
        mode = "asgi" if kind == "socketio_asgi" else "aiohttp"
        argv = [*pin, PY, str(ROOT / "bench/servers/channels_socketio.py"), str(port), mode]
        started.procs.append(_spawn(argv, tmp / f"{kind}.log"))
        started.urls.append(f"ws://{HOST}:{port}")
    else:
        raise SystemExit(f"unknown server {kind!r}: choose from {', '.join(SERVERS)}")
    try:
        for proc, url in zip(started.procs, started.urls, strict=True):
            wait_port(int(url.split(":")[2].split("/")[0]), proc)
    except BaseException:
        started.stop()
        raise
    return started


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1024


@dataclass
class Point:
    kind: str
    k: int
    rate: float
    result: dict[str, float | int | None]
    server_cpu: float
    redis_cpu: float
    rss: float

    @property
    def delivered(self) -> float:
        return float(self.result["delivered"] or 0) / float(self.result["seconds"] or 1)


def measure(kind: str, k: int, rate: float, args: argparse.Namespace) -> Point:
    with tempfile.TemporaryDirectory(prefix="bench-channels-") as name:
        tmp = Path(name)
        started = start(kind, tmp)
        try:
            argv = [PY, str(ROOT / "bench/channels_client.py"), started.protocol, *started.urls,
                    "--clients", str(k), "--rate", str(rate), "--warmup", str(args.warmup),
                    "--duration", str(args.duration), "--drain", str(args.drain)]  # fmt: skip
            if started.pinned:
                argv = ["taskset", "-c", str(CLIENT_CPU), *argv]
            client = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            pids = [p.pid for p in started.procs]
            marks: dict[str, tuple[float, float, float]] = {}
            rss = 0.0
            result: dict[str, float | int | None] = {}
            try:
                assert client.stdout is not None
                for line in client.stdout:
                    if line.startswith(("MARK", "STOP")):
                        marks[line.strip()] = (
                            sum(tree_cpu_seconds(p) for p in pids),
                            cpu_seconds(started.redis.pid) if started.redis else 0.0,
                            time.monotonic(),
                        )
                        if line.startswith("STOP"):
                            rss = sum(rss_mb(p) for p in pids)
                    elif line.startswith("{"):
                        result = json.loads(line)
                client.wait(timeout=30)
            finally:
                stop_process(client)  # type: ignore[arg-type]  # a text-mode Popen
            if not result or len(marks) != 2:
                logs = "\n".join(p.name + ": " + p.read_text()[-800:] for p in tmp.glob("*.log"))
                raise SystemExit(f"{kind} K={k}: the load generator gave no result\n{logs}")
        finally:
            started.stop()
    (c0, r0, t0), (c1, r1, t1) = marks["MARK"], marks["STOP"]
    wall = t1 - t0
    return Point(kind, k, rate, result, (c1 - c0) / wall * 100, (r1 - r0) / wall * 100, rss)


def row(p: Point) -> str:
    r = p.result

    def ms(v: float | int | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return (
        f"| {p.kind} | {p.k} | {p.rate:,.0f} | {p.delivered:,.0f} | {ms(r['p50_ms'])} | "
        f"{ms(r['p99_ms'])} | {p.server_cpu:.0f} % | {p.redis_cpu:.0f} % | {p.rss:.0f} | "
        f"{r['load_cpu']:.0f} % | {r['lost']:,} | {r['duplicates']} | {r['closed']} | "
        f"{float(r['offsets'] or 0) * 100:.0f} % |"
    )


def ratios(points: list[Point]) -> list[str]:
    """Each server's delivered/s over python-socketio's (the better of its servers), per point."""
    lines = []
    for k in sorted({p.k for p in points}, reverse=True):
        base = [p for p in points if p.k == k and p.kind in SOCKETIO]
        if not base:
            continue
        best_base = max(p.delivered for p in base)
        for kind in dict.fromkeys(p.kind for p in points if p.k == k and p.kind not in SOCKETIO):
            mine = [p for p in points if p.k == k and p.kind == kind]
            per_rate = []
            for p in mine:
                same = max((b.delivered for b in base if b.rate == p.rate), default=0.0)
                if same:
                    per_rate.append(f"{p.rate:,.0f}/s offered: {p.delivered / same:.2f}x")
            best = max(p.delivered for p in mine)
            lines.append(
                f"K={k} {kind} vs python-socketio: {'; '.join(per_rate)}; "
                f"best vs best: {best:,.0f} / {best_base:,.0f} = {best / best_base:.2f}x"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1000,100", help="K, comma-separated")
    parser.add_argument(
        "--rate", default="60000,180000", help="offered deliveries/s in all, comma-separated"
    )
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--drain", type=float, default=10, help="at most this long after STOP")
    parser.add_argument("--servers", default="memory,sqlite,redis2,chat,socketio,socketio_asgi")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    rates = [float(r) for r in args.rate.split(",")]
    kinds = args.servers.split(",")
    for kind in kinds:
        if kind not in SERVERS:
            raise SystemExit(f"unknown server {kind!r}: choose from {', '.join(SERVERS)}")
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"uptime: {uptime.strip()}", flush=True)
    print(
        "| server | K | offered deliveries/s | delivered/s | p50 ms | p99 ms | server CPU | "
        "redis CPU | server RSS MB | load gen CPU | undelivered | dup | closed | offsets |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: |")  # fmt: skip
    points = []
    for k in counts:
        for rate in rates:
            for kind in kinds:
                point = measure(kind, k, rate, args)
                points.append(point)
                print(row(point), flush=True)
    print()
    for line in ratios(points):
        print(line)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    print(f"\nuptime: {uptime.strip()}")


if __name__ == "__main__":
    main()
