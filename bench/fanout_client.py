"""The chat-room load generator of ``bench/fanout.py``: picows (Cython) on uvloop, one process.

Run by ``bench/fanout.py``, pinned to its own CPU; by hand (``--help``):

    .venv/bin/python bench/fanout_client.py ws://127.0.0.1:8000/ --subscribers 1000 --window 8

It opens ``--subscribers`` WebSockets to a chat room (at most ``--concurrency``
handshakes at a time; no extension offered, so no compression); the server
sends every message any member sends to every member, the sender included.
Connection 0 is also the publisher.  It prints
``READY ok=<n> failed=<n> extensions=<header or ->`` and then obeys one word
per line on stdin:

* ``START``: sync, then publish.  Sync: the publisher sends a message every
  20 ms until every subscriber has received one (so every member is in the
  room; bounded by ``--sync-timeout``), and says ``STARTED base=<seq>
  sync_ms=<t>`` (or ``SYNCFAIL ...``).  Then it publishes with a window: the
  next message goes out as soon as fewer than ``--window`` published messages
  are still missing from some live subscriber.  The server is therefore never
  more than ``--window`` messages (``window`` times subscribers deliveries) ahead
  of the slowest subscriber: saturated when the window is large enough to
  cover the round trip, never queueing without bound.
* ``MARK``: deliveries received from now on are counted and their latency
  (receive time minus the publisher's send time, one clock: one process)
  recorded.
* ``STOP``: stop counting and publishing; wait (at most ``--drain-seconds``)
  until every published message has reached every live subscriber, then print
  one JSON line: ``deliveries`` and ``seconds`` (MARK to STOP), ``messages``
  (published in that window), ``p50_us``/``p99_us``/``max_us``, and the checks
  over the whole run: ``published``, ``subscribers_live``, ``disconnected``
  (with ``close_codes``), ``gaps`` (messages a subscriber never got although
  it got a later one), ``duplicates`` and ``reordered`` (a message at or before
  one already received), ``short`` (live subscribers missing messages at the
  end) and ``missing`` (how many in all), ``malformed``.  Then every connection
  is closed (close frame, a bounded wait) and it exits.

Each message is a ``--size``-byte text message (32 by default):
``<seq, 10 digits> <send time in ns, 20 digits> `` padded with ``x``.  The
message sequence is checked per subscriber from the first message it got:
every later one exactly once, in order.  End of stdin counts as ``STOP``;
``--max-seconds`` bounds the whole life of the process.  Nothing is sent
anywhere but the URL given, which ``bench/fanout.py`` always points at
loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from array import array
from collections import Counter

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
CLOSE = WSMsgType.CLOSE
SYNC_INTERVAL = 0.02


class Run:
    """State shared by every connection of the process (one event loop, no locks)."""

    def __init__(self, size: int, window: int) -> None:
        self.size = size
        self.window = window
        self.publisher: Sub | None = None
        self.publishing = False  # windowed publishing on
        self.recording = False  # deliveries between MARK and STOP are counted
        self.latencies = array("q")  # ns, one per counted delivery
        self.sent: list[int] = []  # perf_counter_ns of each published seq
        self.counts: list[int] = []  # deliveries of each seq (from base on)
        self.base = -1  # first windowed seq; -1 while syncing
        self.done = 0  # lowest seq not yet delivered to every live subscriber
        self.live = 0  # subscribers connected
        self.unseen = 0  # subscribers that have not received anything yet
        self.synced: asyncio.Event | None = None
        self.drained: asyncio.Event | None = None
        self.gaps = 0
        self.duplicates = 0
        self.reordered = 0
        self.malformed = 0
        self.disconnected = 0
        self.stopping = False  # STOP closes the connections on purpose
        self.close_codes: Counter[str] = Counter()

    def publish(self) -> None:
        pub = self.publisher
        assert pub is not None and pub.transport is not None
        seq = len(self.sent)
        now = time.perf_counter_ns()
        payload = f"{seq:010d} {now:020d} ".encode().ljust(self.size, b"x")
        self.sent.append(now)
        self.counts.append(0)
        pub.transport.send(TEXT, payload)

    def pump(self) -> None:
        """Publish while fewer than ``window`` messages are still in flight."""
        if not self.publishing or self.publisher is None or self.publisher.transport is None:
            return
        if self.publisher.transport.is_disconnected:
            return
        while len(self.sent) - self.done < self.window:
            self.publish()

    def advance(self) -> None:
        """Move ``done`` past every message all live subscribers have."""
        counts, done, live, end = self.counts, self.done, self.live, len(self.sent)
        while done < end and counts[done] >= live:
            done += 1
        if done != self.done:
            self.done = done
            self.pump()
        if done == end and self.drained is not None:
            self.drained.set()


class Sub(WSListener):
    """One member of the room: checks the sequence, notes latencies."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self.transport: WSTransport | None = None
        self.next = -1  # next seq expected; -1 before the first message
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is TEXT:
            now = time.perf_counter_ns()
            run = self.run
            payload = frame.get_payload_as_bytes()
            try:
                seq = int(payload[:10])
            except ValueError:
                run.malformed += 1
                return
            if len(payload) != run.size or seq >= len(run.sent):
                run.malformed += 1
                return
            expected = self.next
            gap = False
            if seq != expected:
                if expected < 0:  # the first message this subscriber sees
                    run.unseen -= 1
                    if run.unseen == 0 and run.synced is not None:
                        run.synced.set()
                elif seq < expected:
                    if seq == expected - 1:
                        run.duplicates += 1
                    else:
                        run.reordered += 1
                    return
                else:  # lost expected .. seq-1: counted, and credited so the window moves on
                    run.gaps += seq - expected
                    gap = True
                    if run.base >= 0:
                        counts = run.counts
                        for s in range(max(expected, run.base), seq):
                            counts[s] += 1
            self.next = seq + 1
            if run.recording:
                run.latencies.append(now - run.sent[seq])
            if run.base >= 0 and seq >= run.base:
                run.counts[seq] += 1
                if gap or (seq == run.done and run.counts[seq] >= run.live):
                    run.advance()
        elif kind is BINARY:
            self.run.malformed += 1
        elif kind is CLOSE:
            self.run.close_codes[str(frame.get_close_code())] += 1
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.closed:
            return
        self.closed = True
        run = self.run
        run.live -= 1
        if self.next < 0:
            run.unseen -= 1
            if run.unseen == 0 and run.synced is not None:
                run.synced.set()
        if run.base >= 0 and not run.stopping:
            run.disconnected += 1
        run.advance()


async def open_all(
    url: str, n: int, concurrency: int, run: Run, timeout: float
) -> tuple[list[WSTransport], list[Sub], list[str]]:
    sem = asyncio.Semaphore(concurrency)
    transports: list[WSTransport] = []
    subs: list[Sub] = []
    errors: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                transport, listener = await ws_connect(
                    lambda: Sub(run),
                    url,
                    websocket_handshake_timeout=timeout,
                    enable_auto_pong=True,
                    read_buffer_init_size=16 * 1024,
                )
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            transports.append(transport)
            subs.append(listener)

    await asyncio.gather(*(one() for _ in range(n)))
    return transports, subs, errors


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


async def sync(run: Run, timeout: float) -> bool:
    """Publish every SYNC_INTERVAL until every live subscriber has received something."""
    run.synced = asyncio.Event()
    deadline = time.monotonic() + timeout
    while run.unseen > 0 and time.monotonic() < deadline:
        pub = run.publisher
        if pub is None or pub.transport is None or pub.transport.is_disconnected:
            return False
        run.publish()
        try:
            await asyncio.wait_for(run.synced.wait(), SYNC_INTERVAL)
        except TimeoutError:
            pass
    return run.unseen == 0


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

    run = Run(args.size, args.window)
    transports, subs, errors = await open_all(
        args.url, args.subscribers, args.concurrency, run, args.handshake_timeout
    )
    live = [s for s in subs if not s.closed]
    run.live = run.unseen = len(live)
    if live:
        run.publisher = live[0]
    extensions = "-"
    if transports:
        ext = transports[0].response.headers.get("sec-websocket-extensions")
        extensions = ext.replace(" ", "") if ext else "-"
    say(f"READY ok={len(transports)} failed={len(errors)} extensions={extensions}")
    for error in sorted(set(errors))[:3]:
        say(f"ERROR {error}")

    cmd = await command()
    t0 = t1 = time.perf_counter()
    first = last = 0
    if cmd == "START" and run.publisher is not None:
        s0 = time.perf_counter()
        if await sync(run, args.sync_timeout):
            run.base = run.done = len(run.sent)
            say(f"STARTED base={run.base} sync_ms={1000 * (time.perf_counter() - s0):.0f}")
            run.publishing = True
            run.pump()
            cmd = await command()
            if cmd == "MARK":
                run.latencies = array("q")
                run.recording = True
                first = len(run.sent)
                t0 = time.perf_counter()
                cmd = await command()
                t1 = time.perf_counter()
                last = len(run.sent)
        else:
            say(f"SYNCFAIL unseen={run.unseen} of {run.live} sent={len(run.sent)}")
            await command()
    run.recording = False
    run.publishing = False
    drained = True
    if run.base >= 0 and run.done < len(run.sent):
        run.drained = asyncio.Event()
        run.advance()
        try:
            await asyncio.wait_for(run.drained.wait(), args.drain_seconds)
        except TimeoutError:
            drained = False
    run.stopping = True
    published = len(run.sent)
    live_subs = [s for s in subs if not s.closed]
    short = [published - s.next for s in live_subs if s.next != published]
    lat = sorted(run.latencies)
    result = {
        "deliveries": len(lat),
        "seconds": t1 - t0,
        "messages": last - first,
        "p50_us": percentile(lat, 0.50),
        "p99_us": percentile(lat, 0.99),
        "max_us": lat[-1] / 1000.0 if lat else 0.0,
        "published": published,
        "base": run.base,
        "subscribers_live": len(live_subs),
        "disconnected": run.disconnected,
        "close_codes": dict(run.close_codes),
        "gaps": run.gaps,
        "duplicates": run.duplicates,
        "reordered": run.reordered,
        "malformed": run.malformed,
        "short": len(short),
        "missing": sum(short),
        "drained": drained,
        "window": run.window,
    }
    say(json.dumps(result))
    await close_all(transports, 10.0)
    say("DONE")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="ws://127.0.0.1:PORT/ (loopback only)")
    ap.add_argument("--subscribers", type=int, default=1000, help="connections, publisher included")
    ap.add_argument("--window", type=int, default=8, help="messages in flight at most")
    ap.add_argument("--size", type=int, default=32, help="message size in bytes (>= 32)")
    ap.add_argument("--concurrency", type=int, default=100, help="handshakes at once")
    ap.add_argument("--handshake-timeout", type=float, default=30.0)
    ap.add_argument("--sync-timeout", type=float, default=20.0)
    ap.add_argument("--drain-seconds", type=float, default=10.0)
    ap.add_argument(
        "--max-seconds", type=float, default=600.0, help="the process exits after this, always"
    )
    args = ap.parse_args()
    if args.size < 32:
        ap.error("--size is at least 32 (sequence number and timestamp)")
    if args.window < 1:
        ap.error("--window is at least 1")
    host = args.url.split("//", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]") and not host.startswith("127."):
        ap.error("loopback addresses only")

    async def bounded() -> None:
        try:
            await asyncio.wait_for(main(args), args.max_seconds)
        except TimeoutError:
            sys.stderr.write(f"fanout_client: gave up after --max-seconds {args.max_seconds:g}\n")
            sys.stderr.flush()
            os._exit(3)

    uvloop.run(bounded())


if __name__ == "__main__":
    cli()
