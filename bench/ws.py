"""WebSocket echo throughput, latency and idle memory: peregrine_rt against its peers.

Run: ``.venv/bin/python bench/ws.py [--quick] [--duration 10] [--servers peregrine,websockets_asyncio]``
(peers and the load generator: ``.venv/bin/pip install -r bench/requirements-ws.txt``;
``taskset`` is Debian's util-linux)

One server process at a time, pinned to CPU 0 with ``taskset``; the load
generator (``bench/ws_client.py``: picows, a Cython WebSocket client, on uvloop,
one process) pinned to CPU 1; loopback only.  The servers, each an echo of
every message, with compression off (the client offers no extension either):

* peregrine: ``peregrine-rt bench.servers.ws_peregrine:Echo`` (defaults);
* websockets_asyncio: ``websockets.asyncio.server.serve`` on uvloop
  (``bench/servers/ws_websockets_asyncio.py``);
* websockets_trio: ``websockets.trio.server.serve`` (in websockets 17.4;
  ``bench/servers/ws_websockets_trio.py``), skipped if the installed
  websockets has no ``websockets.trio``;
* trio_websocket: ``trio_websocket.serve_websocket``
  (``bench/servers/ws_trio_websocket.py``);
* hypercorn: an ASGI echo (``bench/servers/ws_hypercorn.py``) under
  ``--worker-class trio --workers 0 --backlog 1024``;
* aiohttp: ``web.WebSocketResponse`` on uvloop (``bench/servers/ws_aiohttp.py``).

Before/after: ``--before DIR`` also runs the peregrine server from another
source tree (``PYTHONPATH=DIR`` for that subprocess only, as
``peregrine_before``; each server's line says which ``peregrine_rt`` it loaded),
and ``--rounds N`` runs the whole list N times, interleaved (A B C, A B C, ...);
the table then holds the median round per point, after a list of every round
and the ``after/before`` ratio of each.

Before measuring, each server must answer a handshake and echo one message to
a hand-written client.  Then, for 50 and 1000 connections: every connection
ping-pongs 32-byte text messages (send, wait for the echo, check it, send
again); ``--warmup`` seconds are discarded, ``--duration`` seconds are
measured; messages/s is echoes received per second, p50/p99 the round trip
seen by the client.  The CPU time of the load generator and of the server over
the measured window comes from ``/proc/<pid>/stat``, and how busy CPUs 0 and 1
were from ``/proc/stat``: a load generator above 90 % of its CPU is flagged (it
may be the limit, not the server), and so is a CPU much busier than the
process pinned to it (someone else was using it).

Idle memory: a fresh server process echoes one message (so lazy imports are
done), rests ``--settle`` seconds, and its ``VmRSS`` is read; then N
connections are opened and left silent (handshake only), and after the same
pause ``VmRSS`` is read again: the increase divided by N is the RSS per idle
connection.  N is 1000 and 10,000 (1000 only with ``--quick``); 10,000 needs a
file-descriptor limit above 10,000, raised here within the hard limit (the
children inherit it) or skipped with a note.

The last line is ``peregrine_ws c50=<msg/s> c1000=<msg/s>
vs_websockets_trio=<r50>x/<r1000>x vs_websockets_asyncio=<r50>x/<r1000>x
rss_per_idle_kib=<n>`` (RSS at the largest N measured).

Every phase is bounded in time; every process started here is stopped (by its
PID: SIGTERM, then SIGKILL) in ``finally`` blocks, and gets SIGKILL if this
script dies first.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import struct
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
    RunningServer,
    busy_pct,
    check_tree,
    cpu_seconds,
    cpu_times,
    median,
    peregrine_origin,
    rss_kib,
    script,
    spawn,
    stop_process,
    with_before,
)

CLIENT = ROOT / "bench" / "ws_client.py"
CLIENT_CPU = 1
CONNECTIONS = (50, 1000)
IDLE = (1000, 10_000)
MESSAGE_SIZE = 32
CONNECT_TIMEOUT = 180.0  # seconds for the client to open all its connections
RESULT_TIMEOUT = 30.0  # seconds for the client to answer STOP, and to exit after
CLIENT_CPU_WARN = 90.0
FD_MARGIN = 500


def _module(name: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", name, "--host", HOST, "--port", str(port)]


PEERS = {
    "peregrine": Peer(
        "peregrine",
        "peregrine_rt",
        ("peregrine_rt", "trio"),
        lambda port: [
            *script("peregrine-rt", "peregrine_rt"),
            "bench.servers.ws_peregrine:Echo",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    ),
    "websockets_asyncio": Peer(
        "websockets_asyncio",
        "websockets asyncio+uvloop",
        ("websockets.asyncio.server", "uvloop"),
        _module("bench.servers.ws_websockets_asyncio"),
    ),
    "websockets_trio": Peer(
        "websockets_trio",
        "websockets trio",
        ("websockets.trio.server", "trio"),
        _module("bench.servers.ws_websockets_trio"),
    ),
    "trio_websocket": Peer(
        "trio_websocket",
        "trio-websocket",
        ("trio_websocket",),
        _module("bench.servers.ws_trio_websocket"),
    ),
    "hypercorn": Peer(
        "hypercorn",
        "hypercorn (trio)",
        ("hypercorn", "trio"),
        lambda port: [
            *script("hypercorn", "hypercorn"),
            "--worker-class",
            "trio",
            "--workers",
            "0",
            "--backlog",
            "1024",
            "--bind",
            f"{HOST}:{port}",
            "--log-level",
            "warning",
            "bench.servers.ws_hypercorn:app",
        ],
    ),
    "aiohttp": Peer(
        "aiohttp",
        "aiohttp+uvloop",
        ("aiohttp", "uvloop"),
        _module("bench.servers.ws_aiohttp"),
    ),
}
DEFAULT_SERVERS = (
    "peregrine",
    "websockets_asyncio",
    "websockets_trio",
    "trio_websocket",
    "hypercorn",
)
DISTRIBUTIONS = (
    "peregrine_rt",
    "wsproto",
    "trio",
    "websockets",
    "uvloop",
    "trio-websocket",
    "hypercorn",
    "aiohttp",
    "picows",
)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- the server ----------------------------------------------------------------


class WsServer(RunningServer):
    """A WebSocket server: stopped by its PID (SIGTERM, then SIGKILL), its RSS readable."""

    stop_signal = signal.SIGTERM
    kill_group = False

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    def rss_kib(self) -> int:
        self.check_alive()
        return rss_kib(self.proc.pid)


# --- a minimal WebSocket client, to check a server before loading it ---------


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"connection closed after {bytes(buf[:200])!r}")
        buf += chunk
    data = bytes(buf[:n])
    del buf[:n]
    return data


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _read_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    b0, b1 = _recv_exact(sock, 2, buf)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _recv_exact(sock, 2, buf))
    elif length == 127:
        (length,) = struct.unpack("!Q", _recv_exact(sock, 8, buf))
    if b1 & 0x80:
        raise BenchError("the server masked its frame")
    return b0 & 0x0F, _recv_exact(sock, length, buf)


def check_echo(server: WsServer) -> None:
    """Handshake (101, right accept key, no extension), echo one text message, close."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
    ).encode()
    expected = base64.b64encode(
        hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    )
    message = b"x" * MESSAGE_SIZE
    label = server.peer.label
    try:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(request)
            buf = bytearray()
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise BenchError(f"{label}: closed during the handshake: {bytes(buf)!r}")
                buf += chunk
            end = buf.index(b"\r\n\r\n")
            head = bytes(buf[:end])
            del buf[: end + 4]
            lines = head.split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if (
                lines[0].split(b" ")[1] != b"101"
                or headers.get(b"sec-websocket-accept") != expected
            ):
                raise BenchError(f"{label}: bad handshake response: {head!r}")
            if b"sec-websocket-extensions" in headers:
                raise BenchError(f"{label}: negotiated an extension nobody offered: {head!r}")
            sock.sendall(_frame(0x1, message))
            opcode, payload = _read_frame(sock, buf)
            if (opcode, payload) != (0x1, message):
                raise BenchError(f"{label}: echoed opcode {opcode} {payload[:100]!r}")
            sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
            opcode, payload = _read_frame(sock, buf)
            if opcode != 0x8:
                raise BenchError(f"{label}: answered a close with opcode {opcode}")
    except (OSError, ValueError, IndexError) as exc:
        raise BenchError(f"{label}: echo check failed: {exc!r}") from None


# --- the load generator -------------------------------------------------------


class Client:
    """``bench/ws_client.py`` pinned to CLIENT_CPU, spoken to by lines on stdin/stdout."""

    def __init__(self, mode: str, url: str, conns: int, max_seconds: float, log: IO[bytes]):
        argv = [
            "taskset",
            "-c",
            str(CLIENT_CPU),
            sys.executable,
            "-P",
            str(CLIENT),
            mode,
            url,
            "--connections",
            str(conns),
            "--size",
            str(MESSAGE_SIZE),
            "--max-seconds",
            f"{max_seconds:g}",
        ]
        self.command = " ".join(argv)
        self.log = log
        self.proc = spawn(argv, subprocess.PIPE, stdin=subprocess.PIPE, stderr=log)
        self._lines = LineReader(self.proc, f"load generator ({self.command})")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float) -> str:
        """The next line of its stdout; BenchError on timeout or exit."""
        return self._lines.line(timeout)

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"load generator gone: {self.command}") from None

    def finish(self) -> bool:
        """Close stdin, wait for the exit (bounded); True if it had to be killed."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(RESULT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        return stop_process(self.proc, timeout=1.0)


@dataclass
class LoadResult:
    conns: int
    rate: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # % of one CPU over the measured window
    server_cpu: float
    busy: tuple[float, float]  # % busy of SERVER_CPU, CLIENT_CPU
    notes: list[str] = field(default_factory=list)


@dataclass
class PeerResult:
    peer: Peer
    load: dict[int, LoadResult] = field(default_factory=dict)
    idle: dict[int, float] = field(default_factory=dict)  # N -> KiB per connection
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_ready(client: Client, conns: int) -> tuple[int, list[str]]:
    line = client.line(CONNECT_TIMEOUT)
    if not line.startswith("READY "):
        raise BenchError(f"load generator said {line!r}")
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    ok, failed, ext = int(fields["ok"]), int(fields["failed"]), fields["extensions"]
    notes = []
    if failed:
        notes.append(f"{failed} of {conns} connections failed to open")
    if ext != "-":
        notes.append(f"extension negotiated: {ext}")
    for _ in range(min(failed, 3)):
        try:
            extra = client.line(1.0)
        except BenchError:
            break
        if extra.startswith("ERROR "):
            notes.append(extra[6:])
    if ok == 0:
        raise BenchError(f"no connection opened ({'; '.join(notes)})")
    return ok, notes


def run_load(
    server: WsServer, conns: int, warmup: float, duration: float, logdir: Path
) -> LoadResult:
    with open(logdir / f"client-{server.peer.key}-{conns}.log", "wb") as log:
        client = Client("load", server.url, conns, CONNECT_TIMEOUT + warmup + duration + 60, log)
        try:
            ok, notes = _read_ready(client, conns)
            client.send("START")
            time.sleep(warmup)
            server.check_alive()
            cpus0 = cpu_times()
            client0 = cpu_seconds(client.pid)
            server0 = server.cpu_seconds()
            t0 = time.monotonic()
            client.send("MARK")
            time.sleep(duration)
            client.send("STOP")
            elapsed = time.monotonic() - t0
            client1 = cpu_seconds(client.pid)
            server1 = server.cpu_seconds()
            cpus1 = cpu_times()
            line = client.line(RESULT_TIMEOUT)
            try:
                result = json.loads(line)
            except ValueError:
                raise BenchError(f"load generator said {line!r}") from None
            if client.finish():
                notes.append("load generator had to be killed")
        finally:
            stop_process(client.proc, timeout=1.0)
    server.check_alive()
    if result["messages"] == 0:
        raise BenchError(f"no echo in {duration:g} s at {conns} connections")
    if result["mismatches"]:
        notes.append(f"{result['mismatches']} echoes differed from what was sent")
    if result["lost"]:
        notes.append(f"{result['lost']} connections dropped during the run")
    if ok < conns:
        notes.append(f"ran with {ok} connections")
    res = LoadResult(
        conns=conns,
        rate=result["messages"] / result["seconds"],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        client_cpu=100 * (client1 - client0) / elapsed,
        server_cpu=100 * (server1 - server0) / elapsed,
        busy=(busy_pct(cpus0, cpus1, SERVER_CPU), busy_pct(cpus0, cpus1, CLIENT_CPU)),
        notes=notes,
    )
    if res.client_cpu > CLIENT_CPU_WARN:
        res.notes.append(
            f"WARNING: load generator at {res.client_cpu:.0f}% CPU: it may be the limit"
        )
    if res.busy[0] - res.server_cpu > 15:
        res.notes.append(
            f"CPU {SERVER_CPU} {res.busy[0]:.0f}% busy, server {res.server_cpu:.0f}%: "
            "someone else used it"
        )
    if res.busy[1] - res.client_cpu > 15:
        res.notes.append(
            f"CPU {CLIENT_CPU} {res.busy[1]:.0f}% busy, client {res.client_cpu:.0f}%: "
            "someone else used it"
        )
    return res


def run_idle(server: WsServer, conns: int, settle: float, logdir: Path) -> tuple[float, str]:
    """KiB of server RSS per idle connection, and a one-line account."""
    before = server.rss_kib()
    with open(logdir / f"client-{server.peer.key}-idle{conns}.log", "wb") as log:
        client = Client("idle", server.url, conns, CONNECT_TIMEOUT + settle + 60, log)
        try:
            ok, notes = _read_ready(client, conns)
            time.sleep(settle)
            after = server.rss_kib()
            client.send("STOP")
            client.finish()
        finally:
            stop_process(client.proc, timeout=1.0)
    per = (after - before) / ok
    account = f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB for {ok} idle connections"
    if notes:
        account += " (" + "; ".join(notes) + ")"
    return per, account


# --- the run ------------------------------------------------------------------


def raise_fd_limit(need: int) -> tuple[bool, str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return True, f"fd limit {soft}"
    if hard != resource.RLIM_INFINITY and hard < need:
        return False, f"fd hard limit {hard} < {need} needed"
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return True, f"fd limit raised {soft} -> {need} (hard {hard})"


def bench_peer(peer: Peer, args: argparse.Namespace, idle: list[int], logdir: Path) -> PeerResult:
    res = PeerResult(peer)
    server = WsServer(peer, logdir, f"load{args.round}")
    try:
        server.wait_ready()
        check_echo(server)
        if peer.key.startswith("peregrine"):
            env = " ".join(f"{k}={v}" for k, v in peer.env.items()) or "(no env)"
            print(f"  peregrine_rt from {peregrine_origin(server.proc.pid)}; {env}", flush=True)
        for conns in CONNECTIONS:
            try:
                r = run_load(server, conns, args.warmup, args.duration, logdir)
            except BenchError as exc:
                res.errors.append(f"c{conns}: {exc}")
                server.check_alive()
                continue
            res.load[conns] = r
            print(
                f"  c={conns:<5} {r.rate:>9.0f} msg/s  p50 {r.p50_ms:6.2f} ms  "
                f"p99 {r.p99_ms:6.2f} ms  client {r.client_cpu:3.0f}% CPU  "
                f"server {r.server_cpu:3.0f}%  cpu{SERVER_CPU}/{CLIENT_CPU} busy "
                f"{r.busy[0]:.0f}/{r.busy[1]:.0f}%",
                flush=True,
            )
            for note in r.notes:
                print(f"    {note}", flush=True)
    except BenchError as exc:
        res.errors.append(str(exc))
    finally:
        note = server.stop()
        if note:
            res.notes.append(note)
    for n in idle:
        server = WsServer(peer, logdir, f"idle{n}-{args.round}")
        try:
            server.wait_ready()
            check_echo(server)
            time.sleep(args.settle)
            per, account = run_idle(server, n, args.settle, logdir)
            res.idle[n] = per
            print(f"  idle {n:<6} {per:6.1f} KiB/connection  ({account})", flush=True)
        except BenchError as exc:
            res.errors.append(f"idle {n}: {exc}")
        finally:
            note = server.stop()
            if note:
                res.notes.append(note)
    for err in res.errors:
        print(f"  FAILED: {err}", flush=True)
    for note in res.notes:
        print(f"  note: {note}", flush=True)
    return res


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def print_table(results: dict[str, PeerResult], idle: list[int]) -> None:
    print()
    head = f"{'server':<26}"
    for c in CONNECTIONS:
        head += f"{f'c{c} msg/s':>12}{'p50/p99 ms':>14}{'client':>8}"
    for n in idle:
        head += f"{f'KiB/idle@{n}':>15}"
    print(head)
    for res in results.values():
        row = f"{res.peer.label:<26}"
        for c in CONNECTIONS:
            r = res.load.get(c)
            if r is None:
                row += f"{'failed':>12}{'':>14}{'':>8}"
            else:
                lat = f"{r.p50_ms:.2f}/{r.p99_ms:.2f}"
                row += f"{r.rate:>12.0f}{lat:>14}{f'{r.client_cpu:.0f}%':>8}"
        for n in idle:
            v = res.idle.get(n)
            row += f"{v:>15.1f}" if v is not None else f"{'failed':>15}"
        print(row)

    bases = [
        k
        for k in ("websockets_asyncio", "aiohttp", "websockets_trio", "peregrine_before")
        if k in results
    ]
    if not bases:
        return
    print()
    head = f"{'ratios (msg/s; RSS)':<26}"
    for base in bases:
        for c in CONNECTIONS:
            head += f"{f'c{c}/{base}':>{len(base) + 8}}"
        head += f"{f'RSS/{base}':>{len(base) + 8}}"
    print(head)
    big = max(idle) if idle else None
    for res in results.values():
        row = f"{res.peer.label:<26}"
        for base in bases:
            b = results[base]
            for c in CONNECTIONS:
                mine = res.load.get(c)
                theirs = b.load.get(c)
                cell = _ratio(mine and mine.rate, theirs and theirs.rate)
                row += f"{cell:>{len(base) + 8}}"
            cell = _ratio(res.idle.get(big), b.idle.get(big)) if big else "n/a"
            row += f"{cell:>{len(base) + 8}}"
        print(row)


def final_line(results: dict[str, PeerResult], idle: list[int]) -> str:
    me = results.get("peregrine")

    def rate(res: PeerResult | None, c: int) -> float | None:
        r = res.load.get(c) if res else None
        return r.rate if r else None

    def ratios(key: str) -> str:
        other = results.get(key)
        if me is None or other is None:
            return "n/a"
        return "/".join(_ratio(rate(me, c), rate(other, c)) for c in CONNECTIONS)

    rates = " ".join(f"c{c}={rate(me, c):.0f}" if rate(me, c) else f"c{c}=n/a" for c in CONNECTIONS)
    rss = "n/a"
    if me:
        for n in sorted(idle, reverse=True):
            if n in me.idle:
                rss = f"{me.idle[n]:.1f}"
                break
    return (
        f"peregrine_ws {rates} vs_websockets_trio={ratios('websockets_trio')} "
        f"vs_websockets_asyncio={ratios('websockets_asyncio')} rss_per_idle_kib={rss}"
        + (f" vs_before={ratios('peregrine_before')}" if "peregrine_before" in results else "")
    )


def merge_rounds(runs: list[PeerResult]) -> PeerResult:
    """One result from several rounds of a peer: the median round per point."""
    out = PeerResult(runs[0].peer)
    for c in CONNECTIONS:
        got = sorted((r.load[c] for r in runs if c in r.load), key=lambda x: x.rate)
        if got:
            out.load[c] = got[(len(got) - 1) // 2]
    for n in {n for r in runs for n in r.idle}:
        out.idle[n] = median([r.idle[n] for r in runs if n in r.idle])
    for r in runs:
        out.errors.extend(r.errors)
        out.notes.extend(r.notes)
    return out


def print_rounds(rounds: dict[str, list[PeerResult]]) -> None:
    """Every round's msg/s per server, and after/before per round when both ran."""
    print()
    print("rounds (msg/s):")
    for runs in rounds.values():
        for c in CONNECTIONS:
            rates = [r.load[c].rate for r in runs if c in r.load]
            cells = " ".join(f"{x:>8.0f}" for x in rates)
            med = f"median {median(rates):.0f}" if rates else "failed"
            print(f"  {runs[0].peer.label:<28} c={c:<5} {cells}   {med}")
    print("server CPU per message (us; its CPU time over the window / echoes: steadier than")
    print("msg/s when other processes share the machine):")
    for runs in rounds.values():
        for c in CONNECTIONS:
            us = [r.load[c].server_cpu * 1e4 / r.load[c].rate for r in runs if c in r.load]
            cells = " ".join(f"{x:>8.1f}" for x in us)
            print(f"  {runs[0].peer.label:<28} c={c:<5} {cells}   median {median(us):.1f}")
    for key in [k for k in rounds if k + "_before" in rounds]:
        for c in CONNECTIONS:
            cpu = [
                median(
                    [r.load[c].server_cpu * 1e4 / r.load[c].rate for r in rounds[k] if c in r.load]
                )
                for k in (key, key + "_before")
            ]
            print(
                f"  {key} CPU per message after/before c={c:<5} {cpu[0] / cpu[1]:.3f} "
                f"(medians {cpu[0]:.1f} / {cpu[1]:.1f} us)"
            )
        for c in CONNECTIONS:
            per = [
                a.load[c].rate / b.load[c].rate
                for a, b in zip(rounds[key], rounds[key + "_before"], strict=True)
                if c in a.load and c in b.load
            ]
            if per:
                print(
                    f"  {key} after/before c={c:<5} "
                    + " ".join(f"{x:.3f}" for x in per)
                    + f"   median {median(per):.3f}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each run")
    ap.add_argument("--settle", type=float, default=3.0, help="pause before reading RSS")
    ap.add_argument(
        "--quick", action="store_true", help="3 s runs, 1 s warm-up, 1000 idle connections only"
    )
    ap.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated subset of {','.join(PEERS)} (default {','.join(DEFAULT_SERVERS)})",
    )
    ap.add_argument("--before", type=Path, metavar="DIR", help=BEFORE_HELP)
    ap.add_argument("--rounds", type=int, default=1, help=ROUNDS_HELP)
    ap.add_argument(
        "--idle",
        default=None,
        help="comma-separated idle connection counts (default 1000,10000; "
        "1000 with --quick; empty for none)",
    )
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.duration, args.warmup, args.settle = 3.0, 1.0, 2.0
    if args.idle is None:
        args.idle = "1000" if args.quick else ",".join(str(n) for n in IDLE)
    idle = [int(n) for n in args.idle.split(",") if n.strip()]
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PEERS]
    if unknown:
        ap.error(f"unknown servers {unknown}; choose from {','.join(PEERS)}")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    try:
        tree = check_tree(args.before) if args.before else None
    except BenchError as exc:
        ap.error(str(exc))
    if shutil.which("taskset") is None:
        sys.exit("taskset not found: apt-get install -y util-linux")
    if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
        sys.exit("needs two CPUs: the server on CPU 0, the load generator on CPU 1")
    if not _has_module("picows") or not _has_module("uvloop"):
        sys.exit(
            "the load generator needs picows and uvloop: pip install -r bench/requirements-ws.txt"
        )

    print(
        f"# {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}  "
        f"{platform.python_implementation()} {platform.python_version()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {_loadavg()}"
    )
    print("# " + ", ".join(f"{d} {_version(d)}" for d in DISTRIBUTIONS))
    print(
        f"# server on CPU {SERVER_CPU}, load generator (picows on uvloop, 1 process) on "
        f"CPU {CLIENT_CPU}; {MESSAGE_SIZE}-byte text messages, ping-pong per connection; "
        f"{args.warmup:g} s warm-up + {args.duration:g} s per run; compression off"
    )
    big = [n for n in idle if n > 1000]
    if big:
        ok, note = raise_fd_limit(max(big) + FD_MARGIN)
        print(f"# idle: {note}")
        if not ok:
            idle = [
                n for n in idle if n + FD_MARGIN <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            ]
            print(f"# idle: skipping {', '.join(str(n) for n in big if n not in idle)} connections")
    else:
        raise_fd_limit(max(idle, default=0) + FD_MARGIN)

    selected: list[Peer] = []
    for key in keys:
        peer = PEERS[key]
        missing = [m for m in peer.modules if not _has_module(m)]
        if missing:
            print(f"# {key}: skipped, {', '.join(missing)} not importable")
            if key == "websockets_trio":
                print(
                    f"#   (websockets {_version('websockets')} has no trio implementation; "
                    "websockets 17.4 has one)"
                )
            continue
        selected.append(peer)
    selected = with_before(selected, tree)
    if tree is not None:
        print(f"# before: PYTHONPATH={tree} for the *_before servers")
    if args.rounds > 1:
        print(f"# {args.rounds} rounds, interleaved; the tables hold the median round per point")

    rounds: dict[str, list[PeerResult]] = {p.key: [] for p in selected}
    with tempfile.TemporaryDirectory(prefix="peregrine-ws-bench-") as tmp:
        logdir = Path(tmp)
        for i in range(args.rounds):
            args.round = i
            for peer in selected:
                tag = f" round {i + 1}/{args.rounds}" if args.rounds > 1 else ""
                print(f"{peer.label}{tag}  (load {_loadavg()})", flush=True)
                rounds[peer.key].append(bench_peer(peer, args, idle, logdir))
    results = {key: merge_rounds(runs) for key, runs in rounds.items()}
    if args.rounds > 1:
        print_rounds(rounds)
    print_table(results, idle)
    print(f"# load average at the end: {_loadavg()}")
    print(final_line(results, idle))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
