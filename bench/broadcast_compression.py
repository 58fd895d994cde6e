"""What a publish costs with permessage-deflate on, against off (issue #6).

Run: ``.venv/bin/python bench/broadcast_compression.py [--subscribers 200] [--messages 300]``

Without compression a publish encodes the frame once and hands the same bytes
to every subscriber; with compression each socket has its own deflate state,
so the message is compressed once per subscriber.  This measures the server's
side only: one process runs a peregrine_rt server and N raw WebSocket
clients (trio sockets that complete the handshake, offering
permessage-deflate or not, and then drain what they receive without
decoding it).  The time of the fan-out itself (``hub.publish_local``, which
is ``publish`` without its checkpoint: it writes or queues for every
subscriber before it returns) is summed per message size, and the
bytes the clients received are counted, so the saving on the wire shows too.
The clients run in the same process, so only the publish time is clean; the
ratio between the two modes is the figure to read.
"""

from __future__ import annotations

import argparse
import base64
import os
import time

import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_server

SIZES = (32, 1024, 16 * 1024)


class Feed:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        ws = await pr.upgrade(request, response)
        ws.hub.subscribe(ws, "feed")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...


async def subscriber(port: int, compress: bool, counter: list[int], ready: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if compress else ""
    await stream.send_all(
        (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    assert (b"permessage-deflate" in head.lower()) == compress
    ready.set()
    while data := await stream.receive_some(1 << 16):
        counter[0] += len(data)


async def measure(compress: bool, subscribers: int, messages: int) -> dict[int, tuple[float, int]]:
    server = pr.Server(Feed, ws_compression=compress, ws_ping_interval=None)
    results: dict[int, tuple[float, int]] = {}
    async with open_server(server), trio.open_nursery() as nursery:
        counter = [0]
        for _ in range(subscribers):
            ready = trio.Event()
            nursery.start_soon(subscriber, server.port, compress, counter, ready)
            await ready.wait()
        while server.hub.count("feed") < subscribers:
            await trio.sleep(0.01)
        for size in SIZES:
            text = ("peregrine realtime " * (size // 19 + 1))[:size]  # compressible text
            counter[0] = 0
            spent = 0.0
            for i in range(messages):
                message = f"{i:06d}{text[6:]}"
                start = time.perf_counter()
                server.hub.publish_local("feed", message)  # publish() minus its checkpoint
                spent += time.perf_counter() - start
                await trio.sleep(0)  # let the clients drain
            last = -1
            while counter[0] != last:  # until the clients have drained everything
                last = counter[0]
                await trio.sleep(0.2)
            results[size] = (spent / messages, counter[0])
        nursery.cancel_scope.cancel()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--messages", type=int, default=300)
    args = ap.parse_args()
    off = trio.run(measure, False, args.subscribers, args.messages)
    on = trio.run(measure, True, args.subscribers, args.messages)
    print(f"{args.subscribers} subscribers, {args.messages} publishes per size, compressible text")
    print("| message | publish, off | publish, on | on/off | wire bytes, off | wire bytes, on |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in SIZES:
        (t_off, b_off), (t_on, b_on) = off[size], on[size]
        print(
            f"| {size} B | {t_off * 1e6:,.0f} µs | {t_on * 1e6:,.0f} µs | {t_on / t_off:.1f}x"
            f" | {b_off:,} | {b_on:,} |"
        )


if __name__ == "__main__":
    main()
