"""One Starlette hello app under peregrine_rt, uvicorn and hypercorn-trio, in one run (issue 19 item 4).

Run: ``.venv/bin/python bench/asgi.py [--rounds 3] [--duration 5] [--warmup 1] [--profile 5]``
(peers and Starlette: ``.venv/bin/pip install starlette uvicorn[standard] hypercorn``;
``wrk`` and ``taskset`` from Debian)

The goal: peregrine_rt >= 5x hypercorn (trio worker) and >= 0.8x uvicorn
(httptools + uvloop), one process each.  Every server serves the same app,
``bench.servers.starlette_hello:app`` (``GET /`` → ``PlainTextResponse("Hello,
World!")``):

* peregrine: ``peregrine-rt --asgi bench.servers.starlette_hello:app`` (trio;
  Starlette runs on it through anyio);
* uvicorn: ``--http httptools --loop uvloop --no-access-log``;
* hypercorn: ``--worker-class trio --workers 0 --backlog 1024`` (as
  ``bench/http_load.py`` runs it: the worker is the process we pin).

The load generator, pinning and per-run figures are ``bench/http_load.py``'s
(``run_wrk`` and ``check_hello`` are called, not copied): each server on CPU 0
with ``taskset``, ``wrk -t1`` on CPU 1, loopback only; wrk's CPU is printed for
every run and flagged above 90 % (then wrk, not the server, may be the limit).

A round starts each server in turn (a fresh process: check it answers two
keep-alive requests with ``200 Hello, World!``, then per connection count
``--warmup`` s of discarded load and ``--repeat`` measured runs of
``--duration`` s, the best kept; stop it).  ``--rounds`` rounds run, the order
of the servers rotated by one each round, so a drift of the shared machine or
a place in the order hits every server alike.  The table gives every round's
figure, the median and the best per server, the server's CPU time per request
(steadier than req/s when other processes share the machine), and the ratios
peregrine/uvicorn and peregrine/hypercorn of the medians (and of the bests).

``--servers`` may add, to take the cost apart by subtraction (CPU per request):
``peregrine_raw`` (``peregrine-rt --asgi bench.servers.hello_asgi:app``: the
adapter without Starlette), ``peregrine_handler`` (``peregrine-rt
bench.servers.hello_peregrine:Hello``: no ASGI at all) ``uvicorn_raw``
(uvicorn with ``hello_asgi``: what Starlette costs on asyncio) and
``peregrine_unbatched`` (``--no-batch-writes``: every response written at
once, not at the end of the event loop's pass).  The ratios
are also given by server CPU per request (the peer's over peregrine's), which
the noise of a shared machine moves less than req/s.

``--profile SECONDS``: afterwards, run the peregrine server once more
(``bench/servers/profiled.py``: cProfile switched on and off by signals, so
only the load window is profiled, not start-up) under ``wrk -c50`` for that
long, and print where its time goes per request, by area (the ASGI adapter, the rest of peregrine_rt, Starlette,
anyio, trio, C built-ins) and the top functions by own time.  The profiler
slows everything down; read the shares, not the absolute figures.

The last line is ``asgi vs_uvicorn_c50=<r> vs_uvicorn_c1000=<r>
vs_hypercorn_c50=<r> vs_hypercorn_c1000=<r>`` (ratios of medians).  Every phase is bounded (wrk by its duration
plus a slack); every process started here is stopped by its PID in ``finally``
blocks and gets SIGKILL if this script dies first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import pstats
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from _procs import HOST, SERVER_CPU, BenchError, Peer, RunningServer, median, script
from http_load import (
    WRK_CPU_WARN,
    WrkResult,
    check_hello,
    hypercorn_argv,
    run_wrk,
    uvicorn_argv,
)

APP = "bench.servers.starlette_hello:app"
RAW_APP = "bench.servers.hello_asgi:app"  # the same answer, no framework
CONNECTIONS = (50, 1000)
GOALS = {"uvicorn": 0.8, "hypercorn": 5.0}  # peregrine / peer, at least
PROFILE_WRITE_TIMEOUT = 10.0  # seconds for the profiled server to write its stats

PEERS = {
    "peregrine": Peer(
        "peregrine",
        "peregrine_rt --asgi",
        ("peregrine_rt", "trio", "starlette"),
        lambda port: [
            *script("peregrine-rt", "peregrine_rt"),
            "--asgi",
            APP,
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    ),
    "uvicorn": Peer(
        "uvicorn",
        "uvicorn",
        ("uvicorn", "httptools", "uvloop", "starlette"),
        lambda port: uvicorn_argv(APP, port),
    ),
    "hypercorn": Peer(
        "hypercorn",
        "hypercorn (trio)",
        ("hypercorn", "trio", "starlette"),
        lambda port: hypercorn_argv(APP, port),
    ),
}

# Optional, for taking the cost apart (--servers ...): the same servers without Starlette.
PEERS["peregrine_raw"] = replace(
    PEERS["peregrine"],
    key="peregrine_raw",
    label="peregrine_rt raw ASGI",
    argv=lambda port: [a if a != APP else RAW_APP for a in PEERS["peregrine"].argv(port)],
)
PEERS["peregrine_handler"] = replace(
    PEERS["peregrine"],
    key="peregrine_handler",
    label="peregrine_rt handler",
    argv=lambda port: [
        a if a != APP else "bench.servers.hello_peregrine:Hello"
        for a in PEERS["peregrine"].argv(port)
        if a != "--asgi"
    ],
)
PEERS["peregrine_unbatched"] = replace(
    PEERS["peregrine"],
    key="peregrine_unbatched",
    label="peregrine_rt --asgi, unbatched",
    argv=lambda port: [*PEERS["peregrine"].argv(port), "--no-batch-writes"],
)
PEERS["uvicorn_raw"] = replace(
    PEERS["uvicorn"],
    key="uvicorn_raw",
    label="uvicorn raw ASGI",
    argv=lambda port: [a if a != APP else RAW_APP for a in PEERS["uvicorn"].argv(port)],
)
DEFAULT_SERVERS = "peregrine,uvicorn,hypercorn"

Round = dict[int, WrkResult]  # connections -> the best run of one round


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu_us(r: WrkResult) -> float:
    return r.server_cpu * 1e4 / r.rps if r.rps else 0.0


def measure(peer: Peer, args: argparse.Namespace, logdir: Path, tag: str) -> Round:
    """One fresh server: the hello check, then per connection count warm-up and best of repeat."""
    server = RunningServer(peer, logdir, tag)
    best: Round = {}
    try:
        server.wait_ready()
        check_hello(server)
        for conns in args.connections:
            if args.warmup:
                run_wrk(server, conns, args.warmup, logdir)
            runs = []
            for _ in range(args.repeat):
                time.sleep(0.5)  # let the previous run's connections close
                runs.append(run_wrk(server, conns, args.duration, logdir))
            r = max(runs, key=lambda r: r.rps)
            notes = "; ".join(r.flags() + ([f"errors {r.errors}"] if r.errors else []))
            print(
                f"  {peer.label:<20} c={conns:<5} {r.rps:>8.0f} req/s  p99 {r.p99_ms:>7.2f} ms  "
                f"server CPU {r.server_cpu:>3.0f}% ({_cpu_us(r):.1f} us/req)  "
                f"wrk CPU {r.wrk_cpu:>3.0f}%  others cpu0/cpu1 {r.others[0]:>2.0f}%/{r.others[1]:>2.0f}%"
                + (f"  <-- {notes}" if notes else ""),
                flush=True,
            )
            best[conns] = r
    finally:
        note = server.stop()
        if note:
            print(f"# note: {note}")
    return best


def report(rounds: dict[str, list[Round]], connections: tuple[int, ...]) -> None:
    print()
    print(f"{'server':<22}{'c':>6}  {'rounds (req/s)':<30}{'median':>9}{'best':>9}{'us/req':>9}")
    medians: dict[tuple[str, int], float] = {}
    bests: dict[tuple[str, int], float] = {}
    for key, runs in rounds.items():
        for c in connections:
            rates = [r[c].rps for r in runs]
            medians[key, c], bests[key, c] = median(rates), max(rates)
            cpu = median([_cpu_us(r[c]) for r in runs])
            shown = " ".join(f"{x:.0f}" for x in rates)
            print(
                f"{PEERS[key].label:<22}{c:>6}  {shown:<30}{medians[key, c]:>9.0f}"
                f"{bests[key, c]:>9.0f}{cpu:>9.1f}"
            )
    print()
    parts = []
    for peer, goal in GOALS.items():
        if "peregrine" not in rounds or peer not in rounds:
            continue
        for c in connections:
            m = medians["peregrine", c] / medians[peer, c]
            b = bests["peregrine", c] / bests[peer, c]
            per = [
                a[c].rps / p[c].rps for a, p in zip(rounds["peregrine"], rounds[peer], strict=True)
            ]
            cpu = median([_cpu_us(r[c]) for r in rounds[peer]]) / median(
                [_cpu_us(r[c]) for r in rounds["peregrine"]]
            )
            verdict = "meets" if m >= goal else "MISSES"
            print(
                f"peregrine/{peer:<9} c={c:<5} {m:5.2f}x of medians, {b:5.2f}x of bests, "
                f"per round {' '.join(f'{x:.2f}' for x in per)}, {cpu:5.2f}x by CPU per "
                f"request  (goal >= {goal}x: {verdict})"
            )
            parts.append(f"vs_{peer}_c{c}={m:.2f}")
    reported = [r for runs in rounds.values() for rr in runs for r in rr.values()]
    if any(r.wrk_cpu > WRK_CPU_WARN for r in reported):
        print("# warning: wrk used > 90% of its core in some run: the client may be the limit")
    print(" ".join(["asgi", *parts]))


# --- profile --------------------------------------------------------------------------

AREAS = (  # (area, a substring of the file path), first match wins
    ("adapter (peregrine_rt.asgi, _asgi)", "/peregrine_rt/_asgi/"),
    ("adapter (peregrine_rt.asgi, _asgi)", "/peregrine_rt/asgi.py"),
    ("peregrine_rt server (parser, connection, writer)", "/peregrine_rt/"),
    ("starlette", "/starlette/"),
    ("anyio (on trio)", "/anyio/"),
    ("trio", "/trio/"),
)


def _area(filename: str) -> str:
    for area, needle in AREAS:
        if needle in filename:
            return area
    if filename == "~" or filename.startswith("<"):
        return "C built-ins (socket calls, dict/str methods...)"
    return "other Python (stdlib...)"


def profile(args: argparse.Namespace, logdir: Path) -> None:
    """The peregrine server profiled (cProfile) during ``args.profile`` s of wrk -c50 only."""
    out = logdir / "peregrine.prof"
    base = PEERS[args.profile_server]
    skip = len(script("peregrine-rt", "peregrine_rt"))
    peer = replace(
        base,
        key="peregrine-profiled",
        argv=lambda port: [
            sys.executable,
            "-m",
            "bench.servers.profiled",
            str(out),
            *base.argv(port)[skip:],
        ],
    )
    server = RunningServer(peer, logdir)
    try:
        server.wait_ready()
        check_hello(server)
        run_wrk(server, 50, 1, logdir)  # warm-up, not profiled
        server.proc.send_signal(signal.SIGUSR1)  # profile from here...
        r = run_wrk(server, 50, args.profile, logdir)
        server.proc.send_signal(signal.SIGUSR2)  # ...to here
        deadline = time.monotonic() + PROFILE_WRITE_TIMEOUT
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the dump is small: let it finish
    finally:
        server.stop()
    if not out.exists():
        raise BenchError(f"the profiled server wrote no profile:\n{server.log_tail()}")
    stats = pstats.Stats(str(out))
    by_area: dict[str, float] = defaultdict(float)
    functions = []
    for (filename, line, name), (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_area[_area(filename)] += tottime
        where = f"{Path(filename).name}:{line}({name})"
        functions.append((tottime, calls, where, _area(filename)))
    busy = sum(by_area.values())
    n = r.requests
    print()
    print(
        f"# profile: {PEERS[args.profile_server].label} under cProfile during wrk -c50 for {args.profile} s: "
        f"{r.rps:.0f} req/s profiled, {n} requests; own time by area, per request:"
    )
    for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"  {area:<52} {100 * seconds / busy:5.1f}%  {1e6 * seconds / n:6.2f} us")
    print("# top 30 functions by own time (us per request, profiled; calls per request):")
    for tottime, calls, where, area in sorted(functions, reverse=True)[:30]:
        print(f"  {1e6 * tottime / n:6.2f} us  {calls / n:5.2f}  {where:<58} {area.split(' (')[0]}")


# --- main -----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured run (5)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of discarded load first (1)")
    ap.add_argument("--repeat", type=int, default=1, help="measured runs per point, best kept (1)")
    ap.add_argument(
        "--connections", default="50,1000", help="comma-separated wrk -c values (50,1000)"
    )
    ap.add_argument(
        "--servers",
        default=DEFAULT_SERVERS,
        help=f"comma-separated, of {','.join(PEERS)} (default {DEFAULT_SERVERS})",
    )
    ap.add_argument(
        "--profile", type=int, default=0, metavar="SECONDS", help="see the docs (0: off)"
    )
    ap.add_argument(
        "--profile-server",
        default="peregrine",
        choices=[k for k in PEERS if k.startswith("peregrine")],
        help="the server --profile runs (default peregrine: Starlette through the adapter)",
    )
    args = ap.parse_args()
    args.connections = tuple(int(c) for c in args.connections.split(","))
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    if not keys or any(k not in PEERS for k in keys):
        ap.error(f"--servers: choose from {','.join(PEERS)}")
    if min(args.rounds, args.duration, args.repeat) < 1 or args.warmup < 0:
        ap.error("--rounds, --duration, --repeat >= 1; --warmup >= 0")

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        problems = [t for t in ("wrk", "taskset") if shutil.which(t) is None]
        problems += [
            f"{k}: missing {m}"
            for k in keys
            for m in PEERS[k].modules
            if importlib.util.find_spec(m) is None
        ]
        if problems:
            raise BenchError("cannot run: " + ", ".join(problems))
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC; "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs; server on CPU {SERVER_CPU}, wrk -t1 on the other, loopback; "
            f"app {APP}; {args.rounds} rounds x {args.duration} s after {args.warmup} s warm-up; "
            f"load average {_loadavg()}",
            flush=True,
        )
        rounds: dict[str, list[Round]] = {k: [] for k in keys}
        with tempfile.TemporaryDirectory(prefix="bench-asgi-") as tmp:
            for i in range(args.rounds):
                order = keys[i % len(keys) :] + keys[: i % len(keys)]
                print(f"# round {i + 1}/{args.rounds}: {', '.join(order)} (load {_loadavg()})")
                for key in order:
                    rounds[key].append(measure(PEERS[key], args, Path(tmp), f"r{i}"))
            print(f"# load average at the end {_loadavg()}")
            report(rounds, args.connections)
            if args.profile:
                profile(args, Path(tmp))
    except BenchError as exc:
        print(f"bench/asgi.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/asgi.py: interrupted; servers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
