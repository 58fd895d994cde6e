"""Soak: a bounded mixed workload against ``--workers 2`` and Redis, with faults, watching for leaks.

Run: ``.venv/bin/python bench/soak.py`` (10 minutes) or ``--quick`` (60 s);
loopback only (``/tmp/iso.sh .venv/bin/python bench/soak.py`` gives it its
own network namespace).  It starts a throwaway ``redis-server`` and
``peregrine-rt bench.servers.soak_peregrine:Soak --workers 2 --redis URL``
(the chat example plus a few routes) pinned to CPU 0; this script, the load
generator (asyncio + uvloop + the websockets client, ``soak_clients.py``),
runs on CPU 1.  For the whole run, at steady rates (``--load`` scales them):

* HTTP keep-alive clients (``GET /hello``);
* WebSocket echo clients (32-byte messages, one in flight each);
* fan-out: WebSocket subscribers of a hub topic fed by ``POST /bcast``, and
  Server-Sent Events clients of the same topic;
* chat clients (the chat's Channels endpoint, ``/socket/websocket``: topic
  ``chat`` with a nick, then ``room:lobby`` and ``room:soak``): each posts a
  ``new_msg`` every second, and does what peregrine.js does: drops a
  publication at or below the offset it has seen, rejoins with ``since``
  (offset and epoch) when dropped, and asks ``history`` again when the
  rejoin says ``recovered: false``;
* slow readers: WebSocket subscribers that stop reading for a while, and
  ``GET /big`` (1 MiB) readers that read nothing for a while;
* vanishing clients: half a WebSocket frame, half a request head, half a
  body, a subscriber gone while it receives; each then closed or reset;

and two faults: at 40 % of the run one worker gets SIGKILL (the supervisor
starts another), at 65 % ``redis-server`` is stopped and, 3 s later, started
again empty on the same port (a new history epoch).

Every few seconds it samples each worker (RSS, open descriptors and trio
tasks, from the worker's ``GET /_soak``, asked on fresh connections until
each worker has answered), the supervisor and Redis (``/proc``).  At the end
it stops the load, waits for the chat clients to catch up, asks a fresh chat
client for the history, closes every client and waits for the workers to
settle.  It prints a row per interval, the RSS slope after the warm-up (the
first 20 %; least squares, KiB/min, per process), descriptors and tasks at
the baseline (after one client of each kind came and went) and at the end,
whether any chat message acknowledged (the ok reply of its ``new_msg``) was
lost (some chat client was never shown it) or duplicated (its text under two
ids, or delivered live twice), and a one-line summary.  The full run draws
``docs/img/soak.svg`` (``--svg PATH`` for another place).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import HOST, ROOT, free_port, spawn, stop_process
from soak_clients import CHAT_PATH, ROOMS, Load, Workload
from soak_report import (
    ProcState,
    Sample,
    floors,
    labels_of,
    markdown_rows,
    rss_points,
    slope_kib_per_min,
    svg,
)

from peregrine_rt.testing import RedisServer, start_redis_server

SERVER_CPU, CLIENT_CPU = 0, 1
APP = "bench.servers.soak_peregrine:Soak"
REDIS_DOWN = 3.0  # seconds redis-server stays stopped
SETTLE = 30.0  # seconds the workers get to return to the baseline after the clients left


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (the supervisor's workers)."""
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return sorted(kids)


def proc_state(pid: int) -> ProcState | None:
    """RSS and open descriptors of a process from ``/proc`` (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return ProcState(rss, len(os.listdir(f"/proc/{pid}/fd")), None)
    except (OSError, StopIteration):
        return None


class Run:
    """The processes, the faults and the samples of one soak."""

    def __init__(self, args: argparse.Namespace, port: int, supervisor: int, redis: RedisServer):
        self.args = args
        self.port = port
        self.supervisor = supervisor
        self.redis = redis
        self.load = Load().scaled(args.load)
        self.wl = Workload(port, self.load)
        self.labels: dict[int, str] = {}
        self.samples: list[Sample] = []
        self.baseline: dict[str, dict[str, int]] = {}

    def workers(self) -> list[int]:
        """The live workers, each given a label: w1, w2, and w2' for w2's replacement."""
        pids = children(self.supervisor)
        gone = [label for pid, label in self.labels.items() if pid not in pids]
        for pid in pids:
            if pid not in self.labels:
                used = set(self.labels.values())
                free = [g for g in gone if g + "'" not in used]
                self.labels[pid] = free[0] + "'" if free else f"w{len(self.labels) + 1}"
        return pids

    async def sample(self) -> None:
        pids = self.workers()
        infos = await self.wl.soak_info(set(pids), tries=20)
        procs: dict[str, ProcState] = {}
        for pid in pids:
            info = infos.get(pid)
            if info is not None:
                procs[self.labels[pid]] = ProcState(info["rss_kib"], info["fds"], info["tasks"])
        for label, pid in (("supervisor", self.supervisor), ("redis", self.redis.pid)):
            state = proc_state(pid)
            if state is not None:
                procs[label] = state
        self.samples.append(Sample(self.wl.now(), procs, asdict(self.wl.counts)))

    async def tops(self) -> dict[str, list[list[object]]]:
        """``GET /_soak/top`` until every worker answered (``--tracemalloc``)."""
        out: dict[str, list[list[object]]] = {}
        want = set(self.workers())
        for _ in range(40):
            if want <= {pid for pid, label in self.labels.items() if label in out}:
                break
            r, w = await self.wl.open()
            try:
                _, body = await self.wl.request(r, w, "GET", "/_soak/top", close=True)
            finally:
                w.close()
            answer = json.loads(body)
            out[self.labels[answer["pid"]]] = answer["top"]
        return out

    async def prime(self) -> None:
        """One client of each kind, a few times over (to meet both workers), then gone."""
        from websockets.asyncio.client import connect

        wl = self.wl
        for i in range(4):
            r, w = await wl.open()
            await wl.request(r, w, "GET", "/hello")
            await wl.request(r, w, "POST", "/bcast", b"prime")
            w.close()
            r, w = await wl.open()
            w.write(f"GET /events HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            await r.readuntil(b"\r\n\r\n")
            w.close()
            async with connect(wl.ws_url("/echo"), compression=None) as ws:
                await ws.send("prime")
                await ws.recv()
            async with connect(wl.ws_url("/fan"), compression=None):
                pass
            async with connect(wl.ws_url(CHAT_PATH), compression=None) as ws:
                topics = ["chat", *(f"room:{room}" for room in ROOMS)]
                for n, topic in enumerate(topics):
                    params = {"nick": f"prime{i}"} if topic == "chat" else {}
                    await ws.send(json.dumps([str(n), str(n), topic, "phx_join", params]))
                    while json.loads(await ws.recv())[1:4:2] != [str(n), "phx_reply"]:
                        pass  # presence frames

    async def kill_worker(self) -> None:
        victim = next(pid for pid in self.workers() if self.labels[pid] == "w2")
        os.kill(victim, signal.SIGKILL)
        t = time.monotonic()
        self.wl.event(f"SIGKILL w2 (pid {victim})")
        while True:
            await asyncio.sleep(0.02)
            new = [pid for pid in self.workers() if self.labels[pid] == "w2'"]
            if new and await self.wl.soak_info(set(new), tries=10):
                self.wl.event(f"w2' (pid {new[0]}) serving {time.monotonic() - t:.2f} s later")
                return

    async def restart_redis(self) -> None:
        await asyncio.to_thread(self.redis.stop)
        self.wl.event("redis-server stopped")
        await asyncio.sleep(REDIS_DOWN)
        self.redis = await asyncio.to_thread(
            start_redis_server, self.redis.directory, port=self.redis.port
        )
        t, acked = time.monotonic(), self.wl.counts.chat_acked
        self.wl.event("redis-server started, empty")
        while self.wl.counts.chat_acked == acked and not self.wl.stop.is_set():
            await asyncio.sleep(0.02)
        self.wl.event(f"chat acknowledging again {time.monotonic() - t:.2f} s later")

    async def faults(self, duration: float) -> None:
        await asyncio.sleep(0.40 * duration)
        await self.kill_worker()
        await asyncio.sleep(max(0.0, 0.65 * duration - self.wl.now()))
        await self.restart_redis()

    async def main(self, duration: float) -> dict[str, object]:
        wl = self.wl
        while len(self.workers()) < 2:
            await asyncio.sleep(0.05)
        await self.prime()
        await asyncio.sleep(2)
        if self.args.tracemalloc:
            await self.tops()
        self.baseline = {
            self.labels[p]: i for p, i in (await wl.soak_info(set(self.workers()))).items()
        }
        wl.t0 = time.monotonic()
        await self.sample()
        ready = asyncio.Event()
        chats = [asyncio.ensure_future(wl.chat_client(st, ready)) for st in wl.chats]
        load = self.load
        for coro_fn, n in (
            (wl.http_client, load.http_conns),
            (wl.echo_client, load.echo_conns),
            (wl.fan_client, load.fan_subs),
            (wl.sse_client, load.sse_clients),
            (wl.publisher, 1),
            (wl.slow_readers, 1),
            (wl.vanishers, 1),
        ):
            for _ in range(n):
                wl.spawn(coro_fn())
        await asyncio.sleep(1)  # the chat clients' hellos
        ready.set()
        faults = asyncio.ensure_future(self.faults(duration))
        every = self.args.sample_every
        while wl.now() < duration:
            await asyncio.sleep(min(every - wl.now() % every, duration - wl.now()))
            await self.sample()
        wl.stop.set()
        faults.cancel()
        if self.args.tracemalloc:
            for label, top in (await self.tops()).items():
                print(f"tracemalloc, {label}: what grew most since the baseline")
                for line, kib, count in top:
                    print(f"    {kib:+8} KiB {count:+8} blocks  {line}")
        t = time.monotonic()
        while not wl.chat_caught_up() and time.monotonic() - t < 15:
            await asyncio.sleep(0.1)
        wl.event(f"load stopped; chat clients caught up: {wl.chat_caught_up()}")
        history = await wl.history_check()
        wl.close_all.set()
        await asyncio.wait(chats, timeout=10)
        for task in [*chats, *wl.tasks]:
            task.cancel()
        await asyncio.sleep(0.5)
        t = time.monotonic()
        while time.monotonic() - t < SETTLE:
            await asyncio.sleep(1)
            end = {self.labels[p]: i for p, i in (await wl.soak_info(set(self.workers()))).items()}
            if all(
                end.get(label, {}).get(k, 1 << 30) <= base[k]
                for label, base in self._slots(end).items()
                for k in ("fds", "tasks")
            ):
                break
        wl.event(f"settled after {time.monotonic() - t:.1f} s")
        return self.verdict(history, end, duration)

    def _slots(self, end: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """End label -> the baseline of its slot (w2' is compared with w2's baseline)."""
        return {
            label: self.baseline[label.rstrip("'")]
            for label in end
            if label.rstrip("'") in self.baseline
        }

    def verdict(
        self, history: dict[str, tuple[str, int]], end: dict[str, dict[str, int]], duration: float
    ) -> dict[str, object]:
        wl = self.wl
        warm = 0.2 * duration
        # label -> KiB/min of every sample, of each report interval's lowest, over seconds
        slopes: dict[str, tuple[float | None, float | None, float]] = {}
        for label in labels_of(self.samples):
            born = min(s.t for s in self.samples if label in s.procs)
            points = rss_points(self.samples, label, max(warm, born + warm))
            window = points[-1][0] - points[0][0] if points else 0.0
            if window < 0.15 * duration:
                slopes[label] = (None, None, round(window))
                continue
            slope = slope_kib_per_min(points)
            floor = slope_kib_per_min(floors(points, self.args.report_every))
            slopes[label] = (
                None if slope is None else round(slope, 1),
                None if floor is None else round(floor, 1),
                round(window),
            )
        missing = [
            (st.nick, text) for st in wl.chats for text in wl.acked if text not in st.received
        ]
        lost = {text for _, text in missing}
        by_text: dict[str, set[tuple[str, str, int]]] = defaultdict(set)
        for st in wl.chats:
            for text, key in st.received.items():
                by_text[text].add(key)
        mismatched = sum(  # shown under another room or id than its ok reply gave
            1
            for st in wl.chats
            for text, (room, mid) in wl.acked.items()
            if text in st.received and st.received[text][0::2] != (room, mid)
        )
        return {
            "duration_s": duration,
            "load": asdict(self.load),
            "rss_slope_kib_per_min": slopes,
            "baseline": {
                k: {"fds": v["fds"], "tasks": v["tasks"]} for k, v in self.baseline.items()
            },
            "end": {k: {"fds": v["fds"], "tasks": v["tasks"]} for k, v in end.items()},
            "acked": len(wl.acked),
            "lost": len(lost),
            "lost_examples": sorted(lost)[:5],
            "lost_in_history": len(lost & history.keys()),
            "dropped_as_seen": sum(st.dropped_as_seen for st in wl.chats),
            "not_recovered_rejoins": sum(st.not_recovered for st in wl.chats),
            "missing_deliveries": len(missing),
            "duplicated_texts": sum(1 for ids in by_text.values() if len(ids) > 1),
            "live_repeats": sum(st.live_repeats for st in wl.chats),
            "catch_up_repeats": sum(st.catch_up_repeats for st in wl.chats),
            "mismatched": mismatched,
            "chat_reconnects": sum(st.reconnects for st in wl.chats),
            "totals": asdict(wl.counts),
            "errors": dict(wl.errors.most_common()),
            "outcomes": dict(sorted(wl.outcomes.items())),
            "events": [(round(t, 1), text) for t, text in wl.events],
        }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout:g} s")


def summary(result: dict[str, object]) -> str:
    slopes = result["rss_slope_kib_per_min"]
    assert isinstance(slopes, dict)
    base, end = result["baseline"], result["end"]
    assert isinstance(base, dict) and isinstance(end, dict)
    pairs = [
        f"{label}:{base[label.rstrip(chr(39))][k]}->{v[k]}"
        for k in ("fds", "tasks")
        for label, v in sorted(end.items())
        if label.rstrip("'") in base
    ]
    slope_text = ",".join(
        f"{k}:{'?' if v is None else f'{v:+.0f}'}/{'?' if f is None else f'{f:+.0f}'}"
        for k, (v, f, _) in slopes.items()
        if k != "redis"
    )
    totals = result["totals"]
    assert isinstance(totals, dict)
    return (
        f"soak duration={result['duration_s']:.0f}s rss_slope_kib_min(all/floor)={slope_text} "
        f"{' '.join(pairs)} acked={result['acked']} lost={result['lost']} "
        f"duplicated={result['duplicated_texts']} live_repeats={result['live_repeats']} "
        f"http={totals['http']} ws_sse={totals['echo'] + totals['fan'] + totals['sse']} "
        f"errors={totals['errors']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--quick", action="store_true", help="60 s of load")
    ap.add_argument("--load", type=float, default=1.0, help="scale every client count and rate")
    ap.add_argument("--sample-every", type=float, help="seconds between samples (5; quick: 2)")
    ap.add_argument("--report-every", type=float, help="seconds per table row (60; quick: 10)")
    ap.add_argument(
        "--svg",
        type=Path,
        help="write the plot here (the default 10-minute run: docs/img/soak.svg)",
    )
    ap.add_argument("--json", type=Path, help="write the samples and the verdict here")
    ap.add_argument(
        "--trim",
        type=float,
        metavar="SECONDS",
        help="workers call glibc's malloc_trim(0) every SECONDS (is the RSS growth freed memory?)",
    )
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the workers under tracemalloc (slower) and print what grew most",
    )
    args = ap.parse_args()
    duration = 60.0 if args.quick else args.duration
    args.sample_every = args.sample_every or (2.0 if args.quick else 5.0)
    args.report_every = report_every = args.report_every or (10.0 if args.quick else 60.0)
    default_run = not args.quick and args.duration == 600.0 and args.load == 1.0
    svg_path = args.svg or (ROOT / "docs" / "img" / "soak.svg" if default_run else None)
    os.sched_setaffinity(0, {CLIENT_CPU})
    print(f"start: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {uptime()}", flush=True)

    import uvloop

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        redis = start_redis_server(Path(tmp) / "redis")
        run: Run | None = None
        log_path = Path(tmp) / "server.log"
        server = None
        try:
            port = free_port()
            argv = [
                "taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "peregrine_rt", APP,
                "--host", HOST, "--port", str(port), "--workers", "2",
                "--redis", redis.url, "--log-level", "warning",
            ]  # fmt: skip
            # Both workers sign the chat's session cookies with one key, so a
            # client that reconnects to the other worker keeps its nick.
            env = {"CHAT_SECRET": secrets.token_urlsafe(32)}
            if args.tracemalloc:
                env["SOAK_TRACEMALLOC"] = "1"
            if args.trim:
                env["SOAK_TRIM"] = str(args.trim)
            with open(log_path, "wb") as log:
                server = spawn(argv, log, env=env)
            print(f"server: {' '.join(argv)}", flush=True)
            wait_port(port, server)
            run = Run(args, port, server.pid, redis)
            result = uvloop.run(run.main(duration))
        finally:
            if server is not None:
                stop_process(server, signal.SIGTERM, group=True)
            (run.redis if run is not None else redis).stop()
            logged = log_path.read_text(errors="replace").splitlines()
    print(f"end: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {uptime()}")
    warnings = [line for line in logged if " WARNING " in line or " ERROR " in line]
    tracebacks = sum("Traceback" in line for line in logged)
    print(
        f"server log: {len(logged)} lines, {len(warnings)} warnings/errors, {tracebacks} tracebacks"
    )
    for line in warnings[:20]:
        print("   ", line[:160])
    print()
    print("\n".join(markdown_rows(run.samples, report_every)))
    print()
    for key, value in result.items():
        if key not in ("load", "totals"):
            print(f"{key}: {value}")
    if svg_path is not None:
        title = f"bench/soak.py, {duration / 60:g} min: two workers, Redis, faults"
        events = [
            (t, text.split(" (")[0])
            for t, text in run.wl.events
            if "SIGKILL" in text or ("stopped" in text and "redis" in text)
        ]
        svg_path.write_text(svg(run.samples, events, duration, 0.2 * duration, title))
        print(f"plot: {svg_path}")
    if args.json is not None:
        samples = [
            {"t": s.t, "procs": {k: asdict(v) for k, v in s.procs.items()}, "counts": s.counts}
            for s in run.samples
        ]
        args.json.write_text(json.dumps({"result": result, "samples": samples}, indent=1))
    print(summary(result))


if __name__ == "__main__":
    main()
