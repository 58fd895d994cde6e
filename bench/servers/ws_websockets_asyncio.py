"""websockets' asyncio implementation on uvloop: the echo peer for ``bench/ws.py``.

Run: ``python -m bench.servers.ws_websockets_asyncio --port N``

``websockets.asyncio.server.serve`` (websockets 13+) with its defaults except
``compression=None`` (no permessage-deflate, as every server in the benchmark)
and ``backlog=1024`` (asyncio's default of 100 drops SYNs when 1000 clients
connect at once; peregrine_rt and hypercorn get 1024 too).  The event loop is
uvloop's.
"""

from __future__ import annotations

import argparse

import uvloop
from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main(host: str, port: int) -> None:
    async with serve(echo, host, port, compression=None, backlog=1024) as server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        uvloop.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
