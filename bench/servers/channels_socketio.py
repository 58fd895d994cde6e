"""python-socketio for ``bench/channels.py``: one room, every ``pub`` emitted to all as ``msg``.

Run: ``python bench/servers/channels_socketio.py PORT [aiohttp|asgi]``

* ``aiohttp`` (the default, the faster here): ``socketio.AsyncServer(async_mode="aiohttp")``
  attached to an aiohttp ``web.Application`` on uvloop, access log off;
* ``asgi``: ``socketio.AsyncServer(async_mode="asgi")`` wrapped in
  ``socketio.ASGIApp`` under uvicorn with uvloop, httptools and the
  ``websockets`` WebSocket implementation, one process, access log off.

Every client enters the room ``bench`` when it connects; each ``pub`` event
is given the next offset of the room and appended to a bounded in-memory
history (``deque(maxlen=1000)``) before ``await sio.emit("msg", data,
room="bench")``.  python-socketio has no connection-state recovery (the
JavaScript server's ``connectionStateRecovery`` has no Python counterpart up
to 5.18), so this is the least an app would write to give clients
offsets to resume from: it matches peregrine's "every publish gets an
offset" at the cost of a counter and a deque append per publish.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

import socketio

ROOM = "bench"


def make_server(async_mode: str) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(async_mode=async_mode, cors_allowed_origins="*")
    history: deque[tuple[int, str, Any]] = deque(maxlen=1000)
    last = 0

    @sio.event
    async def connect(sid: str, environ: Any) -> None:
        await sio.enter_room(sid, ROOM)

    @sio.on("pub")
    async def pub(sid: str, data: Any) -> None:
        nonlocal last
        last += 1
        data["o"] = last
        history.append((last, "msg", data))
        await sio.emit("msg", data, room=ROOM)

    return sio


def main() -> None:
    port = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "aiohttp"
    if mode == "asgi":
        import uvicorn

        app = socketio.ASGIApp(make_server("asgi"))
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            ws="websockets",
            lifespan="off",
            access_log=False,
            log_level="warning",
            backlog=2048,
        )
    elif mode == "aiohttp":
        import uvloop
        from aiohttp import web

        sio = make_server("aiohttp")
        web_app = web.Application()
        sio.attach(web_app)
        uvloop.install()
        web.run_app(web_app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=2048)
    else:
        raise SystemExit(f"unknown mode {mode!r}: aiohttp or asgi")


if __name__ == "__main__":
    main()
