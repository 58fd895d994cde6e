"""peregrine_rt with many idle WebSockets, for ``bench/scale.py``.

Run: ``python bench/servers/scale_peregrine.py --port N [--ping-interval 5]``
(by its path, not with ``-m``: then ``PYTHONPATH=TREE`` decides which
``peregrine_rt`` is imported, and ``bench/scale.py`` measures another tree
that way).

Routes (every request of the one handler class):

* ``/ws``: upgrade (compression off); the socket subscribes to the hub topic
  ``all`` and stays silent (messages it sends are ignored);
* ``/ping``: ``pong``, the probe's fresh request;
* ``/lag``: ``{"worst_ms": ..., "gc_ms": ..., "gc": [n0, n1, n2]}``: the worst
  event-loop lag since the last call (``server.lag.take_worst()``; ``null`` on
  a peregrine_rt without ``Server.lag``), and, over the same time, the longest
  pause of Python's cyclic garbage collector and the collections of each
  generation (from ``gc.callbacks``: a stall the server's own code did not
  cause);
* ``/gc-freeze``: ``gc.freeze()`` (what is alive now, the open sockets, is
  left out of every later collection), answered with the objects frozen;
* ``/bcast``: publish ``b<seq>`` to ``all`` (every socket), answer
  ``{"seq": n, "local": deliveries, "publish_ms": time in publish()}``.

The open-file limit is raised to the hard limit first (one descriptor per
socket); ``--max-connections`` must cover the sockets plus the probe's.
"""

from __future__ import annotations

import argparse
import gc
import logging
import resource
import time
from typing import Any

import trio

import peregrine_rt as pr
from peregrine_rt._server import serve_until_signalled


class GCWatch:
    """The longest collection and the collections per generation since the last ``take()``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.worst = 0.0
        self.counts = [0, 0, 0]
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.worst = max(self.worst, time.perf_counter() - self.started)
            self.counts[info["generation"]] += 1

    def take(self) -> tuple[float, list[int]]:
        worst, counts = self.worst, self.counts
        self.worst, self.counts = 0.0, [0, 0, 0]
        return worst, counts


GC = GCWatch()


class Scale:
    def __init__(self) -> None:
        self.server: Any = None  # set once the Server exists
        self.seq = 0

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        path = request.path
        if path == "/ws":
            await pr.upgrade(request, response, compression=False)
        elif path == "/ping":
            response.text("pong")
        elif path == "/lag":
            lag = getattr(self.server, "lag", None)
            worst = None if lag is None else round(lag.take_worst() * 1000, 2)
            gc_worst, counts = GC.take()
            response.json({"worst_ms": worst, "gc_ms": round(gc_worst * 1000, 2), "gc": counts})
        elif path == "/gc-freeze":
            gc.collect()
            gc.freeze()
            response.json({"frozen": gc.get_freeze_count()})
        elif path == "/bcast":
            self.seq += 1
            t0 = time.perf_counter()
            local = await request.hub.publish("all", f"b{self.seq}")
            ms = (time.perf_counter() - t0) * 1000
            response.json({"seq": self.seq, "local": local, "publish_ms": round(ms, 2)})
        else:
            response.text("not found", status=404)

    async def on_open(self, ws: pr.WebSocket) -> None:
        ws.hub.subscribe(ws, "all")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ping-interval", type=float, default=5.0)
    ap.add_argument("--ping-timeout", type=float, default=20.0)
    ap.add_argument("--max-connections", type=int, default=25_000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    app = Scale()
    server = pr.Server(
        app,
        host=args.host,
        port=args.port,
        backlog=4096,
        max_connections=args.max_connections,
        ws_ping_interval=args.ping_interval,
        ws_ping_timeout=args.ping_timeout,
    )
    app.server = server
    try:
        trio.run(serve_until_signalled, server)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
