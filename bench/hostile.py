"""Hostile input against a server process: memory per fragmented message or chunked body, deep JSON.

Run: ``.venv/bin/python bench/hostile.py [--before DIR] [--tree DIR] [--only NAME,...]``

Issue 21, item 9: the memory figures of items 1-3, per tree.  Each test gets
a fresh server process (``bench/servers/hostile_peregrine.py``, run by its
path, pinned to CPU 0); this script is the client (plain sockets, loopback).
The server first serves one WebSocket message and one request body (lazy
imports done), rests, and its ``VmRSS`` is read from ``/proc/PID/status``; its
peak (``VmHWM``) is reset then (``echo 5 > /proc/PID/clear_refs``; if that is
refused, the peak since start is used and said so) and read again after the
test: **peak growth** = ``VmHWM`` after - ``VmRSS`` before.  A thread also
samples ``VmRSS`` every 5 ms as a cross-check.

Tests (``--only`` picks some):

* ``fragments``: one 4 MiB text message sent as 2-byte fragments (2,097,152
  frames, 16 MiB on the wire) to a socket whose limit is raised to 64 MiB;
  the server answers with the length it got.  Peak growth / message size,
  and the time from the first byte to the answer.
* ``empty``: a text message opened with an empty frame, then up to 2.5
  million empty continuation frames (6 bytes each with the mask) at the
  default limit, sent in pieces while watching for the server's close: how
  many frames had been sent when it closed (an upper bound: some were still
  in kernel buffers), the close code, the peak growth, the time.
* ``chunked``: a 1,000,000-byte body in 2-byte chunks (500,000 chunks) to a
  handler doing ``await request.body()``; peak growth / body size.  The same
  body in one chunk is the reference (``chunked1``).
* ``json``: JSON nested 100,000 deep (``[[[...]]]``, 200,000 bytes) as a
  message to a ``JSONMixin`` socket (the close code), and as the body of a
  ``POST`` to ``await request.json()`` (the status); and the lines the server
  logged for each.

Trees: the ``peregrine_rt`` this Python imports (``after``), or ``--tree DIR``;
``--before DIR`` also runs every test against another tree (``PYTHONPATH=DIR``
for its server only).  The stall figures of issue 21 (heartbeats and
broadcasts with 20,000 sockets) come from ``bench/scale.py``.

Every test is bounded in time; every server is stopped by its PID (SIGTERM,
then SIGKILL) in a ``finally`` block, and gets SIGKILL if this script dies.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _procs import (
    HOST,
    ROOT,
    SERVER_CPU,
    BenchError,
    check_tree,
    free_port,
    peregrine_origin,
    spawn,
    stop_process,
)

SERVER = ROOT / "bench" / "servers" / "hostile_peregrine.py"
MIB = 1 << 20
MESSAGE = 4 * MIB
EMPTY_FRAMES = 2_500_000
BODY = 1_000_000
DEPTH = 100_000
TIMEOUT = 120.0  # seconds for one test
SETTLE = 0.5

MASK0 = b"\x00\x00\x00\x00"  # a zero mask key: valid, and the payload stays as it is


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])  # KiB
    return out


class Server:
    """A fresh hostile_peregrine.py process pinned to SERVER_CPU, its memory readable."""

    def __init__(self, tree: Path | None, logdir: Path, tag: str) -> None:
        self.port = free_port()
        self.env = {"PYTHONPATH": str(tree)} if tree else {}
        self.log_path = logdir / f"server-{tag}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        argv = ["taskset", "-c", str(SERVER_CPU), sys.executable, str(SERVER)]
        self.proc = spawn(
            [*argv, "--host", HOST, "--port", str(self.port)], self._log, env=self.env
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("server not accepting connections after 30 s") from None
                time.sleep(0.05)
        self.peak_reset = False
        self._samples: list[int] = []
        self._sampling = False
        self._thread: threading.Thread | None = None

    def warm_up(self) -> None:
        sock, buf = ws_connect(self.port, "/ws")
        with sock:
            sock.sendall(frame(0x1, b"hello"))
            if read_frame(sock, buf, 10) != (0x1, b"5"):
                raise BenchError("warm-up: no echo of the length")
        status, _ = http_request(self.port, "POST", "/body", b"content-length: 5\r\n", b"hello")
        if status != 200:
            raise BenchError(f"warm-up: POST /body answered {status}")
        time.sleep(SETTLE)

    def log_lines(self) -> int:
        self._log.flush()
        return len(self.log_path.read_text(errors="replace").splitlines())

    def begin(self) -> int:
        """RSS now (KiB); reset the peak; start sampling."""
        rss = _status(self.proc.pid)["VmRSS"]
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            self.peak_reset = True
        except OSError:
            self.peak_reset = False
        self._samples = [rss]
        self._sampling = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return rss

    def _sample(self) -> None:
        while self._sampling:
            try:
                self._samples.append(_status(self.proc.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.005)

    def end(self) -> tuple[int, int, int]:
        """(VmHWM, highest sampled VmRSS, VmRSS now) in KiB."""
        self._sampling = False
        if self._thread is not None:
            self._thread.join()
        st = _status(self.proc.pid)
        return st["VmHWM"], max(self._samples), st["VmRSS"]

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout=10)
        self._log.close()


# --- the wire -----------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (zero mask key)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + MASK0 + payload


def _recv(sock: socket.socket, buf: bytearray, n: int, deadline: float) -> bytes:
    while len(buf) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        buf += chunk
    data = bytes(buf[:n])
    del buf[:n]
    return data


def read_frame(sock: socket.socket, buf: bytearray, timeout: float) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    b0, b1 = _recv(sock, buf, 2, deadline)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _recv(sock, buf, 2, deadline))
    elif n == 127:
        (n,) = struct.unpack("!Q", _recv(sock, buf, 8, deadline))
    return b0 & 0x0F, _recv(sock, buf, n, deadline)


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def ws_connect(port: int, path: str) -> tuple[socket.socket, bytearray]:
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"closed during the handshake: {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    if not buf.startswith(b"HTTP/1.1 101"):
        raise BenchError(f"handshake refused: {bytes(buf[:end])!r}")
    del buf[: end + 4]
    return sock, buf


def http_request(
    port: int, method: str, path: str, headers: bytes, body: bytes, timeout: float = TIMEOUT
) -> tuple[int, bytes]:
    """One request on a fresh connection (body sent as given): (status, response body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n".encode()
            + headers
            + b"connection: close\r\n\r\n"
        )
        sock.sendall(body)
        data = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


# --- the tests -------------------------------------------------------------------------------


@dataclass
class Outcome:
    test: str
    tree: str
    figures: dict[str, object] = field(default_factory=dict)
    text: str = ""


def _growth(server: Server, before: int) -> tuple[float, str]:
    hwm, sampled, now = server.end()
    peak = hwm if server.peak_reset else max(sampled, hwm)
    growth = (peak - before) / 1024
    how = "VmHWM" if server.peak_reset else "VmHWM since start (clear_refs refused)"
    return growth, (
        f"RSS {before / 1024:.1f} MiB before, peak +{growth:.1f} MiB ({how}; sampled VmRSS "
        f"max +{(sampled - before) / 1024:.1f}), +{(now - before) / 1024:.1f} MiB after"
    )


def test_fragments(server: Server) -> dict[str, object]:
    n = MESSAGE // 2
    wire = frame(0x1, b"aa", fin=False) + frame(0x0, b"aa", fin=False) * (n - 2)
    wire += frame(0x0, b"aa", fin=True)
    sock, buf = ws_connect(server.port, "/ws64")
    with sock:
        before = server.begin()
        t0 = time.monotonic()
        sock.settimeout(TIMEOUT)
        sock.sendall(wire)
        del wire
        try:
            opcode, payload = read_frame(sock, buf, TIMEOUT)
        except (OSError, TimeoutError) as exc:
            opcode, payload = -1, repr(exc).encode()
        seconds = time.monotonic() - t0
    growth, account = _growth(server, before)
    if opcode == 0x1:
        got = f"answered length {payload.decode()}"
    elif opcode == 0x8:
        got = f"closed with {close_code(payload)}"
    else:
        got = f"no answer: {payload.decode(errors='replace')}"
    return {
        "growth_mib": round(growth, 1),
        "x_message": round(growth * MIB / MESSAGE, 2),
        "seconds": round(seconds, 1),
        "text": f"{n:,} fragments of 2 bytes: {got} in {seconds:.1f} s; {account}; "
        f"{growth * MIB / MESSAGE:.2f}x the message",
    }


def test_empty(server: Server) -> dict[str, object]:
    per = 10_000
    piece = frame(0x0, b"", fin=False) * per
    sock, buf = ws_connect(server.port, "/ws")
    sent = 0
    code: int | None = None
    ended = "still open"
    with sock:
        before = server.begin()
        t0 = time.monotonic()
        sock.sendall(frame(0x1, b"", fin=False))
        sock.setblocking(False)
        view = memoryview(piece)
        offset = 0
        deadline = t0 + TIMEOUT
        closing = False
        while time.monotonic() < deadline:
            more = sent < EMPTY_FRAMES
            readable, writable, _ = select.select(
                [sock], [sock] if more else [], [], 1.0 if more else 5.0
            )
            if readable:
                closing = True
                break
            if not more:
                break  # all sent, and no close within 5 s
            if writable:
                try:
                    k = sock.send(view[offset:])
                except (BrokenPipeError, ConnectionResetError):
                    closing = True
                    break
                offset += k
                if offset == len(piece):
                    offset = 0
                    sent += per
        if closing:
            sock.setblocking(True)
            try:
                opcode, payload = read_frame(sock, buf, 5.0)
                code = close_code(payload) if opcode == 0x8 else None
                ended = f"closed with {code}" if opcode == 0x8 else f"sent opcode {opcode}"
            except (OSError, TimeoutError) as exc:
                ended = f"connection ended without a close frame ({type(exc).__name__})"
        frames = sent + offset // 6
        seconds = time.monotonic() - t0
    growth, account = _growth(server, before)
    return {
        "frames": frames,
        "code": code,
        "growth_mib": round(growth, 1),
        "seconds": round(seconds, 1),
        "text": f"{ended} after {frames:,} empty frames sent ({frames * 6 / MIB:.1f} MiB) "
        f"in {seconds:.1f} s; {account}",
    }


def _chunked(server: Server, chunk: int) -> dict[str, object]:
    data = b"ab" * (BODY // 2)
    if chunk >= BODY:
        body = f"{BODY:x}\r\n".encode() + data + b"\r\n0\r\n\r\n"
    else:
        one = f"{chunk:x}\r\n".encode() + b"a" * chunk + b"\r\n"
        body = one * (BODY // chunk) + b"0\r\n\r\n"
    before = server.begin()
    t0 = time.monotonic()
    status, answer = http_request(
        server.port, "POST", "/body", b"transfer-encoding: chunked\r\n", body
    )
    seconds = time.monotonic() - t0
    growth, account = _growth(server, before)
    return {
        "status": status,
        "growth_mib": round(growth, 1),
        "x_body": round(growth * MIB / BODY, 2),
        "seconds": round(seconds, 2),
        "text": f"{BODY:,} bytes in {BODY // min(chunk, BODY):,} chunk(s): {status} "
        f"{answer[:60].decode(errors='replace')} in {seconds:.2f} s; {account}; "
        f"{growth * MIB / BODY:.2f}x the body",
    }


def test_chunked(server: Server) -> dict[str, object]:
    return _chunked(server, 2)


def test_chunked1(server: Server) -> dict[str, object]:
    return _chunked(server, BODY)


def test_json(server: Server) -> dict[str, object]:
    deep = ("[" * DEPTH + "]" * DEPTH).encode()
    lines0 = server.log_lines()
    sock, buf = ws_connect(server.port, "/wsjson")
    with sock:
        sock.sendall(frame(0x1, deep))
        try:
            opcode, payload = read_frame(sock, buf, 30)
            ws = (
                f"closed with {close_code(payload)}"
                if opcode == 0x8
                else f"opcode {opcode} {payload[:40]!r}"
            )
            code = close_code(payload) if opcode == 0x8 else None
        except (OSError, TimeoutError) as exc:
            ws, code = f"no close frame ({type(exc).__name__})", None
    time.sleep(0.5)
    lines1 = server.log_lines()
    status, answer = http_request(
        server.port, "POST", "/json", f"content-length: {len(deep)}\r\n".encode(), deep, 30
    )
    time.sleep(0.5)
    lines2 = server.log_lines()
    return {
        "ws_code": code,
        "ws_log_lines": lines1 - lines0,
        "http_status": status,
        "http_log_lines": lines2 - lines1,
        "text": f"WebSocket (JSONMixin): {ws}, {lines1 - lines0} log lines; "
        f"request.json(): {status} {answer[:60].decode(errors='replace')!r}, "
        f"{lines2 - lines1} log lines",
    }


TESTS: dict[str, Callable[[Server], dict[str, object]]] = {
    "fragments": test_fragments,
    "empty": test_empty,
    "chunked": test_chunked,
    "chunked1": test_chunked1,
    "json": test_json,
}


def run(name: str, tree_name: str, tree: Path | None, logdir: Path) -> Outcome:
    out = Outcome(name, tree_name)
    server = Server(tree, logdir, f"{name}-{tree_name}")
    try:
        server.warm_up()
        figures = TESTS[name](server)
        out.text = str(figures.pop("text"))
        out.figures = figures
        out.figures["origin"] = peregrine_origin(server.proc.pid)
    except BenchError as exc:
        out.text = f"FAILED: {exc}"
    finally:
        server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, help="measure this tree instead of the installed one")
    ap.add_argument("--before", type=Path, metavar="DIR", help="also measure this tree")
    ap.add_argument("--only", default=",".join(TESTS), help=f"subset of {','.join(TESTS)}")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in TESTS]
    if unknown:
        ap.error(f"unknown tests {unknown}; choose from {','.join(TESTS)}")
    trees: list[tuple[str, Path | None]] = []
    try:
        trees.append(("after", check_tree(args.tree) if args.tree else None))
        if args.before:
            trees.append(("before", check_tree(args.before)))
    except BenchError as exc:
        ap.error(str(exc))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(
        f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%S} UTC  "
        f"{platform.python_implementation()} {platform.python_version()}, load average {load}; "
        f"a fresh server per test, pinned to CPU {SERVER_CPU}; loopback"
    )
    results: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="peregrine-hostile-bench-") as tmp:
        for name in names:
            for tree_name, tree in trees:
                out = run(name, tree_name, tree, Path(tmp))
                origin = out.figures.get("origin", "?")
                print(
                    f"{name:<10} {tree_name:<7} {out.text}  [peregrine_rt from {origin}]",
                    flush=True,
                )
                results.append(out)
    print()
    for out in results:
        figures = {k: v for k, v in out.figures.items() if k != "origin"}
        print(
            f"hostile test={out.test} tree={out.tree} {json.dumps(figures, separators=(',', ':'))}"
        )


if __name__ == "__main__":
    try:
        main()
    except subprocess.SubprocessError as exc:
        sys.exit(f"bench/hostile.py: {exc}")
