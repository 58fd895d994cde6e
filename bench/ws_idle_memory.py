"""Where an idle WebSocket's bytes go: tracemalloc and an object walk, per connection.

Run: ``.venv/bin/python bench/ws_idle_memory.py [--n 1000] [--top 25] [--settle 2]``
(``--n 10000`` needs a file-descriptor limit above 10,000 for this process and
for the server's: raised here within the hard limit, which the server inherits).

Issue 18 item 3 asks for at most 8 KiB of RSS per idle WebSocket; ``bench/ws.py``
measures ~13 KiB.  This script says what the bytes are.  It starts
``bench.servers.ws_peregrine:Echo`` (a ``pr.Server`` with the defaults, bar
``max_connections``, on 127.0.0.1, port 0) twice, each in a subprocess of this
script (``--serve``), and drives it from here with blocking sockets: 20
warm-up sockets that echo one message and close (so that lazy imports and
first-use caches are done), then N sockets that do the opening handshake (a
minimal request, the ``101`` read) and stay silent.

1. **plain**: the server as ``bench/ws.py`` runs it, nothing else in the
   process; ``VmRSS`` (``/proc/self/status``) before and after the N sockets
   gives the RSS per idle connection, and ``sys._debugmallocstats()`` the state
   of pymalloc's arenas (what the RSS holds besides live blocks).
2. **traced**: the same with ``tracemalloc`` on (``--nframes`` frames per
   trace) from the start.  Snapshots before and after the N sockets (each
   after ``gc.collect()``) are diffed, and the bytes per connection are shown

   * by allocation site (the innermost ``file:line``, top ``--top``);
   * by the first frame in ``peregrine_rt/`` on the allocation's stack (which
     of our lines caused it, wherever the allocation itself happened);
   * by owner: from two idle connections, a walk of ``gc.get_referents`` from
     the objects one connection holds (its socket, trio's epoll registration,
     the transport, wsproto's connection, the receiver, the outbox, the
     ``WebSocket``, the upgrade ``Request`` and ``Response``, the HTTP parser,
     the ``HTTPConnection``, its cancel scope, each coroutine of the suspended
     task's call chain, the trio ``Task`` and its context), each object going
     to the first owner that reaches it; the walk stops at objects that
     existed before the N sockets opened, and only what the second
     connection does not also reach counts (shared constants, interned
     strings).  Sizes are ``sys.getsizeof`` rounded up to pymalloc's 16-byte
     classes, plus an estimate of a managed ``__dict__``'s values array
     (CPython 3.11 allocates it apart from the object, and ``getsizeof`` does
     not count it);
   * the shared tables that grow by one entry per connection (the server's
     sets, trio's task set, the nursery's children, epoll's registrations).

   tracemalloc's own memory grows with every traced block, so the traced
   run's RSS is higher than the plain run's; the plain run's is the figure.
   With 10,000 sockets the traced server is slow (the GC policy's
   collections walk traced objects): some sockets may have had their first
   heartbeat ping (``Config.ws_ping_interval``, after 10-30 s of silence)
   before the snapshot, which shows as a few hundred bytes from
   ``_outbox.py`` and a ``float`` more on the ``WebSocket``.

The gap between the RSS per connection and tracemalloc's bytes per connection
is memory no trace shows: pymalloc's partly used pools and arenas, glibc's
headers and free chunks, and per-object headers tracemalloc does not see.  A
socket's kernel side (its buffers, the epoll entry) is kernel memory, not RSS.

This is a diagnostic: it reads the server's and trio's private attributes
(``ws._conn``, ``runner.io_manager._registered``...) to find the objects, and
is expected to need an edit when those move.

Loopback only; every phase is bounded in time; each server subprocess is
stopped by its PID (``quit`` on its stdin, then SIGTERM, then SIGKILL) in a
``finally`` block.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from _procs import LineReader

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WARMUP = 20  # sockets that echo one message and close before the baseline
FD_MARGIN = 200
READY_TIMEOUT = 30.0  # seconds for the server to say its port
OPEN_TIMEOUT = 180.0  # seconds to open all the idle sockets
REPORT_TIMEOUT = 300.0  # seconds for the server to measure and analyse
STOP_TIMEOUT = 10.0
BATCH = 250  # sockets connected (and their handshakes sent) before their 101s are read
MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT (CPython 3.11+)
PYMALLOC_MAX = 512  # larger requests go to the C library's malloc


# --- the client side (this process) ---------------------------------------------


def _handshake(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n\r\n"
    ).encode()


def _read_101(sock: socket.socket) -> bytes:
    """Read the handshake response; what came after it is returned."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"closed during the handshake: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {head!r}")
    return rest


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data


def warm_up(port: int, count: int) -> None:
    """``count`` sockets that each echo one text message, then close (1000)."""
    message = b"x" * 32
    for _ in range(count):
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(_handshake(port))
            buf = _read_101(sock)
            sock.sendall(_masked(0x1, message))
            while len(buf) < 2 + len(message):
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("closed before the echo")
                buf += chunk
            if buf[:2] != bytes([0x81, len(message)]) or buf[2 : 2 + len(message)] != message:
                raise RuntimeError(f"bad echo {buf[:40]!r}")
            sock.sendall(_masked(0x8, struct.pack("!H", 1000)))
            with contextlib.suppress(OSError):
                sock.recv(4096)  # the close answer


def open_idle(port: int, n: int, socks: list[socket.socket]) -> None:
    """Open ``n`` WebSockets (handshake only) into ``socks``, BATCH at a time."""
    deadline = time.monotonic() + OPEN_TIMEOUT
    while len(socks) < n:
        batch = []
        for _ in range(min(BATCH, n - len(socks))):
            sock = socket.create_connection((HOST, port), timeout=30)
            socks.append(sock)
            batch.append(sock)
            sock.sendall(_handshake(port))
        for sock in batch:
            if _read_101(sock):
                raise RuntimeError("the server sent a frame to an idle socket")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(socks)} of {n} sockets open after {OPEN_TIMEOUT:g} s")


class ServerProcess:
    """``--serve`` in a subprocess, spoken to by lines on stdin/stdout."""

    def __init__(self, args: argparse.Namespace, traced: bool) -> None:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            "--n",
            str(args.n),
            "--top",
            str(args.top),
            "--settle",
            str(args.settle),
            "--nframes",
            str(args.nframes),
        ]
        if traced:
            argv.append("--trace")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        self._lines = LineReader(self.proc, "server")

    def line(self, timeout: float) -> str:
        return self._lines.line(timeout)

    def say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """``quit``, then SIGTERM, then SIGKILL, by PID; safe to call twice."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                self.say("quit")
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def measure(args: argparse.Namespace, traced: bool) -> dict[str, Any]:
    server = ServerProcess(args, traced)
    socks: list[socket.socket] = []
    try:
        word, port = server.line(READY_TIMEOUT).split()
        assert word == "port"
        warm_up(int(port), WARMUP)
        server.say("base")
        if server.line(READY_TIMEOUT + args.settle) != "ok":
            raise RuntimeError("no baseline")
        began = time.monotonic()
        open_idle(int(port), args.n, socks)
        opened = time.monotonic() - began
        server.say("measure")
        report: dict[str, Any] = json.loads(server.line(REPORT_TIMEOUT))
        report["open_seconds"] = opened
        return report
    finally:
        server.stop()
        for sock in socks:
            sock.close()


# --- the server side (--serve) ---------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _mallocstats() -> dict[str, int]:
    """A few totals of ``sys._debugmallocstats()`` (pymalloc's arenas), which writes to fd 2."""
    with tempfile.TemporaryFile(mode="w+b") as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    wanted = {
        "arenas": "# arenas allocated current",
        "allocated_blocks": "# bytes in allocated blocks",
        "available_blocks": "# bytes in available blocks",
        "unused_pools": "unused pools * 16384",  # 3.11: pools of 16 KiB
        "pool_headers": "# bytes lost to pool headers",
        "quantization": "# bytes lost to quantization",
        "arena_alignment": "# bytes lost to arena alignment",
        "total": "Total",
    }
    stats: dict[str, int] = {}
    for line in text.splitlines():
        for key, label in wanted.items():
            if key in stats:  # the first "Total" is pymalloc's, the second the arena map's
                continue
            if line.startswith(label) or (key == "unused_pools" and "unused pools" in line):
                m = re.search(r"=\s*([\d,]+)\s*$", line)
                if m:
                    stats[key] = int(m.group(1).replace(",", ""))
    return stats


def _round16(size: int) -> int:
    return size if size > PYMALLOC_MAX else (size + 15) & ~15


def _size(obj: object) -> int:
    """Bytes of ``obj``: getsizeof in pymalloc classes, plus a managed dict's values (≈)."""
    size = _round16(sys.getsizeof(obj))
    if type(obj).__flags__ & MANAGED_DICT:
        refs = [r for r in gc.get_referents(obj) if not isinstance(r, type)]
        if not any(isinstance(r, dict) for r in refs):  # its values are inline, not a dict
            size += _round16(24 + 8 * len(refs))
    return size


def _type_name(obj: object) -> str:
    t = type(obj)
    if t.__name__ in ("coroutine", "generator"):
        return f"{t.__name__} {getattr(obj, '__qualname__', '?')}"
    mod = t.__module__
    return t.__name__ if mod == "builtins" else f"{mod.rsplit('.', 1)[-1]}.{t.__name__}"


def _await_chain(coro: Any) -> list[Any]:
    """The suspended call chain of a task: its coroutine, what that awaits, and so on."""
    chain: list[Any] = []
    while coro is not None and len(chain) < 64:
        chain.append(coro)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def _components(ws: Any, runner: Any) -> list[tuple[str, Any]]:
    """One idle connection's objects, as (owner, root): the most specific first."""
    conn = ws._conn
    transport = conn.transport
    outbox = ws._outbox
    task = ws._reader
    sock = transport.sock
    comps: list[tuple[str, Any]] = [
        ("socket.socket (Python side)", sock),
        (
            "trio EpollWaiters (epoll registration)",
            runner.io_manager._registered.get(sock.fileno()),
        ),
        ("SocketTransport", transport),
        ("wsproto Connection (LazyConnection; + FrameProtocol, decoders when held)", ws._ws),
        ("Receiver (+ FrameTracker, pending list)", ws._receiver),
        ("Receiver.backlog deque (shared and empty while idle)", ws._receiver.backlog),
        ("Outbox._items deque", outbox._items),
        ("Outbox._keyed dict", outbox._keyed),
        ("Outbox", outbox),
        ("WebSocket.state dict", ws.state),
        ("WebSocket._pong_waiters dict", ws._pong_waiters),
        ("WebSocket", ws),
        ("Request (the upgrade request, + headers)", ws.request),
        ("Response (the 101, + headers)", conn.response),
        ("RequestParser", conn.parser),
        ("HTTPConnection", conn),
        ("CancelScope (+ CancelStatus)", conn.scope),
    ]
    for coro in _await_chain(task.coro):
        name = getattr(coro, "__qualname__", type(coro).__name__)
        comps.append((f"{type(coro).__name__} {name}", coro))
    comps.append(("trio Task", task))
    comps.append(("Task's contextvars.Context", task.context))
    return [(label, obj) for label, obj in comps if obj is not None]


def _walk(comps: list[tuple[str, Any]], stop: set[int]) -> list[tuple[str, list[Any]]]:
    """Every object reachable from each root, in order, each claimed by its first owner."""
    roots = {id(obj) for _, obj in comps}
    claimed: set[int] = set()
    out = []
    for label, root in comps:
        objs = []
        todo = [root]
        while todo:
            obj = todo.pop()
            key = id(obj)
            if key in claimed or key in stop or (key in roots and obj is not root):
                continue
            if isinstance(obj, (type, type(sys))):
                continue
            claimed.add(key)
            objs.append(obj)
            if len(claimed) > 20_000:
                raise RuntimeError(f"the walk from {label} escaped into shared objects")
            todo.extend(gc.get_referents(obj))
        out.append((label, objs))
    return out


def owner_breakdown(server: Any, base_ids: set[int], runner: Any) -> dict[str, Any]:
    """Objects exclusive to one idle connection, grouped by owner and by type."""
    sockets = [ws for ws in server.websockets if ws._reader is not None]
    ws_a, ws_b = sockets[len(sockets) // 2], sockets[len(sockets) // 2 + 1]
    # The server's poller is shared: a waiting connection's coroutine refers to it.
    poller = server.poller
    parts = ("_waiting", "_registered", "_ready", "_ended")
    shared = {id(poller)} | {id(getattr(poller, p)) for p in parts if poller is not None}
    stop = base_ids | shared
    reach_a = _walk(_components(ws_a, runner), stop)
    reach_b: set[int] = set()
    for _, objs in _walk(_components(ws_b, runner), stop):
        reach_b.update(id(o) for o in objs)
    owners = []
    types: Counter[str] = Counter()
    type_counts: Counter[str] = Counter()
    gc_tracked = 0
    for label, objs in reach_a:
        own = [o for o in objs if id(o) not in reach_b]
        size = sum(_size(o) for o in own)
        kinds: Counter[str] = Counter()
        for o in own:
            name = _type_name(o)
            kinds[name] += _size(o)
            types[name] += _size(o)
            type_counts[name] += 1
            gc_tracked += gc.is_tracked(o)
        detail = ", ".join(f"{k} {v}" for k, v in kinds.most_common(6))
        owners.append({"owner": label, "objects": len(own), "bytes": size, "detail": detail})
    return {
        "owners": owners,
        "types": [
            {"type": t, "objects": type_counts[t], "bytes": b} for t, b in types.most_common(30)
        ],
        "gc_tracked": gc_tracked,
    }


def _shared_tables(server: Any, runner: Any, nursery: Any) -> dict[str, int]:
    """getsizeof of the tables that gain an entry per connection."""
    tables = {
        "Server.connections (set)": server.connections,
        "Server.websockets (set)": server.websockets,
        "trio Runner.tasks (set)": runner.tasks,
        "connection nursery's children (set)": nursery._children,
        "trio epoll registrations (dict)": runner.io_manager._registered,
    }
    return {name: sys.getsizeof(table) for name, table in tables.items()}


def _short(filename: str) -> str:
    for marker in ("/peregrine_rt/", "/site-packages/", "/lib/python3"):
        i = filename.find(marker)
        if i >= 0:
            return filename[i + 1 :]
    return filename


_EXCLUDED = (tracemalloc.__file__, __file__)


class Tally:
    """One snapshot's live bytes and blocks, grouped four ways.

    Works on the snapshot's raw traces (``(domain, size, frames, nframe)``
    tuples, frames innermost first, one tuple per distinct stack): building
    ``tracemalloc.Trace`` objects and filtering with ``filter_traces`` took
    minutes for a million blocks.  Blocks allocated in this script or in
    tracemalloc itself are left out.
    """

    def __init__(self, snapshot: tracemalloc.Snapshot) -> None:
        raw = snapshot.traces._traces  # type: ignore[attr-defined]  # the tuples, unwrapped
        stacks: dict[int, list[Any]] = {}  # id(frames) -> [frames, bytes, blocks]
        large = large_count = 0
        for trace in raw:
            size, frames = trace[1], trace[2]
            if size > PYMALLOC_MAX and frames[0][0] not in _EXCLUDED:
                large += size
                large_count += 1
            entry = stacks.get(id(frames))
            if entry is None:
                stacks[id(frames)] = [frames, size, 1]
            else:
                entry[1] += size
                entry[2] += 1
        self.large = (large, large_count)
        self.lines: Counter[str] = Counter()
        self.line_blocks: Counter[str] = Counter()
        self.files: Counter[str] = Counter()
        self.callers: Counter[str] = Counter()
        self.caller_blocks: Counter[str] = Counter()
        self.total = 0
        for frames, size, count in stacks.values():
            filename, lineno = frames[0]
            if filename in _EXCLUDED or filename.startswith("<frozen importlib"):
                continue
            self.total += size
            line = f"{_short(filename)}:{lineno}"
            self.lines[line] += size
            self.line_blocks[line] += count
            self.files[_short(filename)] += size
            caller = f"(no peregrine_rt frame) {line}"
            for name, number in frames:  # innermost first
                if "/peregrine_rt/" in name:
                    caller = f"{_short(name)}:{number}"
                    break
            self.callers[caller] += size
            self.caller_blocks[caller] += count


def _diff(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out = Counter(after)
    out.subtract(before)
    return out


async def _serve(args: argparse.Namespace) -> None:
    import trio

    sys.path.insert(0, str(ROOT))
    import peregrine_rt as pr
    from bench.servers.ws_peregrine import Echo

    n = args.n
    server = pr.Server(Echo, pr.Config(host=HOST, port=0, max_connections=n + 1000))
    stdin = trio.lowlevel.FdStream(os.dup(0))
    pending = b""

    async def expect() -> str:
        nonlocal pending
        while b"\n" not in pending:
            chunk = await stdin.receive_some(4096)
            if not chunk:
                return "quit"
            pending += chunk
        line, _, pending = pending.partition(b"\n")
        return line.decode().strip()

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        say(f"port {server.port}")
        if await expect() != "base":
            raise SystemExit("expected base")
        await trio.sleep(args.settle)
        runner = trio.lowlevel.current_task()._runner
        gc.collect()
        keep = gc.get_objects() if args.trace else []  # alive: their ids stay theirs
        base_ids = {id(o) for o in keep}
        base_objects = len(gc.get_objects()) + gc.get_freeze_count()
        base_blocks = sys.getallocatedblocks()
        base_rss = _rss_kib()
        base_malloc = _mallocstats()
        base_tally = Tally(tracemalloc.take_snapshot()) if args.trace else None
        base_tm = tracemalloc.get_tracemalloc_memory() if args.trace else 0
        say("ok")
        if await expect() != "measure":
            raise SystemExit("expected measure")
        with trio.fail_after(60 + n / 50):  # tracemalloc slows the accepts down a lot
            while len(server.websockets) < n:
                await trio.sleep(0.05)
        await trio.sleep(args.settle)
        gc.collect()
        rss = _rss_kib()
        blocks = sys.getallocatedblocks()
        objects = len(gc.get_objects()) + gc.get_freeze_count()  # GCPolicy freezes
        malloc = _mallocstats()
        report: dict[str, Any] = {
            "n": n,
            "traced": args.trace,
            "websockets": len(server.websockets),
            "rss_kib": [base_rss, rss],
            "blocks_per_conn": (blocks - base_blocks) / n,
            "gc_objects_per_conn": (objects - base_objects) / n,
            "mallocstats": [base_malloc, malloc],
        }
        if args.trace:
            assert base_tally is not None
            tally = Tally(tracemalloc.take_snapshot())
            report["tracemalloc_self_kib"] = (tracemalloc.get_tracemalloc_memory() - base_tm) / 1024
            report["traced_per_conn"] = (tally.total - base_tally.total) / n
            report["large_per_conn"] = [
                (tally.large[0] - base_tally.large[0]) / n,
                (tally.large[1] - base_tally.large[1]) / n,
            ]
            lines = _diff(tally.lines, base_tally.lines)
            line_blocks = _diff(tally.line_blocks, base_tally.line_blocks)
            report["sites"] = [
                {"site": k, "bytes": v / n, "count": line_blocks[k] / n}
                for k, v in lines.most_common(args.top)
            ]
            report["files"] = [
                {"file": k, "bytes": v / n}
                for k, v in _diff(tally.files, base_tally.files).most_common(15)
            ]
            callers = _diff(tally.callers, base_tally.callers)
            caller_blocks = _diff(tally.caller_blocks, base_tally.caller_blocks)
            report["callers"] = [
                {"site": k, "bytes": v / n, "count": caller_blocks[k] / n}
                for k, v in callers.most_common(args.top)
            ]
            task = next(ws._reader for ws in server.websockets if ws._reader is not None)
            tables = _shared_tables(server, runner, task.parent_nursery)
            report["tables"] = {name: [size, size / n] for name, size in tables.items()}
            report["walk"] = owner_breakdown(server, base_ids, runner)
        del keep, base_ids
        say(json.dumps(report))
        await expect()  # quit (or EOF)
        await server.aclose()
        nursery.cancel_scope.cancel()


# --- the report --------------------------------------------------------------------


def print_report(plain: dict[str, Any], traced: dict[str, Any]) -> None:
    n = plain["n"]
    rss = (plain["rss_kib"][1] - plain["rss_kib"][0]) * 1024 / n
    traced_rss = (traced["rss_kib"][1] - traced["rss_kib"][0]) * 1024 / n
    tm_self = traced["tracemalloc_self_kib"] * 1024 / n
    per = traced["traced_per_conn"]
    print(f"# Idle WebSocket memory, {n} connections (bench.servers.ws_peregrine:Echo)\n")
    print(f"opened {n} sockets in {plain['open_seconds']:.1f} s (plain run)")
    print(f"RSS per idle connection, plain run:        {rss:8.0f} B ({rss / 1024:.2f} KiB)")
    print(
        f"RSS per idle connection, traced run:       {traced_rss:8.0f} B "
        f"(tracemalloc's own tables: {tm_self:.0f} B of it)"
    )
    print(f"tracemalloc, live bytes per connection:    {per:8.0f} B ({per / 1024:.2f} KiB)")
    large, large_count = traced["large_per_conn"]
    print(
        f"  of which blocks over {PYMALLOC_MAX} B (malloc):    {large:8.0f} B in {large_count:.2f} blocks"
    )
    print(f"pymalloc blocks per connection:            {plain['blocks_per_conn']:8.1f}")
    print(f"GC-tracked objects per connection:         {plain['gc_objects_per_conn']:8.1f}")
    print(f"gap RSS - tracemalloc (plain RSS):         {rss - per:8.0f} B per connection")
    before, after = plain["mallocstats"]
    if before and after:
        print("pymalloc (sys._debugmallocstats, plain run), per connection:")
        for key in (
            "arenas",
            "allocated_blocks",
            "available_blocks",
            "unused_pools",
            "pool_headers",
            "quantization",
            "total",
        ):
            if key in before and key in after:
                d = (after[key] - before[key]) / n
                unit = " arenas" if key == "arenas" else " B"
                print(f"  {key:18s} {d:10.2f}{unit}   (now {after[key]:,})")

    print("\n## By owner: objects one idle connection holds alone (walk), B per connection\n")
    walk = traced["walk"]
    print("| owner | objects | bytes | what |\n| --- | ---: | ---: | --- |")
    total = 0
    count = 0
    for row in walk["owners"]:
        total += row["bytes"]
        count += row["objects"]
        print(f"| {row['owner']} | {row['objects']} | {row['bytes']} | {row['detail']} |")
    print(f"| **total** | **{count}** | **{total}** | GC-tracked: {walk['gc_tracked']} |")
    print("\n## By type (walk)\n")
    print("| type | objects | bytes |\n| --- | ---: | ---: |")
    for row in walk["types"]:
        print(f"| {row['type']} | {row['objects']} | {row['bytes']} |")
    print("\n## Shared tables, amortized (getsizeof after / N)\n")
    for name, (size, per_conn) in traced["tables"].items():
        print(f"  {name:40s} {size:10,} B  {per_conn:6.1f} B/conn")
    print(f"\n## By allocation site (tracemalloc, innermost frame), top {len(traced['sites'])}\n")
    print("| site | B/conn | blocks/conn |\n| --- | ---: | ---: |")
    for row in traced["sites"]:
        print(f"| {row['site']} | {row['bytes']:.0f} | {row['count']:.2f} |")
    print("\n## By the first peregrine_rt frame on the allocation's stack\n")
    print("| site | B/conn | blocks/conn |\n| --- | ---: | ---: |")
    for row in traced["callers"]:
        print(f"| {row['site']} | {row['bytes']:.0f} | {row['count']:.2f} |")
    print("\n## By file (tracemalloc)\n")
    for row in traced["files"]:
        print(f"  {row['file']:60s} {row['bytes']:8.0f} B/conn")
    print(
        f"\nws_idle_memory n={n} rss_per_conn={rss:.0f} traced_per_conn={per:.0f} "
        f"walk_per_conn={total} gap={rss - per:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="idle sockets (default 1000)")
    parser.add_argument("--top", type=int, default=25, help="rows of the site tables")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before each reading")
    parser.add_argument("--nframes", type=int, default=16, help="frames kept per trace")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import trio

        if args.trace:
            tracemalloc.start(args.nframes)
        trio.run(_serve, args)
        return
    need = args.n + WARMUP + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SystemExit(f"--n {args.n} needs {need} descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # the server inherits it
    plain = measure(args, traced=False)
    traced = measure(args, traced=True)
    print_report(plain, traced)


if __name__ == "__main__":
    main()
