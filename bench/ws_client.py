"""The WebSocket load generator of ``bench/ws.py``: picows (C, Cython) on uvloop, one process.

Run by ``bench/ws.py``, pinned to its own CPU; by hand (``--help``):

    .venv/bin/python bench/ws_client.py load ws://127.0.0.1:8000/ --connections 50
    .venv/bin/python bench/ws_client.py idle ws://127.0.0.1:8000/ --connections 1000

It opens ``--connections`` WebSockets (at most ``--concurrency`` handshakes at a
time, so a thousand clients do not overflow the server's listen backlog; no
extension is offered, so no compression), prints one line
``READY ok=<n> failed=<n> extensions=<header or ->`` and then obeys one word
per line on stdin:

* ``load``: ``START`` sets every connection ping-ponging (send a ``--size``-byte
  text message, wait for its echo, check it, send again); ``MARK`` starts
  counting round trips and their latencies; ``STOP`` stops sending and prints
  one JSON line: ``messages``, ``seconds`` (MARK to STOP, measured here),
  ``p50_us``, ``p99_us``, ``max_us``, ``mismatches`` (echoes that differ from
  what was sent), ``lost`` (connections that dropped while running), then
  closes every connection (close frame, a bounded wait) and exits.
* ``idle``: the connections send nothing; ``STOP`` closes them and exits.

End of stdin counts as ``STOP``; ``--max-seconds`` bounds the whole life of the
process whatever happens.  Nothing is sent anywhere but the URL given, which
``bench/ws.py`` always points at loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from array import array

import uvloop
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
CLOSE = WSMsgType.CLOSE


class Run:
    """State shared by every connection of the process (one event loop, no locks)."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.running = False  # connections send the next message on each echo
        self.recording = False  # round trips between MARK and STOP are counted
        self.latencies = array("q")  # ns, one per counted round trip
        self.mismatches = 0
        self.lost = 0
        self.inflight = 0
        self.drained: asyncio.Event | None = None


class Pinger(WSListener):
    """One connection: on each echo, note the round trip and send again."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self.transport: WSTransport | None = None
        self.sent_at = 0
        self.waiting = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self.waiting = True
        self.run.inflight += 1
        self.sent_at = time.perf_counter_ns()
        self.transport.send(TEXT, self.run.message)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT or kind is BINARY:
            now = time.perf_counter_ns()
            run = self.run
            if not self.waiting:
                run.mismatches += 1  # an echo nobody asked for
                return
            if frame.get_payload_as_bytes() != run.message:
                run.mismatches += 1
            self.waiting = False
            run.inflight -= 1
            if run.recording:
                run.latencies.append(now - self.sent_at)
            if run.running:
                self.waiting = True
                run.inflight += 1
                self.sent_at = time.perf_counter_ns()
                transport.send(TEXT, run.message)
            elif run.inflight == 0 and run.drained is not None:
                run.drained.set()
        elif kind is CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        run = self.run
        if self.waiting:
            self.waiting = False
            run.inflight -= 1
            if run.running:
                run.lost += 1
            if run.inflight == 0 and run.drained is not None:
                run.drained.set()


async def open_all(
    url: str, n: int, concurrency: int, run: Run, timeout: float, buffer: int
) -> tuple[list[WSTransport], list[Pinger], list[str]]:
    sem = asyncio.Semaphore(concurrency)
    transports: list[WSTransport] = []
    listeners: list[Pinger] = []
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                transport, listener = await ws_connect(
                    lambda: Pinger(run),
                    url,
                    websocket_handshake_timeout=timeout,
                    enable_auto_pong=True,
                    read_buffer_init_size=buffer,
                )
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            transports.append(transport)
            listeners.append(listener)

    await asyncio.gather(*(one() for _ in range(n)))
    return transports, listeners, errors


async def close_all(transports: list[WSTransport], timeout: float) -> None:
    for t in transports:
        if not t.is_disconnected:
            try:
                t.send_close(WSCloseCode.OK)
            except Exception:
                t.disconnect(graceful=False)
    waits = [asyncio.ensure_future(t.wait_disconnected()) for t in transports]
    if waits:
        _done, pending = await asyncio.wait(waits, timeout=timeout)
        for t in transports:
            if not t.is_disconnected:
                t.disconnect(graceful=False)
        for w in pending:
            w.cancel()


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[i] / 1000.0


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def command() -> str:
        line = await stdin.readline()
        return line.decode().strip() or "STOP"  # EOF: the parent is gone

    message = (b"0123456789abcdef" * (args.size // 16 + 1))[: args.size]
    run = Run(message)
    buffer = 4096 if args.mode == "idle" else 16 * 1024
    transports, listeners, errors = await open_all(
        args.url, args.connections, args.concurrency, run, args.handshake_timeout, buffer
    )
    extensions = "-"
    if transports:
        ext = transports[0].response.headers.get("sec-websocket-extensions")
        extensions = ext.replace(" ", "") if ext else "-"
    say(f"READY ok={len(transports)} failed={len(errors)} extensions={extensions}")
    for error in sorted(set(errors))[:3]:
        say(f"ERROR {error}")

    result: dict[str, float | int] = {}
    if args.mode == "load":
        cmd = await command()
        if cmd == "START":
            run.running = True
            for listener in listeners:
                listener.send()
            cmd = await command()
        t0 = t1 = time.perf_counter()
        if cmd == "MARK":
            run.latencies = array("q")
            run.recording = True
            t0 = time.perf_counter()
            cmd = await command()
            t1 = time.perf_counter()
        run.recording = False
        run.running = False
        lat = sorted(run.latencies)
        result = {
            "messages": len(lat),
            "seconds": t1 - t0,
            "p50_us": percentile(lat, 0.50),
            "p99_us": percentile(lat, 0.99),
            "max_us": lat[-1] / 1000.0 if lat else 0.0,
            "mismatches": run.mismatches,
            "lost": run.lost,
        }
        say(json.dumps(result))
        # Let the last echoes come back before closing (bounded).
        if run.inflight:
            run.drained = asyncio.Event()
            try:
                await asyncio.wait_for(run.drained.wait(), 5.0)
            except TimeoutError:
                pass
    else:
        await command()
    await close_all(transports, 10.0)
    say("DONE")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["load", "idle"])
    ap.add_argument("url", help="ws://127.0.0.1:PORT/ (loopback only)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--size", type=int, default=32, help="message size in bytes (load)")
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes at once")
    ap.add_argument("--handshake-timeout", type=float, default=30.0)
    ap.add_argument(
        "--max-seconds", type=float, default=600.0, help="the process exits after this, always"
    )
    args = ap.parse_args()
    host = args.url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]") and not host.startswith("127."):
        ap.error("loopback addresses only")

    async def bounded() -> None:
        try:
            await asyncio.wait_for(main(args), args.max_seconds)
        except TimeoutError:
            sys.stderr.write(f"ws_client: gave up after --max-seconds {args.max_seconds:g}\n")
            sys.stderr.flush()
            os._exit(3)

    uvloop.run(bounded())


if __name__ == "__main__":
    cli()
