"""websockets' trio implementation: the echo peer for ``bench/ws.py``.

Run: ``python -m bench.servers.ws_websockets_trio --port N``

``websockets.trio.server.serve`` (present in websockets 17.4) with its
defaults except ``compression=None`` (no permessage-deflate, as every server in
the benchmark) and ``backlog=1024``.
"""

from __future__ import annotations

import argparse

import trio
from websockets.trio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main(host: str, port: int) -> None:
    await serve(echo, port, host=host, compression=None, backlog=1024)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except KeyboardInterrupt:
        pass
