"""System calls per request under load: peregrine_rt, uvicorn and Go's net/http (issue 18 item 1).

Run: ``.venv/bin/python bench/syscalls.py [--servers peregrine,uvicorn,go] [--duration 5]``
(needs ``perf`` from Debian's linux-perf, run as root or with
``kernel.perf_event_paranoid`` ≤ 1 for the syscall tracepoints; the peers as for
``bench/http.sh``; Go from Debian's golang)

Each server is started as ``bench/http_load.py`` starts it (pinned to CPU 0,
the same hello app), checked, warmed up for 1 s, then for each connection
count ``wrk -t1 -c<N>`` runs ``--duration`` seconds on CPU 1 while ``perf stat``
counts the server's system calls (every thread it has then) with the
``raw_syscalls:sys_enter`` tracepoint, and the main kinds apart with
``syscalls:sys_enter_<name>``.  Counts are divided by the requests wrk
completed in the same run.  Counting with tracepoints costs the server a
little; ``strace -c`` would cost it far more and change how requests batch.

The table gives, per server and connection count: requests/s (under perf),
system calls per request in all, and per kind.  The last line is
``syscalls_per_request peregrine=<n> uvicorn=<n> go=<n>`` at c=50.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _procs import BenchError, RunningServer
from http_load import CONNECTIONS, PEERS, WrkResult, check_hello, go_binary, run_wrk

KINDS = (
    "read", "write", "recvfrom", "sendto", "writev", "sendmsg", "recvmsg",
    "epoll_wait", "epoll_pwait", "epoll_ctl", "futex",
)  # fmt: skip
PERF_STOP_TIMEOUT = 10.0


def count_during(pid: int, work: Callable[[], WrkResult]) -> tuple[dict[str, int], WrkResult]:
    """Run ``work()`` while ``perf stat`` counts the system calls of process ``pid``."""
    events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{k}" for k in KINDS]
    with tempfile.NamedTemporaryFile("w+", suffix=".csv") as out:
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", out.name, "-e", ",".join(events), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(0.3)  # attached before the load starts
            if perf.poll() is not None:
                raise BenchError(f"perf stat failed: {perf.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            result = work()
        finally:
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(PERF_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                perf.kill()
                perf.wait()
        counts: dict[str, int] = {}
        for line in Path(out.name).read_text().splitlines():
            fields = line.split(",")
            if len(fields) < 3 or not fields[0].strip().isdigit():
                continue
            name = fields[2].split(":")[-1].removeprefix("sys_enter_")
            counts["all" if name == "sys_enter" else name] = int(fields[0])
    return counts, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default="peregrine,uvicorn,go")
    ap.add_argument("--duration", type=int, default=5, help="seconds of load per count (5)")
    args = ap.parse_args()
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PEERS]
    if unknown:
        ap.error(f"--servers: unknown {unknown}; choose from {','.join(PEERS)}")
    for tool in ("perf", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench/syscalls.py: {tool} not found", file=sys.stderr)
            return 1
    if "go" in keys:
        go_binary()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; wrk -t1 on CPU 1, server on CPU 0; "
        f"{args.duration} s per count; load average {os.getloadavg()[0]:.2f}"
    )
    table: dict[str, dict[int, tuple[float, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-syscalls-") as tmp:
        for key in keys:
            peer = PEERS[key]
            server = RunningServer(peer, Path(tmp))
            try:
                server.wait_ready()
                check_hello(server)
                run_wrk(server, 50, 1, Path(tmp))  # warm-up
                table[key] = {}
                for conns in CONNECTIONS:
                    time.sleep(0.5)
                    work = functools.partial(run_wrk, server, conns, args.duration, Path(tmp))
                    counts, r = count_during(server.proc.pid, work)
                    per = {k: v / max(r.requests, 1) for k, v in counts.items()}
                    table[key][conns] = (r.rps, per)
                    print(
                        f"  {peer.label:<22} c={conns:<5} {r.rps:>9.0f} req/s  "
                        f"{per.get('all', 0):.2f} syscalls/request  wrk CPU {r.wrk_cpu:.0f}%",
                        flush=True,
                    )
            finally:
                server.stop()
    print()
    kinds = [
        k
        for k in KINDS
        if any(per.get(k, 0) >= 0.005 for t in table.values() for _, per in t.values())
    ]
    print(f"{'server':<22}{'c':>6}{'req/s':>9}{'all':>7}" + "".join(f"{k:>12}" for k in kinds))
    for key, rows in table.items():
        for conns, (rps, per) in rows.items():
            print(
                f"{PEERS[key].label:<22}{conns:>6}{rps:>9.0f}{per.get('all', 0):>7.2f}"
                + "".join(f"{per.get(k, 0):>12.2f}" for k in kinds)
            )
    print()
    print(
        "syscalls_per_request "
        + " ".join(
            f"{key}={rows[50][1].get('all', 0):.2f}" for key, rows in table.items() if 50 in rows
        )
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench/syscalls.py: error: {exc}", file=sys.stderr)
        sys.exit(1)
