"""peregrine_rt facing hostile input, for ``bench/hostile.py``.

Run: ``python bench/servers/hostile_peregrine.py --port N`` (by its path, not
with ``-m``: then ``PYTHONPATH=TREE`` decides which ``peregrine_rt`` is
imported, and ``bench/hostile.py`` measures another tree that way).

Routes (one handler class, a ``JSONMixin``):

* ``/ws64``: a WebSocket whose message limit is raised to 64 MiB
  (``pr.upgrade(request, response, max_message_size=64 << 20)``); each message
  is answered with its length, as text;
* ``/ws``: the same at the default limit (``Config.ws_max_message_size``);
* ``/wsjson``: a WebSocket whose messages go through ``JSONMixin``
  (``on_json`` answers ``ok``);
* ``POST /body``: ``await request.body()``, answered with ``{"length": n}``;
* ``POST /json``: ``await request.json()``, answered with ``{"type": name}``.

Warnings and errors are logged to stderr (``bench/hostile.py`` counts the
lines a hostile request caused).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt._server import serve_until_signalled
from peregrine_rt.mixins import JSONMixin


class Hostile(JSONMixin):
    def __init__(self) -> None:
        self.kinds: dict[pr.WebSocket, str] = {}

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        path = request.path
        if path == "/ws64":
            ws = await pr.upgrade(request, response, compression=False, max_message_size=64 << 20)
            self.kinds[ws] = "length"
        elif path == "/ws":
            ws = await pr.upgrade(request, response, compression=False)
            self.kinds[ws] = "length"
        elif path == "/wsjson":
            ws = await pr.upgrade(request, response, compression=False)
            self.kinds[ws] = "json"
        elif path == "/body":
            body = await request.body()
            response.json({"length": len(body)})
        elif path == "/json":
            data = await request.json()
            response.json({"type": type(data).__name__})
        else:
            response.text("not found", status=404)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if self.kinds.get(ws) == "json":
            await super().on_message(ws, message)
        else:
            await ws.send(str(len(message)))

    async def on_json(self, ws: pr.WebSocket, data: Any) -> None:
        await ws.send("ok")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.kinds.pop(ws, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    server = pr.Server(Hostile, host=args.host, port=args.port)
    try:
        trio.run(serve_until_signalled, server)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
