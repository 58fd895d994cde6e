"""The chat example plus the soak test's other routes, for ``bench/soak.py``.

Run: ``peregrine-rt bench.servers.soak_peregrine:Soak --workers 2 --redis URL``
(from the repository root).  Everything of :class:`examples.chat.app.Chat`
(a WebSocket at ``/socket/websocket`` speaks its Channels protocol: topics
``chat`` and ``room:<name>``; a plain GET serves its browser client), and:

* ``GET /_soak``: this worker's ``{"pid", "tasks", "fds", "rss_kib",
  "hub_lost"}``: trio tasks alive (walked from the root task), open file
  descriptors (``/proc/self/fd``), resident memory (``VmRSS``);
* ``GET /hello``: ``hello`` (HTTP keep-alive load);
* ``GET /big``: 1 MiB of text (for clients that read it slowly, or not at all);
* ``POST /bcast``: publish the body (text) to the hub topic ``soak.fan``,
  answering ``{"local": deliveries}``, or 503 when Redis cannot be reached
  (the message then reached this worker's subscribers only);
* ``GET /events``: Server-Sent Events of ``soak.fan``;
* WebSocket ``/echo``: every message is sent back;
* WebSocket ``/fan``: subscribed to ``soak.fan``; what it sends is ignored;
* ``GET /_soak/top`` (only with ``SOAK_TRACEMALLOC=1`` in the environment,
  which starts :mod:`tracemalloc` in each worker): the first call takes a
  snapshot, each later one answers the 15 source lines whose allocations grew
  most since then (``{"pid", "top": [[line, KiB, count], ...]}``), to find what a growing RSS holds.
"""

from __future__ import annotations

import os
import tracemalloc

import trio

import peregrine_rt as pr
from examples.chat.app import Chat

if os.environ.get("SOAK_TRACEMALLOC") == "1":
    tracemalloc.start(1)

FAN_TOPIC = "soak.fan"
BIG = b"x" * (1 << 20)


def count_tasks() -> int:
    """Trio tasks alive in this run, the root task included (walks the task tree)."""
    root = trio.lowlevel.current_root_task()
    todo = [] if root is None else [root]
    seen = 0
    while todo:
        task = todo.pop()
        seen += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return seen


def rss_kib() -> int:
    """This process's resident set size in KiB (``VmRSS`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


async def trim_every(seconds: float) -> None:
    """glibc's ``malloc_trim(0)`` every ``seconds`` (``SOAK_TRIM``): is the growth freed memory kept?"""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    while True:
        await trio.sleep(seconds)
        libc.malloc_trim(0)


PLAIN = ("/echo", "/fan")  # plain WebSockets: no Channels, no session


class Soak(Chat):
    """The chat with the soak test's routes."""

    first_snapshot: tracemalloc.Snapshot | None = None

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        path = request.path
        if path == "/_soak":
            response.json(
                {
                    "pid": os.getpid(),
                    "tasks": count_tasks(),
                    "fds": len(os.listdir("/proc/self/fd")),
                    "rss_kib": rss_kib(),
                    "hub_lost": getattr(request.hub, "lost", None),
                }
            )
        elif path == "/_soak/top" and tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot()
            if self.first_snapshot is None:
                self.first_snapshot = snapshot
            top = snapshot.compare_to(self.first_snapshot, "lineno")[:15]
            lines = [[str(s.traceback), s.size_diff // 1024, s.count_diff] for s in top]
            response.json({"pid": os.getpid(), "top": lines})
        elif path == "/hello":
            response.text("hello")
        elif path == "/big":
            response.text(BIG.decode())
        elif path == "/bcast" and request.method == "POST":
            message = (await request.body()).decode()
            try:
                local = await request.hub.publish(FAN_TOPIC, message)
            except pr.HubUnavailable as exc:
                response.json({"local": exc.delivered}, status=503)
            else:
                response.json({"local": local})
        elif path == "/events":
            async with response.sse() as events:
                await events.forward(request.hub, FAN_TOPIC, event="fan")
        elif path in PLAIN and request.upgrade is not None:
            await pr.upgrade(request, response, authenticate=None)
        else:
            await super().handle(request, response)

    async def background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().background)
            if os.environ.get("SOAK_TRIM"):
                nursery.start_soon(trim_every, float(os.environ["SOAK_TRIM"]))
            task_status.started()

    async def on_open(self, ws: pr.WebSocket) -> None:
        path = ws.request.path
        if path == "/fan":
            ws.hub.subscribe(ws, FAN_TOPIC)
        elif path != "/echo":
            await super().on_open(ws)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        path = ws.request.path
        if path == "/echo":
            await ws.send(message)
        elif path != "/fan":
            await super().on_message(ws, message)
