"""The load generator of ``bench/channels.py``: K clients in one topic, one asyncio+uvloop process.

Run by ``bench/channels.py`` (pinned to its own CPU); by hand (``--help``):

    .venv/bin/python bench/channels_client.py phoenix ws://127.0.0.1:8000/socket/websocket \\
        --clients 1000 --rate 100000 --warmup 3 --duration 10

Each client is an ``asyncio.Protocol`` on uvloop driving the websockets
library's Sans-I/O client (``websockets.client.ClientProtocol``: the
handshake, frame parsing, masking, automatic pongs), with the application
protocol hand-rolled on top, so that no per-message task switch or queue
sits between the socket and the counting:

* ``phoenix`` (peregrine Channels): ``["1","1","bench","phx_join",{}]``, wait
  for its ``phx_reply`` ok; publish ``["1",null,"bench","pub",{"g":..,"t":..}]``
  (ref null: no reply asked); deliveries are ``[null,"p:<offset>","bench","msg",{...}]``;
  a heartbeat ``[null,"<n>","phoenix","heartbeat",{}]`` every 30 s;
* ``socketio`` (Engine.IO v4 / Socket.IO v5 over WebSocket,
  ``/socket.io/?EIO=4&transport=websocket``): the server's ``0{...}`` open,
  send ``40``, wait for ``40{...}``; publish ``42["pub",{"g":..,"t":..}]``;
  deliveries are ``42["msg",{...}]``; a server ping ``2`` is answered ``3``;
* ``chat`` (the old chat's JSON protocol, ``bench/servers/old_chat``, as
  ``bench/chat.py`` speaks it): ``{"type":"hello","nick":"c<i>","rooms":["lobby"]}``, wait for
  ``welcome``; publish ``{"type":"say","room":"lobby","text":"g<g> t<t>"}``;
  deliveries are ``{"type":"message",...,"text":"g<g> t<t>",...}``.

Publishing: the total offered load is ``--rate`` deliveries a second, so
``rate / K`` messages a second in all, sent round-robin over the clients in
a shuffled order (each client at ``rate / K**2`` a second, evenly phased).
Every message has a global number ``g`` and its send time ``t``
(``perf_counter_ns``: one process, one clock).

Counting: every client marks each ``g`` it receives in its own bytearray (a
second receipt is a duplicate) and every receipt adds one to ``g``'s global
count.  It prints ``MARK`` when the measured window starts and ``STOP`` when
it ends (``bench/channels.py`` reads server CPU and memory there), then stops
publishing, waits for the deliveries in flight (at most ``--drain`` seconds,
or until nothing arrived for 2 s), and prints one JSON line: ``delivered``
(receipts during the window), ``seconds``, ``sent`` (messages published in
the window), ``p50_ms``/``p99_ms`` (every 8th receipt of the window sampled),
``lost`` (of the messages published in the window, deliveries that never
came to a client still connected), ``duplicates``, ``offsets`` (share of
deliveries carrying a history offset), ``closed`` (clients the server closed
or dropped), ``load_cpu`` (this process's CPU in the window, %).  Only
loopback URLs are used (``bench/channels.py`` passes them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from array import array
from urllib.parse import urlsplit

import uvloop
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

SAMPLE_EVERY = 8  # latency sampled on every 8th receipt
HEARTBEAT_SECONDS = 30.0
CONNECT_AT_ONCE = 50


class Run:
    """State shared by every client of the process (one event loop, no locks)."""

    def __init__(self, kind: str, k: int) -> None:
        self.kind = kind
        self.k = k
        self.counts = array("i")  # receipts per g
        self.recording = False
        self.delivered = 0  # receipts while recording
        self.sample = 0
        self.latencies = array("q")
        self.duplicates = 0
        self.with_offset = 0
        self.receipts = 0  # all receipts of a message, any time
        self.joined = 0
        self.closed = 0
        self.last_receipt = 0.0
        self.next_g = 0


class Client(asyncio.Protocol):
    """One WebSocket client: websockets' Sans-I/O ClientProtocol under an asyncio Protocol."""

    def __init__(self, run: Run, url: str, index: int, join: asyncio.Future[None]) -> None:
        self.run = run
        self.index = index
        self.ws = ClientProtocol(parse_uri(url), max_size=None)
        self.transport: asyncio.Transport | None = None
        self.seen = bytearray(4096)
        self.join = join
        self.open = False
        self.lost = False
        self.heartbeat_ref = 0
        kind = run.kind
        self.delivery = DELIVERY[kind]
        self.on_text = {
            "phoenix": self._phoenix,
            "socketio": self._socketio,
            "chat": self._chat,
        }[kind]

    # -- transport ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        if events:
            self._events(events)
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self.run.closed += 1
        if not self.join.done():
            self.join.set_exception(ConnectionError(f"client {self.index} closed before joining"))

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def send(self, text: str) -> None:
        if self.lost or self.transport is None:
            return
        self.ws.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.lost = True  # closing on purpose: not counted as closed by the server
            self.transport.abort()

    # -- frames --------------------------------------------------------------------

    def _events(self, events: list[object]) -> None:
        run = self.run
        now = 0
        for event in events:
            if type(event) is Frame:
                if event.opcode is not Opcode.TEXT:
                    continue
                data = event.data
                found = self.delivery.search(data)
                if found is None:
                    self.on_text(bytes(data))
                    continue
                g = int(found[1])
                seen = self.seen
                if g >= len(seen):
                    seen.extend(bytes(g - len(seen) + 4096))
                if seen[g]:
                    run.duplicates += 1
                    continue
                seen[g] = 1
                run.counts[g] += 1
                run.receipts += 1
                if data.startswith(b'[null,"p:') or b'"o":' in data:
                    run.with_offset += 1
                if run.recording:
                    run.delivered += 1
                    run.sample += 1
                    if run.sample % SAMPLE_EVERY == 0:
                        if not now:
                            now = time.perf_counter_ns()
                        run.latencies.append(now - int(found[2]))
            elif isinstance(event, Response):
                if event.status_code != 101:
                    self.join.set_exception(ConnectionError(f"handshake: {event.status_code}"))
                    return
                self.open = True
                if self.run.kind == "phoenix":
                    self.send('["1","1","bench","phx_join",{}]')
                elif self.run.kind == "chat":
                    self.send(f'{{"type":"hello","nick":"c{self.index}","rooms":["lobby"]}}')
        run.last_receipt = time.monotonic()

    def _joined(self) -> None:
        if not self.join.done():
            self.run.joined += 1
            self.join.set_result(None)

    def _phoenix(self, data: bytes) -> None:
        if data.startswith(b'["1","1","bench","phx_reply"'):
            if b'"status":"ok"' in data:
                self._joined()
            else:
                self.join.set_exception(ConnectionError(f"join refused: {data[:200]!r}"))
        elif b'"status":"error"' in data:
            print(f"error reply: {data[:200]!r}", file=sys.stderr)

    def _socketio(self, data: bytes) -> None:
        if data == b"2":
            self.send("3")
        elif data.startswith(b"0{"):
            self.send("40")
        elif data.startswith(b"40"):
            self._joined()
        elif data.startswith(b"44"):
            self.join.set_exception(ConnectionError(f"connect refused: {data[:200]!r}"))

    def _chat(self, data: bytes) -> None:
        if data.startswith(b'{"type":"welcome"'):
            self._joined()
        elif data.startswith(b'{"type":"error"'):
            print(f"chat error: {data[:200]!r}", file=sys.stderr)

    # -- publishing ------------------------------------------------------------------

    def publish(self, g: int) -> None:
        t = time.perf_counter_ns()
        kind = self.run.kind
        if kind == "phoenix":
            self.send(f'["1",null,"bench","pub",{{"g":{g},"t":{t}}}]')
        elif kind == "socketio":
            self.send(f'42["pub",{{"g":{g},"t":{t}}}]')
        else:
            self.send(f'{{"type":"say","room":"lobby","text":"g{g} t{t}"}}')

    def heartbeat(self) -> None:
        if self.run.kind == "phoenix":
            self.heartbeat_ref += 1
            self.send(f'[null,"h{self.heartbeat_ref}","phoenix","heartbeat",{{}}]')


DELIVERY = {
    "phoenix": re.compile(rb'"msg",\{"g":(\d+),"t":(\d+)'),
    "socketio": re.compile(rb'^42\["msg",\{"g":(\d+),"t":(\d+)'),
    "chat": re.compile(rb'"text":"g(\d+) t(\d+)"'),
}


def _path(kind: str, url: str) -> str:
    if kind == "socketio":
        return url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
    return url


async def connect_all(run: Run, urls: list[str]) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(i: int) -> None:
        url = _path(run.kind, urls[i % len(urls)])
        parts = urlsplit(url)
        join: asyncio.Future[None] = loop.create_future()
        async with gate:
            _, client = await loop.create_connection(
                lambda: Client(run, url, i, join), parts.hostname, parts.port
            )
            clients.append(client)
            await asyncio.wait_for(join, 60)

    await asyncio.gather(*(one(i) for i in range(run.k)))
    return clients


async def main_async(args: argparse.Namespace) -> None:
    run = Run(args.kind, args.clients)
    urls = args.urls
    t0 = time.monotonic()
    clients = await connect_all(run, urls)
    print(f"READY clients={len(clients)} seconds={time.monotonic() - t0:.1f}", flush=True)
    await asyncio.sleep(args.settle)
    order = list(clients)
    random.Random(1).shuffle(order)
    k = len(order)
    per_second = args.rate / k  # messages a second in all
    window: list[int] = []  # g at MARK, g at STOP
    state = {"publishing": True}
    capacity = int(per_second * (args.warmup + args.duration + 5)) + 1024
    run.counts = array("i", bytes(4 * capacity))

    async def publisher() -> None:
        start = time.monotonic()
        sent = 0
        i = 0
        last_beat = start
        while state["publishing"]:
            now = time.monotonic()
            due = int((now - start) * per_second)
            while sent < due:
                g = run.next_g
                if g >= len(run.counts):
                    run.counts.extend(array("i", bytes(4 * 4096)))
                run.next_g += 1
                order[i % k].publish(g)
                i += 1
                sent += 1
            if now - last_beat > HEARTBEAT_SECONDS:
                last_beat = now
                for client in order:
                    client.heartbeat()
            await asyncio.sleep(0.002)

    task = asyncio.create_task(publisher())
    await asyncio.sleep(args.warmup)
    cpu0 = time.process_time()
    window.append(run.next_g)
    run.recording = True
    print("MARK", flush=True)
    t_mark = time.monotonic()
    await asyncio.sleep(args.duration)
    run.recording = False
    seconds = time.monotonic() - t_mark
    window.append(run.next_g)
    cpu = (time.process_time() - cpu0) / seconds * 100
    print("STOP", flush=True)
    state["publishing"] = False
    await task
    g0, g1 = window
    live = sum(1 for c in clients if not c.lost)
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline:
        missing = sum(max(0, live - run.counts[g]) for g in range(g0, g1))
        if missing == 0 or time.monotonic() - run.last_receipt > 2.0:
            break
        await asyncio.sleep(0.2)
    live = sum(1 for c in clients if not c.lost)
    lost = sum(max(0, live - run.counts[g]) for g in range(g0, g1))
    lat = sorted(run.latencies)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else None

    result = {
        "delivered": run.delivered,
        "seconds": round(seconds, 3),
        "sent": g1 - g0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "lost": lost,
        "duplicates": run.duplicates,
        "offsets": round(run.with_offset / run.receipts, 4) if run.receipts else 0.0,
        "closed": run.closed,
        "live": live,
        "load_cpu": round(cpu, 1),
    }
    print(json.dumps(result), flush=True)
    for client in clients:
        client.close()
    await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(DELIVERY))
    parser.add_argument("urls", nargs="+", help="ws:// URLs on loopback; clients split over them")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100_000, help="offered deliveries/s in all")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=10.0)
    args = parser.parse_args()
    for url in args.urls:
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"{url}: loopback only")
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
