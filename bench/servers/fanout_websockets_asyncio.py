"""websockets' asyncio implementation on uvloop: the chat-room peer for ``bench/fanout.py``.

Run: ``python -m bench.servers.fanout_websockets_asyncio --port N``

``websockets.asyncio.server.serve`` with ``compression=None`` and
``backlog=1024`` (as in ``bench/servers/ws_websockets_asyncio.py``); every
connection joins one set, and each message it sends goes to every member, the
sender included, with ``websockets.asyncio.server.broadcast(members, message)``
(synchronous: the frame is written or buffered per connection, no
backpressure, no waiting).  The event loop is uvloop's.
"""

from __future__ import annotations

import argparse

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

MEMBERS: set[ServerConnection] = set()


async def room(ws: ServerConnection) -> None:
    MEMBERS.add(ws)
    try:
        async for message in ws:
            broadcast(MEMBERS, message)
    finally:
        MEMBERS.discard(ws)


async def main(host: str, port: int) -> None:
    async with serve(room, host, port, compression=None, backlog=1024) as server:
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
