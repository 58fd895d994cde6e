"""websockets' trio implementation: the chat-room peer for ``bench/fanout.py``.

Run: ``python -m bench.servers.fanout_websockets_trio --port N``

``websockets.trio.server.serve`` (websockets 17.4) with ``compression=None``
and ``backlog=1024``; every connection joins one set, and each message it sends
goes to every member, the sender included, with the library's own
``await websockets.trio.server.broadcast(members, message)`` (a nursery with
one ``send_data`` task per member; it returns when every write is done).
"""

from __future__ import annotations

import argparse

import trio
from websockets.trio.server import ServerConnection, broadcast, serve

MEMBERS: set[ServerConnection] = set()


async def room(ws: ServerConnection) -> None:
    MEMBERS.add(ws)
    try:
        async for message in ws:
            await broadcast(MEMBERS, message)
    finally:
        MEMBERS.discard(ws)


async def main(host: str, port: int) -> None:
    await serve(room, port, host=host, compression=None, backlog=1024)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except KeyboardInterrupt:
        pass
