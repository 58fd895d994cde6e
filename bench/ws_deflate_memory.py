"""Server memory per WebSocket with and without permessage-deflate.

Run: ``.venv/bin/python bench/ws_deflate_memory.py [N]`` (default 1000 sockets).

Starts ``examples.echo:Echo`` twice (``ws_compression`` off, then on), opens N
sockets that each exchange one 1 KiB JSON text message (offering
permessage-deflate when it is on), and reports the server's RSS increase per
socket.  Loopback only; the servers are stopped by PID.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
MESSAGE = json.dumps({"room": "lobby", "text": "hello " * 170})[:1024]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(port: int, compress: bool, ready: list[int], hold: trio.Event) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    extensions = [PerMessageDeflate()] if compress else []
    await stream.send_all(ws.send(Request(host="localhost", target="/ws", extensions=extensions)))
    accepted = False
    while not accepted:
        ws.receive_data(await stream.receive_some(65536))
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    await stream.send_all(ws.send(TextMessage(data=MESSAGE)))
    echoed = False
    while not echoed:
        ws.receive_data(await stream.receive_some(65536))
        echoed = any(isinstance(e, TextMessage) for e in ws.events())
    ready.append(1)
    await hold.wait()
    await stream.aclose()


async def measure(n: int, compress: bool) -> float:
    port = free_port()
    code = (
        "import peregrine_rt as pr; from examples.echo import Echo; "
        f"pr.run(Echo, port={port}, ws_compression={compress}, log_level='WARNING')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        await trio.sleep(1.5)
        ready: list[int] = []
        hold = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(20):  # warm up the server's lazy allocations
                nursery.start_soon(client, port, compress, ready, hold)
            while len(ready) < 20:
                await trio.sleep(0.05)
            await trio.sleep(1)
            base = rss_kib(proc.pid)
            for i in range(n):
                nursery.start_soon(client, port, compress, ready, hold)
                if i % 200 == 199:
                    await trio.sleep(0.05)
            with trio.fail_after(120):
                while len(ready) < n + 20:
                    await trio.sleep(0.1)
            await trio.sleep(2)
            after = rss_kib(proc.pid)
            hold.set()
        return (after - base) / n
    finally:
        proc.terminate()
        proc.wait()


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    off = await measure(n, False)
    on = await measure(n, True)
    print(
        f"{n} sockets, one 1 KiB message each: {off:.1f} KiB/socket without compression, "
        f"{on:.1f} KiB/socket with permessage-deflate ({on / off:.1f}x)"
    )


if __name__ == "__main__":
    trio.run(main)
