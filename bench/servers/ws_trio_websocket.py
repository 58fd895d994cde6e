"""trio-websocket: the echo peer for ``bench/ws.py``.

Run: ``python -m bench.servers.ws_trio_websocket --port N``

``trio_websocket.serve_websocket`` with its defaults (it has no compression and
no backlog option; trio listens with the largest backlog the kernel allows).
"""

from __future__ import annotations

import argparse

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def main(host: str, port: int) -> None:
    await serve_websocket(echo, host, port, ssl_context=None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        trio.run(main, args.host, args.port)
    except KeyboardInterrupt:
        pass
