"""trio-websocket: the chat-room peer for ``bench/fanout.py``.

Run: ``python -m bench.servers.fanout_trio_websocket --port N [--fanout loop|nursery]``

``trio_websocket.serve_websocket`` with its defaults; every connection joins
one set, and each message it sends goes to every member, the sender included.
trio-websocket has no broadcast helper, so the fan-out is hand-written:

* ``loop`` (the default, the faster here): ``await ws.send_message(message)``
  for each member in turn (each call encodes the frame and writes it; a slow
  member holds up the ones after it);
* ``nursery``: one ``send_message`` task per member in a nursery.

A member that closed while being sent to is skipped.
"""

from __future__ import annotations

import argparse

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

MEMBERS: set[WebSocketConnection] = set()


async def _send(ws: WebSocketConnection, message: str | bytes) -> None:
    try:
        await ws.send_message(message)
    except ConnectionClosed:
        pass


async def fanout_loop(message: str | bytes) -> None:
    for ws in list(MEMBERS):
        await _send(ws, message)


async def fanout_nursery(message: str | bytes) -> None:
    async with trio.open_nursery() as nursery:
        for ws in list(MEMBERS):
            nursery.start_soon(_send, ws, message)


async def main(host: str, port: int, fanout: str) -> None:
    send_all = fanout_loop if fanout == "loop" else fanout_nursery

    async def room(request: WebSocketRequest) -> None:
        ws = await request.accept()
        MEMBERS.add(ws)
        try:
            while True:
                await send_all(await ws.get_message())
        except ConnectionClosed:
            pass
        finally:
            MEMBERS.discard(ws)

    await serve_websocket(room, host, port, ssl_context=None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--fanout", choices=["loop", "nursery"], default="loop")
    args = ap.parse_args()
    try:
        trio.run(main, args.host, args.port, args.fanout)
    except KeyboardInterrupt:
        pass
