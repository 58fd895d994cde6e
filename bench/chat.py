"""The OLD chat scenario: K clients in one room, each sending at a steady rate, every message to all.

Run: ``.venv/bin/python bench/chat.py [--clients 100,1000] [--rate 2,0.05]
[--duration 10] [--warmup 3] [--servers chat,chat_redis2,websockets]``
(``make bench-chat``).

This measures the chat as it was before it moved to Channels: its own JSON
protocol (``hello``, ``say``, ``message``), served by the frozen copy in
``bench/servers/old_chat`` (commit 9afa2d8), so that figures in
``bench/RESULTS.md`` taken with it stay reproducible.  The chat on Channels
(Phoenix frames, history with offsets) is measured by ``bench/channels.py``
(``memory``, ``sqlite``, ``redis2``) against the old path and python-socketio.

Servers:

* ``chat``: ``peregrine-rt bench.servers.old_chat.app:Chat``, one process, the
  in-memory hub, pinned to CPU 0;
* ``chat_redis2``: two ``peregrine-rt bench.servers.old_chat.app:Chat --redis URL``
  processes and a throwaway ``redis-server``, unpinned: on a two-core machine
  they share the cores with the load generator (say so when quoting it); the
  clients are split evenly between the two nodes;
* ``websockets``: ``bench/servers/chat_websockets.py``, the same protocol on
  websockets (asyncio + uvloop, ``broadcast()``), pinned to CPU 0.

The load generator is this script (asyncio + uvloop + the websockets
client), pinned to CPU 1.  Every client says ``hello`` (joins ``lobby``),
then sends ``say`` at ``rate`` messages a second with a random phase; the
text carries the send time.  Every client counts the ``message`` deliveries
and their latency (receive time minus send time, one clock).  After
``--warmup`` seconds, ``--duration`` seconds are measured.  Offered load is
K x rate messages a second, K x K x rate deliveries a second: the table
shows what was delivered, p50/p99 latency, and the CPU of server(s), Redis
and the load generator (a generator near 100 % may be the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import cpu_seconds, free_port, spawn, stop_process, tree_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SERVER_CPU, CLIENT_CPU = 0, 1
OLD_CHAT = "bench.servers.old_chat.app:Chat"  # frozen at 9afa2d8: bench/servers/old_chat


@dataclass
class Stats:
    deliveries: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    measuring: bool = False
    closed: int = 0
    sent: int = 0


async def client(
    url: str, i: int, rate: float, stats: Stats, stop: asyncio.Event, ready: asyncio.Event
) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_queue=None, open_timeout=60) as ws:
        await ws.send(f'{{"type":"hello","nick":"c{i}","rooms":["lobby"]}}')

        async def reader() -> None:
            async for raw in ws:
                if stats.measuring and raw.startswith('{"type":"message"'):
                    now = time.perf_counter_ns()
                    start = raw.index('"text":"t') + 9
                    sent = int(raw[start : raw.index('"', start)])
                    stats.deliveries += 1
                    if stats.deliveries % 7 == 0:
                        stats.latencies_ns.append(now - sent)

        task = asyncio.create_task(reader())
        await ready.wait()
        period = 1.0 / rate
        await asyncio.sleep(random.uniform(0, period))
        next_at = time.monotonic()
        while not stop.is_set():
            await ws.send(f'{{"type":"say","room":"lobby","text":"t{time.perf_counter_ns()}"}}')
            stats.sent += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        task.cancel()


async def load(urls: list[str], k: int, rate: float, warmup: float, duration: float) -> Stats:
    stats = Stats()
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = []
    for i in range(k):
        tasks.append(asyncio.create_task(client(urls[i % len(urls)], i, rate, stats, stop, ready)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    await asyncio.sleep(2 + k / 200)  # hellos and presence settle
    ready.set()
    await asyncio.sleep(warmup)
    stats.measuring = True
    await asyncio.sleep(duration)
    stats.measuring = False
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            stats.closed += 1
        t.cancel()
    return stats


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``spawn`` with its output to ``log`` (the child keeps its own descriptor)."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return spawn(argv, fd)
    finally:
        os.close(fd)


def start_servers(
    kind: str, logdir: Path
) -> tuple[list[subprocess.Popen[bytes]], list[str], subprocess.Popen[bytes] | None]:
    procs, urls, redis = [], [], None
    peregrine = [PY, "-m", "peregrine_rt", OLD_CHAT, "--host", "127.0.0.1"]
    if kind == "chat_redis2":
        rport = free_port()
        redis = _spawn(
            [
                "redis-server",
                "--port",
                str(rport),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(logdir),
            ],
            logdir / "redis.log",
        )
        wait_port(rport, redis)
        for n in range(2):
            port = free_port()
            argv = [*peregrine, "--port", str(port), "--redis", f"redis://127.0.0.1:{rport}"]
            procs.append(_spawn(argv, logdir / f"{kind}{n}.log"))
            urls.append(f"ws://127.0.0.1:{port}/ws")
    else:
        port = free_port()
        if kind == "chat":
            argv = [*peregrine, "--port", str(port), "--log-level", "warning"]
        else:
            argv = [PY, str(ROOT / "bench/servers/chat_websockets.py"), str(port)]
        procs.append(_spawn(["taskset", "-c", str(SERVER_CPU), *argv], logdir / f"{kind}.log"))
        urls.append(f"ws://127.0.0.1:{port}/ws")
    for proc, url in zip(procs, urls, strict=True):
        wait_port(int(url.split(":")[2].split("/")[0]), proc)
    return procs, urls, redis


def pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def run(kind: str, k: int, rate: float, args: argparse.Namespace) -> str:
    import uvloop

    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        logdir = Path(tmp)
        procs, urls, redis = start_servers(kind, logdir)
        try:
            pids = [p.pid for p in procs]
            before = (
                sum(tree_cpu_seconds(p) for p in pids),
                cpu_seconds(redis.pid) if redis else 0.0,
                time.process_time(),
            )
            t0 = time.monotonic()
            stats = uvloop.run(load(urls, k, rate, args.warmup, args.duration))
            wall = time.monotonic() - t0
            after = (
                sum(tree_cpu_seconds(p) for p in pids),
                cpu_seconds(redis.pid) if redis else 0.0,
                time.process_time(),
            )
        finally:
            for proc in procs:
                stop_process(proc, signal.SIGTERM, group=True)
            if redis is not None:
                stop_process(redis, signal.SIGTERM, group=True)
    lat = sorted(stats.latencies_ns)
    offered = k * k * rate
    cpu = [(a - b) / wall * 100 for a, b in zip(after, before, strict=True)]
    return (
        f"| {kind} | {k} | {rate:g} | {offered:,.0f} | {stats.deliveries / args.duration:,.0f} "
        f"| {pct(lat, 0.5):.1f} | {pct(lat, 0.99):.1f} | {cpu[0]:.0f} % | "
        f"{cpu[1]:.0f} % | {cpu[2]:.0f} % | {stats.closed} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="100,1000")
    parser.add_argument("--rate", default="2,0.05", help="messages/s per client, per --clients")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--servers", default="chat,chat_redis2,websockets")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    rates = [float(r) for r in args.rate.split(",")]
    os.sched_setaffinity(0, {CLIENT_CPU})
    print(
        f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()}"
    )
    print(
        "| server | K | msg/s per client | offered deliveries/s | delivered/s | p50 ms | "
        "p99 ms | server CPU | redis CPU | load gen CPU | clients lost |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, rate in zip(counts, rates, strict=True):
        for kind in args.servers.split(","):
            if kind == "chat_redis2":
                os.sched_setaffinity(0, {0, 1})
            print(run(kind, k, rate, args), flush=True)
            os.sched_setaffinity(0, {CLIENT_CPU})


if __name__ == "__main__":
    main()
