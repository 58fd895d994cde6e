"""CPU instructions per HTTP request, counted by valgrind: a deterministic cost, side by side.

Run: ``.venv/bin/python bench/instructions.py [--servers handler,metrics,asgi,uvicorn]
[--before DIR] [--requests 1000,5000]`` (``valgrind`` from Debian; the ASGI rows need
``starlette`` and ``uvicorn[standard]``).

Wall-clock benchmarks (``bench/http.sh``, ``bench/metrics.py``, ``bench/asgi.py``) measure
what a user sees, but on a shared 2-core machine their rounds move by 10-30 %, more
than the differences they are asked about (a few per cent).  This script counts what
does not move: the user-space instructions a server executes per request, under
valgrind's ``cachegrind`` tool without cache simulation.  For each server it runs the
same fresh process twice, once answering N1 and once N2 sequential ``GET /``
requests (keep-alive, spread over ``--connections`` connections, each waiting for its
answer: no pipelining), and reports ``(Ir(N2) - Ir(N1)) / (N2 - N1)``: start-up,
imports and shutdown cancel out.  Kernel time (the syscalls) is not counted; it is the
same for two builds of one server (``strace -c``: one ``recvfrom``, ``sendto``,
``epoll_wait`` and ``epoll_ctl`` per request for peregrine_rt).  Repeated runs agree
within about 0.5 %.

Servers (``--servers``, comma-separated):

* ``handler``: ``peregrine-rt bench.servers.hello_peregrine:Hello``;
* ``metrics``: the same with ``--metrics``;
* ``asgi``: ``peregrine-rt --asgi bench.servers.starlette_hello:app`` (Starlette);
* ``asgi_raw``: ``peregrine-rt --asgi bench.servers.hello_asgi:app`` (no framework);
* ``uvicorn``: uvicorn (httptools, uvloop) with the Starlette app;
* ``uvicorn_raw``: uvicorn with ``hello_asgi``.

peregrine_rt runs with ``--malloc-trim-interval 100000``: a trim every 10 s of wall
time happens every few hundred requests under valgrind's slowdown, noise that a normal
run spreads over 10^5 times more requests.  ``--before DIR`` (a ``git archive`` of
another commit with its C extension built) adds a ``<server>_before`` row for each
peregrine server, run with ``PYTHONPATH=DIR``; each row says which tree it loaded.

The last line is ``instructions <server>=<instructions per request> ...`` and, when
their rows were run, the ratios ``metrics/handler`` (what counting costs: 1.04 is 4 %
more) and ``uvicorn/asgi``, ``uvicorn_raw/asgi_raw`` (the peer's count over
peregrine_rt's: the fraction of the peer's speed peregrine_rt reaches, by this
count), and ``<server>/before`` for each ``--before`` pair.
Every process is stopped by its PID (``_procs.stop_process``) and killed if this
script dies.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _procs import (
    BIN,
    HOST,
    BenchError,
    check_tree,
    free_port,
    peregrine_origin,
    spawn,
    stop_process,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BODY = b"Hello, World!"
START_TIMEOUT = 180.0  # seconds: imports under valgrind are ~50x slower
STOP_TIMEOUT = 120.0
TRIM_OFF = ["--malloc-trim-interval", "100000"]  # see the module docstring

SERVERS: dict[str, list[str]] = {
    "handler": ["bench.servers.hello_peregrine:Hello"],
    "metrics": ["bench.servers.hello_peregrine:Hello", "--metrics"],
    "asgi": ["--asgi", "bench.servers.starlette_hello:app"],
    "asgi_raw": ["--asgi", "bench.servers.hello_asgi:app"],
    "uvicorn": ["bench.servers.starlette_hello:app"],
    "uvicorn_raw": ["bench.servers.hello_asgi:app"],
}
RATIOS = (("metrics", "handler"), ("uvicorn", "asgi"), ("uvicorn_raw", "asgi_raw"))


def argv_for(server: str, port: int, tree: Path | None = None) -> list[str]:
    """The server's command line (without valgrind), listening on ``port``.

    A ``--before`` tree older than ``Config.malloc_trim_interval`` (no
    ``peregrine_rt/_trim.py``) runs without that flag: it never trims.
    """
    where = ["--host", HOST, "--port", str(port)]
    if server.startswith("uvicorn"):
        return [
            sys.executable, str(BIN / "uvicorn"), *SERVERS[server], *where,
            "--http", "httptools", "--loop", "uvloop", "--log-level", "warning",
            "--no-access-log",
        ]  # fmt: skip
    # The console script run by path: no current directory ahead of PYTHONPATH.
    trims = tree is None or (tree / "peregrine_rt" / "_trim.py").exists()
    return [
        sys.executable, str(BIN / "peregrine-rt"), *SERVERS[server], *where,
        "--log-level", "warning", *(TRIM_OFF if trims else []),
    ]  # fmt: skip


def connect(
    proc: subprocess.Popen[bytes], port: int, count: int, deadline: float
) -> list[socket.socket]:
    while True:
        try:
            return [socket.create_connection((HOST, port), timeout=60) for _ in range(count)]
        except OSError:
            if proc.poll() is not None:  # a --before tree without the server's option, say
                assert proc.stderr is not None
                err = proc.stderr.read().decode(errors="replace")
                raise BenchError(f"the server exited ({proc.returncode}):\n{err[-1500:]}") from None
            if time.monotonic() > deadline:
                raise BenchError(f"no server on port {port} after {START_TIMEOUT:.0f} s") from None
            time.sleep(0.3)


def ask(sock: socket.socket) -> None:
    sock.sendall(REQUEST)
    buf = b""
    while not buf.endswith(BODY):
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"the server closed the connection; it had sent {buf[:200]!r}")
        buf += chunk


def instructions(
    server: str, requests: int, connections: int, tree: Path | None
) -> tuple[int, str]:
    """Instructions of one server process answering ``requests`` requests, and its tree."""
    port = free_port()
    env = {"PYTHONHASHSEED": "0"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        *argv_for(server, port, tree),
    ]  # fmt: skip
    proc = spawn(cmd, subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        socks = connect(proc, port, connections, time.monotonic() + START_TIMEOUT)
        try:
            for i in range(requests):
                ask(socks[i % connections])
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.5)
        origin = peregrine_origin(proc.pid)
        stop_process(proc, signal.SIGTERM, STOP_TIMEOUT)
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
    finally:
        stop_process(proc, signal.SIGKILL, 5)
    found = re.search(r"I\s+refs:\s+([\d,]+)", err)
    if found is None:
        raise BenchError(f"{server}: no instruction count from valgrind:\n{err[-1500:]}")
    return int(found.group(1).replace(",", "")), origin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="handler,metrics,asgi,uvicorn")
    parser.add_argument("--before", type=Path, help="another tree: <server>_before rows")
    parser.add_argument("--requests", default="1000,5000", help="N1,N2 (default 1000,5000)")
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; known: {', '.join(SERVERS)}")
    n1, n2 = (int(n) for n in args.requests.split(","))
    if not 0 < n1 < n2:
        parser.error("--requests N1,N2 with 0 < N1 < N2")
    if shutil.which("valgrind") is None:
        print(
            "bench/instructions.py: error: valgrind not found (apt install valgrind)",
            file=sys.stderr,
        )
        return 2
    before = check_tree(args.before) if args.before else None
    rows: list[tuple[str, str, Path | None]] = []
    for server in servers:
        rows.append((server, server, None))
        if before is not None and not server.startswith("uvicorn"):
            rows.append((f"{server}_before", server, before))
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; N1={n1} N2={n2}")
    results: dict[str, float] = {}
    try:
        for label, server, tree in rows:
            small, origin = instructions(server, n1, args.connections, tree)
            large, _ = instructions(server, n2, args.connections, tree)
            results[label] = (large - small) / (n2 - n1)
            print(f"{label:<16} {results[label]:>10,.0f} instructions/request   ({origin})")
    except BenchError as exc:
        print(f"bench/instructions.py: error: {exc}", file=sys.stderr)
        return 1
    parts = [f"{label}={value:.0f}" for label, value in results.items()]
    for top, bottom in RATIOS:
        for suffix in ("", "_before"):
            if top + suffix in results and bottom + suffix in results:
                ratio = results[top + suffix] / results[bottom + suffix]
                parts.append(f"{top}{suffix}/{bottom}{suffix}={ratio:.3f}")
    if before is not None:
        for label in list(results):
            if label + "_before" in results:
                parts.append(f"{label}/before={results[label] / results[label + '_before']:.3f}")
    print(" ".join(["instructions", *parts]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
