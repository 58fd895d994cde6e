"""The chat scenario's minimal equivalent on websockets (asyncio + uvloop), for bench/chat.py.

Same JSON protocol as the old chat (bench/servers/old_chat) for what the benchmark uses: ``hello``
joins the room, ``say`` gets an id and a timestamp and goes to every member
(``websockets.broadcast``), sender included.  No history, presence or limits.

Run: ``python bench/servers/chat_websockets.py PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

members: set[ServerConnection] = set()
next_id = 1


async def handler(ws: ServerConnection) -> None:
    global next_id
    try:
        async for raw in ws:
            data = json.loads(raw)
            if data.get("type") == "hello":
                members.add(ws)
                await ws.send(json.dumps({"type": "welcome", "nick": data["nick"]}))
            elif data.get("type") == "say" and ws in members:
                message = {
                    "type": "message",
                    "id": next_id,
                    "room": data["room"],
                    "nick": "x",
                    "text": data["text"],
                    "ts": time.time_ns() // 1_000_000,
                }
                next_id += 1
                broadcast(members, json.dumps(message, separators=(",", ":")))
    finally:
        members.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
