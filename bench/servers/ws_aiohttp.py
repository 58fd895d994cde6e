"""aiohttp's WebSocket echo on uvloop: a peer for ``bench/ws.py``.

Run: ``python -m bench.servers.ws_aiohttp --port N``

``web.WebSocketResponse()`` with its defaults (no compression is negotiated:
the load generator offers none; no heartbeat), every text or binary message
sent back as it came, on a uvloop event loop (as the websockets asyncio peer),
no access log, ``backlog=1024`` as the other servers.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_get("/", echo)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        backlog=1024,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
