"""HTTP hello-world throughput under wrk: peregrine_rt against uvicorn, hypercorn and raw trio.

Run: ``.venv/bin/python bench/http_load.py [--quick] [--servers peregrine,rawtrio]``
(peers: ``.venv/bin/pip install -r bench/requirements.txt``)

One server process at a time, pinned to CPU 0 with ``taskset``; ``wrk`` (one
thread) pinned to CPU 1, on loopback.  Each server answers every request with
``200`` and ``Hello, World!``, keeping the connection alive:

* peregrine: ``peregrine-rt bench.servers.hello_peregrine:Hello`` (defaults);
* uvicorn: ``bench.servers.hello_asgi:app`` with ``--http httptools --loop uvloop``,
  no access log;
* hypercorn: the same ASGI app with ``--worker-class trio``, ``--workers 0`` (the
  worker runs in the process we start and pin, not in a spawned child) and
  ``--backlog 1024`` (peregrine_rt's default; hypercorn's 100 drops SYNs when
  1000 clients connect at once);
* rawtrio: ``bench.servers.hello_rawtrio`` — ``trio.serve_tcp``, a naive parse,
  a fixed response: the ceiling for a server on trio;
* go: Go's ``net/http`` (``bench/servers/hello_go.go``, built with Debian's
  golang into a temporary folder), ``GOMAXPROCS=1``: the compiled reference on
  one core;
* peregrine_pure: peregrine with ``PEREGRINE_RT_NO_SPEEDUPS=1`` (the parser's C
  accelerator off).

Before measuring, each server must answer two requests on one connection with
``200`` and ``Hello, World!``.  For each connection count, ``--warmup`` seconds of
load are run and discarded, then ``--repeat`` runs of ``--duration`` seconds; the
run with the most requests/s is reported (best of N, as ``parser.py`` does), with
its p99 from wrk's ``--latency`` distribution.

Every run also prints the CPU time of wrk (from ``wait4``'s rusage) and of the
server (``/proc/<pid>/stat``) over the run, and "others": how busy CPUs 0 and 1
were (``/proc/stat``) beyond the process pinned to each.  wrk near 100 % means
the load generator, not the server, is the limit (flagged above 90 %); others
above 25 % mean another process shared the core and the run is noisy (flagged;
per-CPU figures are tick-sampled, so a few % either way is noise).

Before/after: ``--before DIR`` also runs each selected peregrine server from
another source tree (``PYTHONPATH=DIR`` for that subprocess only, as
``peregrine_before``; the header of each server says which ``peregrine_rt`` it
loaded), and ``--rounds N`` runs the whole list N times, interleaved (A B C, A B
C, ...), so that slow drifts of a shared machine hit every server alike; the
table then shows the median of the rounds (each round: best of ``--repeat``),
every round's figure, and ``after/before`` ratios per round.

The last line is ``peregrine_vs_uvicorn c50=<ratio> c1000=<ratio>`` (requests/s;
with ``--before``, then ``peregrine_after_vs_before c50=<ratio> c1000=<ratio>``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _procs import (
    BEFORE_HELP,
    HOST,
    ROUNDS_HELP,
    SERVER_CPU,
    BenchError,
    Peer,
    RunningServer,
    busy_pct,
    check_tree,
    cpu_times,
    median,
    peregrine_origin,
    script,
    spawn,
    with_before,
)

WRK_CPU = 1
CONNECTIONS = (50, 1000)
BODY = b"Hello, World!"
WRK_SLACK = 20.0  # seconds past -d before wrk is killed
WRK_CPU_WARN = 90.0
OTHERS_WARN = 25.0  # % of a pinned core used by other processes


def uvicorn_argv(app: str, port: int) -> list[str]:
    """uvicorn serving the ASGI ``app`` with httptools and uvloop, no access log."""
    return [
        *script("uvicorn", "uvicorn"), app, "--host", HOST, "--port", str(port),
        "--http", "httptools", "--loop", "uvloop", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def hypercorn_argv(app: str, port: int) -> list[str]:
    """hypercorn's trio worker serving the ASGI ``app``, in one process."""
    return [
        *script("hypercorn", "hypercorn"), "--worker-class", "trio", "--workers", "0",
        "--backlog", "1024", "--bind", f"{HOST}:{port}", "--log-level", "warning", app,
    ]  # fmt: skip


PEERS = {
    "peregrine": Peer(
        "peregrine",
        "peregrine_rt",
        ("peregrine_rt", "trio"),
        lambda port: [
            *script("peregrine-rt", "peregrine_rt"),
            "bench.servers.hello_peregrine:Hello",
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
        ("uvicorn", "httptools", "uvloop"),
        lambda port: uvicorn_argv("bench.servers.hello_asgi:app", port),
    ),
    "hypercorn": Peer(
        "hypercorn",
        "hypercorn",
        ("hypercorn", "trio"),
        lambda port: hypercorn_argv("bench.servers.hello_asgi:app", port),
    ),
    "rawtrio": Peer(
        "rawtrio",
        "raw trio",
        ("trio",),
        lambda port: [
            sys.executable,
            "-m",
            "bench.servers.hello_rawtrio",
            "--host",
            HOST,
            "--port",
            str(port),
        ],
    ),
    "go": Peer(
        "go",
        "Go net/http",
        (),
        lambda port: [str(go_binary()), "-addr", f"{HOST}:{port}"],
        env={"GOMAXPROCS": "1"},
    ),
}
# The same peregrine_rt server with the C accelerator of the parser switched off.
PEERS["peregrine_pure"] = Peer(
    "peregrine_pure",
    "peregrine_rt pure",
    PEERS["peregrine"].modules,
    PEERS["peregrine"].argv,
    env={"PEREGRINE_RT_NO_SPEEDUPS": "1"},
)
GO_SOURCE = Path(__file__).resolve().parent / "servers" / "hello_go.go"
GO_BUILD = Path(tempfile.gettempdir()) / "peregrine-bench-go"


def go_binary() -> Path:
    """``bench/servers/hello_go.go`` built with Debian's golang (once, into a temporary folder)."""
    binary = GO_BUILD / "hello_go"
    if binary.exists() and binary.stat().st_mtime >= GO_SOURCE.stat().st_mtime:
        return binary
    go = shutil.which("go")
    if go is None:
        raise BenchError("go not found (Debian: apt-get install -y golang-go)")
    GO_BUILD.mkdir(exist_ok=True)
    env = {**os.environ, "GOCACHE": str(GO_BUILD / "cache"), "GOPATH": str(GO_BUILD / "path")}
    done = subprocess.run(
        [go, "build", "-o", str(binary), str(GO_SOURCE)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"go build {GO_SOURCE} failed:\n{done.stderr}")
    return binary


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        return "?"
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


DISTRIBUTIONS = {  # module -> distribution, for the versions line
    "peregrine_rt": "peregrine_rt",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "uvloop": "uvloop",
    "hypercorn": "hypercorn",
    "trio": "trio",
}


# --- checks --------------------------------------------------------------------


def _read_response(sock: socket.socket, buf: bytes) -> tuple[int, bytes, bytes, bytes]:
    """(status, head, body, rest) of one response with a content-length."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"connection closed mid-response: {buf[:200]!r}")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise BenchError(f"response without content-length: {head!r}")
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed mid-body")
        buf += chunk
    return status, head, buf[:length], buf[length:]


def check_hello(server: RunningServer) -> int:
    """Two GETs on one connection, as wrk sends them; the size of one response."""
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nUser-Agent: bench\r\n\r\n".encode()
    size = 0
    try:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            rest = b""
            for _ in range(2):
                sock.sendall(request)
                status, head, body, rest = _read_response(sock, rest)
                if status != 200 or body != BODY:
                    raise BenchError(
                        f"{server.peer.label} answered {status} {body[:100]!r}, "
                        f"not 200 {BODY!r}\n  head: {head!r}"
                    )
                size = len(head) + 4 + len(body)
    except (OSError, ValueError, IndexError) as exc:
        raise BenchError(f"{server.peer.label}: hello check failed: {exc!r}") from None
    return size


# --- wrk ----------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    conns: int
    rps: float
    p99_ms: float
    requests: int
    errors: dict[str, int]  # connect/read/write/timeout/non2xx, non-zero only
    wrk_cpu: float  # % of one CPU over the run
    server_cpu: float
    busy: tuple[float, float]  # % busy of SERVER_CPU, WRK_CPU
    output: str

    @property
    def others(self) -> tuple[float, float]:
        """% of SERVER_CPU, WRK_CPU used by something else than the process pinned there."""
        return (
            max(0.0, self.busy[0] - self.server_cpu),
            max(0.0, self.busy[1] - self.wrk_cpu),
        )

    def flags(self) -> list[str]:
        flags = []
        if self.wrk_cpu > WRK_CPU_WARN:
            flags.append("wrk CPU > 90%: the load generator may be the limit")
        if max(self.others) > OTHERS_WARN:
            flags.append("another process shared a core: noisy")
        return flags


def parse_wrk(output: str) -> tuple[float, float, int, dict[str, int]]:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p99 and total):
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    errors = {}
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        for name, value in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(value):
                errors[name] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors["non2xx"] = int(non2xx.group(1))
    return (
        float(rps.group(1)),
        float(p99.group(1)) * _UNITS_MS[p99.group(2)],
        int(total.group(1)),
        errors,
    )


def run_wrk(server: RunningServer, conns: int, seconds: int, logdir: Path) -> WrkResult:
    argv = [
        "taskset",
        "-c",
        str(WRK_CPU),
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        f"http://{HOST}:{server.port}/",
    ]
    out_path = logdir / "wrk.out"
    with open(out_path, "w+b") as out:
        cpus_before = cpu_times()
        server_before = server.cpu_seconds()
        t0 = time.monotonic()
        proc = spawn(argv, out)  # taskset execs wrk: same pid, so wait4 sees wrk's rusage
        reaped = False
        try:
            deadline = t0 + seconds + WRK_SLACK
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    reaped = True
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"wrk did not finish within {seconds + WRK_SLACK:g} s")
                time.sleep(0.02)
        finally:
            if not reaped:
                os.kill(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
            proc.returncode = -1  # reaped here; keep Popen from waiting again
        wall = time.monotonic() - t0
        server_after = server.cpu_seconds() if server.proc.poll() is None else server_before
        cpus_after = cpu_times()
        out.seek(0)
        output = out.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    server.check_alive()
    if code != 0:
        raise BenchError(f"wrk exited with status {code}:\n{output}")
    rps, p99, total, errors = parse_wrk(output)
    return WrkResult(
        conns=conns,
        rps=rps,
        p99_ms=p99,
        requests=total,
        errors=errors,
        wrk_cpu=100.0 * (usage.ru_utime + usage.ru_stime) / wall,
        server_cpu=100.0 * (server_after - server_before) / wall,
        busy=(
            busy_pct(cpus_before, cpus_after, SERVER_CPU),
            busy_pct(cpus_before, cpus_after, WRK_CPU),
        ),
        output=output,
    )


# --- main -----------------------------------------------------------------------


def _missing(peer: Peer) -> list[str]:
    return [m for m in peer.modules if importlib.util.find_spec(m) is None]


def _version(module: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _preflight(peers: list[Peer]) -> None:
    problems = []
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (Debian: apt-get install -y {tool})")
    for peer in peers:
        if peer.key == "go":
            try:
                go_binary()
            except BenchError as exc:
                problems.append(f"go: {exc}; or leave it out with --servers")
            continue
        missing = _missing(peer)
        if missing:
            problems.append(
                f"{peer.key}: not installed (missing {', '.join(missing)}); install the peers "
                f"with `{sys.executable} -m pip install -r bench/requirements.txt`, "
                f"or leave it out with --servers"
            )
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, WRK_CPU} <= cpus:
        problems.append(
            f"need CPUs {SERVER_CPU} and {WRK_CPU}; this process may use {sorted(cpus)}"
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * max(CONNECTIONS) + 256
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            problems.append(
                f"open-file limit {hard} is below the {want} needed for c={max(CONNECTIONS)}"
            )
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # children inherit it
    if problems:
        raise BenchError("cannot run:\n" + "\n".join(f"  - {p}" for p in problems))


def _fmt_errors(errors: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in errors.items()) or "0"


def _ratio(a: float | None, b: float | None, suffix: str = "") -> str:
    return f"{a / b:.2f}{suffix}" if a and b else "n/a"


def measure(
    peer: Peer, args: argparse.Namespace, logdir: Path, tag: str | None = None
) -> dict[int, WrkResult]:
    server = RunningServer(peer, logdir, tag)
    results: dict[int, WrkResult] = {}
    try:
        server.wait_ready()
        size = check_hello(server)
        env = " ".join(f"{k}={v}" for k, v in peer.env.items())
        origin = ""
        if peer.key.startswith("peregrine"):
            origin = f"; peregrine_rt from {peregrine_origin(server.proc.pid)}"
        print(
            f"# {peer.label}: 200 {BODY.decode()!r}, keep-alive, {size}-byte response; "
            f"{env + ' ' if env else ''}{server.command}{origin} (load {_load()})"
        )
        for conns in CONNECTIONS:
            if args.warmup:
                run_wrk(server, conns, args.warmup, logdir)
            runs = []
            for i in range(args.repeat):
                time.sleep(0.5)  # let the previous run's connections close
                r = run_wrk(server, conns, args.duration, logdir)
                runs.append(r)
                flags = r.flags()
                warn = "  <-- " + "; ".join(flags) if flags else ""
                print(
                    f"  {peer.label:<13} c={conns:<5} run {i + 1}/{args.repeat}: {r.rps:>9.0f} req/s  "
                    f"p99 {r.p99_ms:>8.2f} ms  wrk CPU {r.wrk_cpu:>3.0f}%  server CPU {r.server_cpu:>3.0f}%  "
                    f"others cpu{SERVER_CPU}/cpu{WRK_CPU} {r.others[0]:>2.0f}%/{r.others[1]:>2.0f}%  "
                    f"errors {_fmt_errors(r.errors)}{warn}",
                    flush=True,
                )
                if args.verbose:
                    print("    " + r.output.rstrip().replace("\n", "\n    "))
            results[conns] = max(runs, key=lambda r: r.rps)
    finally:
        note = server.stop()
        if note:
            print(f"# note: {note}")
    return results


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median_result(runs: list[dict[int, WrkResult]], conns: int) -> WrkResult:
    """The round whose req/s is the median at ``conns`` (the lower middle one of an even count)."""
    ordered = sorted((r[conns] for r in runs), key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def _cpu_us(r: WrkResult) -> float:
    """The server's CPU time per request in the run, in microseconds."""
    return r.server_cpu * 1e4 / r.rps if r.rps else 0.0


def print_rounds(rounds: dict[str, list[dict[int, WrkResult]]]) -> None:
    """Every round's req/s per server, and after/before per round when both ran."""
    print()
    print("rounds (req/s; each round best of --repeat):")
    for key, runs in rounds.items():
        for conns in CONNECTIONS:
            values = " ".join(f"{r[conns].rps:>8.0f}" for r in runs)
            print(
                f"  {PEERS_ALL[key].label:<22} c={conns:<5} {values}   "
                f"median {median([r[conns].rps for r in runs]):.0f}"
            )
    print("server CPU per request (us; the server's CPU time over the run / requests: steadier")
    print("than req/s when other processes share the machine):")
    for key, runs in rounds.items():
        for conns in CONNECTIONS:
            values = [_cpu_us(r[conns]) for r in runs]
            print(
                f"  {PEERS_ALL[key].label:<22} c={conns:<5} "
                + " ".join(f"{v:>8.1f}" for v in values)
                + f"   median {median(values):.1f}"
            )
    for key in [k for k in rounds if k + "_before" in rounds]:
        after, before = rounds[key], rounds[key + "_before"]
        for conns in CONNECTIONS:
            cpu_a = median([_cpu_us(a[conns]) for a in after])
            cpu_b = median([_cpu_us(b[conns]) for b in before])
            print(
                f"  {key} CPU per request after/before c={conns:<5} {cpu_a / cpu_b:.3f} "
                f"(medians {cpu_a:.1f} / {cpu_b:.1f} us)"
            )
        for conns in CONNECTIONS:
            per = [a[conns].rps / b[conns].rps for a, b in zip(after, before, strict=True)]
            print(
                f"  {key} after/before c={conns:<5} "
                + " ".join(f"{x:.3f}" for x in per)
                + f"   median {median(per):.3f}   ratio of medians "
                f"{median([a[conns].rps for a in after]) / median([b[conns].rps for b in before]):.3f}"
            )


PEERS_ALL: dict[str, Peer] = dict(PEERS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-up (noisier)")
    ap.add_argument(
        "--duration", type=int, default=None, help="seconds per measured run (default 10)"
    )
    ap.add_argument(
        "--warmup", type=int, default=None, help="seconds of discarded load first (default 2)"
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="measured runs per point; the best is reported"
    )
    ap.add_argument(
        "--servers",
        default=",".join(PEERS),
        help=f"comma-separated subset of {','.join(PEERS)} (default all)",
    )
    ap.add_argument("--before", type=Path, metavar="DIR", help=BEFORE_HELP)
    ap.add_argument("--rounds", type=int, default=1, help=ROUNDS_HELP)
    ap.add_argument("-v", "--verbose", action="store_true", help="print wrk's full output")
    args = ap.parse_args()
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.duration < 1 or args.warmup < 0 or args.repeat < 1 or args.rounds < 1:
        ap.error("--duration must be >= 1, --warmup >= 0, --repeat >= 1, --rounds >= 1")
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PEERS]
    if unknown or not keys:
        ap.error(f"--servers: unknown {unknown}; choose from {','.join(PEERS)}")
    peers = [PEERS[k] for k in dict.fromkeys(keys)]
    try:
        tree = check_tree(args.before) if args.before else None
    except BenchError as exc:
        ap.error(str(exc))
    peers = with_before(peers, tree)
    PEERS_ALL.update((p.key, p) for p in peers)

    # SIGTERM stops like Ctrl-C: the finally blocks below stop every child.
    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        _preflight(peers)
        modules = dict.fromkeys(m for p in peers for m in p.modules)
        load = os.getloadavg()
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {platform.python_implementation()} "
            f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
            f"server on CPU {SERVER_CPU}, wrk -t1 on CPU {WRK_CPU}, loopback"
        )
        versions = [f"{m} {_version(m)}" for m in modules]
        if any(p.key == "go" for p in peers):
            versions.append(f"Go {go_version()} (GOMAXPROCS=1)")
        print("# " + ", ".join(versions))
        print(
            f"# {args.duration} s per run after {args.warmup} s warm-up; best of {args.repeat} "
            f"by req/s; {args.rounds} round(s), interleaved, median reported; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        if tree is not None:
            print(f"# before: PYTHONPATH={tree} for the *_before servers")
        if load[0] > 0.5:
            print(
                f"# warning: load average {load[0]:.2f} before starting: others are using the machine"
            )
        rounds: dict[str, list[dict[int, WrkResult]]] = {p.key: [] for p in peers}
        with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
            for i in range(args.rounds):
                if args.rounds > 1:
                    print(f"# round {i + 1}/{args.rounds} (load {_load()})", flush=True)
                for peer in peers:
                    rounds[peer.key].append(measure(peer, args, Path(tmp), f"r{i}"))
        results = {
            key: {c: _median_result(runs, c) for c in CONNECTIONS} for key, runs in rounds.items()
        }
    except BenchError as exc:
        print(f"bench/http_load.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/http_load.py: interrupted; servers stopped", file=sys.stderr)
        return 130

    load = os.getloadavg()
    print(f"# load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    reported = [r for res in results.values() for r in res.values()]
    noisy = sum(1 for r in reported if max(r.others) > OTHERS_WARN)
    if noisy:
        print(
            f"# warning: {noisy} of {len(reported)} reported runs shared a core with other "
            "processes; rerun on a quiet machine, or with --repeat"
        )
    if any(r.wrk_cpu > WRK_CPU_WARN for r in reported):
        print(
            "# warning: wrk used > 90% of its core in a reported run: the client may be the limit"
        )
    base = results.get("uvicorn")
    c_lo, c_hi = CONNECTIONS
    if args.rounds > 1:
        print_rounds(rounds)
    print()
    print(
        f"{'server':<22}{f'req/s c={c_lo}':>14}{f'req/s c={c_hi}':>14}"
        f"{f'p99 c={c_lo}':>13}{f'p99 c={c_hi}':>13}"
        f"{f'vs uvicorn c={c_lo}':>20}{f'c={c_hi}':>8}"
    )
    for key, res in results.items():
        print(
            f"{PEERS_ALL[key].label:<22}{res[c_lo].rps:>14.0f}{res[c_hi].rps:>14.0f}"
            f"{res[c_lo].p99_ms:>10.2f} ms{res[c_hi].p99_ms:>10.2f} ms"
            f"{_ratio(res[c_lo].rps, base and base[c_lo].rps, 'x'):>20}"
            f"{_ratio(res[c_hi].rps, base and base[c_hi].rps, 'x'):>8}"
        )
    print()
    mine = results.get("peregrine")
    if mine and "rawtrio" in results:
        raw = results["rawtrio"]
        print(
            f"peregrine_vs_rawtrio c{c_lo}={_ratio(mine[c_lo].rps, raw[c_lo].rps)} "
            f"c{c_hi}={_ratio(mine[c_hi].rps, raw[c_hi].rps)}"
        )
    print(
        f"peregrine_vs_uvicorn c{c_lo}={_ratio(mine and mine[c_lo].rps, base and base[c_lo].rps)} "
        f"c{c_hi}={_ratio(mine and mine[c_hi].rps, base and base[c_hi].rps)}"
    )
    old = results.get("peregrine_before")
    if mine and old:
        print(
            f"peregrine_after_vs_before c{c_lo}={_ratio(mine[c_lo].rps, old[c_lo].rps)} "
            f"c{c_hi}={_ratio(mine[c_hi].rps, old[c_hi].rps)}"
        )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
