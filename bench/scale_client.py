"""The idle-socket load generator of ``bench/scale.py``: picows (Cython) on uvloop, one process.

Run by ``bench/scale.py``, pinned to its own CPU; by hand (``--help``):

    .venv/bin/python bench/scale_client.py ws://127.0.0.1:8000/ws --sockets 20000

It raises its open-file limit to the hard limit, opens ``--sockets``
WebSockets (at most ``--concurrency`` handshakes at a time, no extension
offered) and prints ``READY ok=<n> failed=<n> seconds=<t>``.  The sockets then
stay silent: each one answers the server's pings (by hand, so that they are
counted) and notes the broadcasts it receives, text messages ``b<seq>``: per
seq, how many sockets got it and the first and last arrival time
(``time.monotonic()``, the same clock as ``bench/scale.py``'s on one machine).
It obeys one word per line on stdin:

* ``REPORT``: print one JSON line: ``live``, ``closed`` (with ``close_codes``),
  ``pings`` (all so far) and ``ping_times`` (monotonic time of each, rounded to
  1 ms, since the last REPORT), ``broadcasts`` (``{seq: [count, first, last]}``).
* ``STOP`` (or end of stdin): send a close frame on every socket, wait a
  bounded time, exit.

``--max-seconds`` bounds the whole life of the process.  Nothing is sent
anywhere but the URL given, which ``bench/scale.py`` always points at loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from array import array
from collections import Counter

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
PING = WSMsgType.PING
CLOSE = WSMsgType.CLOSE


class Run:
    """State shared by every socket of the process (one event loop, no locks)."""

    def __init__(self) -> None:
        self.pings = 0
        self.ping_times = array("d")
        self.broadcasts: dict[int, list[float]] = {}  # seq -> [count, first, last]
        self.closed = 0
        self.close_codes: Counter[str] = Counter()
        self.other = 0  # frames that are neither pings nor broadcasts


class Idle(WSListener):
    """One idle socket: answers pings, notes broadcasts."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self.closed = False

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        run = self.run
        if kind is PING:
            transport.send_pong(frame.get_payload_as_bytes())
            run.pings += 1
            run.ping_times.append(time.monotonic())
        elif kind is TEXT:
            now = time.monotonic()
            payload = frame.get_payload_as_bytes()
            if payload[:1] != b"b":
                run.other += 1
                return
            seq = int(payload[1:])
            entry = run.broadcasts.get(seq)
            if entry is None:
                run.broadcasts[seq] = [1, now, now]
            else:
                entry[0] += 1
                entry[2] = now
        elif kind is CLOSE:
            run.close_codes[str(frame.get_close_code())] += 1
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
        else:
            run.other += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self.run.closed += 1


async def open_all(
    url: str, n: int, concurrency: int, run: Run, timeout: float
) -> tuple[list[WSTransport], list[str]]:
    sem = asyncio.Semaphore(concurrency)
    transports: list[WSTransport] = []
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                transport, _listener = await ws_connect(
                    lambda: Idle(run),
                    url,
                    websocket_handshake_timeout=timeout,
                    enable_auto_pong=False,
                    read_buffer_init_size=1024,
                )
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            transports.append(transport)

    await asyncio.gather(*(one() for _ in range(n)))
    return transports, errors


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


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    run = Run()
    t0 = time.monotonic()
    transports, errors = await open_all(
        args.url, args.sockets, args.concurrency, run, args.handshake_timeout
    )
    say(f"READY ok={len(transports)} failed={len(errors)} seconds={time.monotonic() - t0:.2f}")
    for error in sorted(set(errors))[:3]:
        say(f"ERROR {error}")
    while True:
        line = (await stdin.readline()).decode().strip() or "STOP"  # EOF: the parent is gone
        if line == "REPORT":
            report = {
                "live": sum(1 for t in transports if not t.is_disconnected),
                "closed": run.closed,
                "close_codes": dict(run.close_codes),
                "other": run.other,
                "pings": run.pings,
                "ping_times": [round(t, 3) for t in run.ping_times],
                "broadcasts": run.broadcasts,
            }
            run.ping_times = array("d")
            say(json.dumps(report))
        elif line == "STOP":
            break
    await close_all(transports, 10.0)


def raise_nofile() -> None:
    """Soft open-file limit up to the hard one (each socket is a file descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--sockets", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes at a time")
    ap.add_argument("--handshake-timeout", type=float, default=60.0)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    args = ap.parse_args()
    raise_nofile()

    async def bounded() -> None:
        try:
            await asyncio.wait_for(main(args), args.max_seconds)
        except TimeoutError:
            sys.stderr.write(f"scale_client: --max-seconds {args.max_seconds:g} reached\n")

    uvloop.run(bounded())
