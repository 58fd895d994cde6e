"""Dashboard: a live dashboard on Channels (docs/channels/guide.rst builds it step by step).

Topics, all on one WebSocket per page (``/socket``, phoenix.js's ``/socket/websocket``):

* ``prices``: one ``price`` event per symbol per tick, **conflated** by
  symbol: a viewer that cannot keep up gets the newest price of each symbol,
  never a stale backlog, and is not closed as a slow consumer;
* ``metrics``: ``metric`` events (``{"name": ..., "value": ...}``), conflated by name;
* ``log``: ``line`` events kept in **history**, so a page that reconnects
  gets exactly the lines it missed (``recovered: true``), and a new page
  loads the recent ones from ``GET /log?upto=<offset>``;
* ``viewers``: nothing is sent on it but **presence**: who is watching.

A background task (:meth:`Dashboard.feed`) makes the prices move every
``interval`` seconds.  The viewer's identity comes from the handshake: the
``name`` query parameter, a stand-in for a real login (docs/web/).

The page (``examples/dashboard.html``) imports peregrine.js from
``/_peregrine/peregrine.js``, which the router answers from the installed
package.

Run: ``peregrine-rt examples.dashboard:Site --port 8000`` and open
``http://localhost:8000/?name=ann`` in two tabs.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any, ClassVar

import trio

import peregrine_rt as pr
from peregrine_rt._channels import Channels, Refuse, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt.exceptions import HTTPError

PAGE = Path(__file__).with_name("dashboard.html")
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "USDCHF")
START = {"EURUSD": 1.08, "GBPUSD": 1.27, "USDJPY": 151.0, "USDCHF": 0.9}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


# [channels]
class Dashboard(Channels):
    history = MemoryHistory(max_count=500)  # the log topic's; prices keep none
    interval: ClassVar[float | None] = 1.0  # seconds between ticks (None: no feed)
    seed: ClassVar[int | None] = None  # for a repeatable random walk

    @topic("prices", history=False, conflate=lambda payload: payload["symbol"])
    class Prices:
        pass  # anyone may join; only the server publishes

    @topic("metrics", history=False, conflate=lambda payload: payload["name"])
    class Metrics:
        pass

    @topic("log")
    class Log:
        async def on_note(self, socket: Socket, payload: Any) -> dict[str, Any]:
            if socket.user == "anonymous":
                raise Refuse("sign in to write")  # an error reply; the join stays
            text = str(payload.get("text", "")).strip()[:200] if isinstance(payload, dict) else ""
            if not text:
                raise Refuse("empty")
            await socket.broadcast("line", line("note", f"{socket.user}: {text}"))
            return {"noted": True}  # the ack the page awaits

    @topic("viewers", history=False, presence=True)
    class Viewers:
        async def presence_meta(self, socket: Socket) -> dict[str, Any]:
            return {"since": int(time.time())}

    # [/channels]

    # [identity]
    async def authenticate(self, request: pr.Request) -> str:
        """The viewer's name, from ``?name=`` (a stand-in for a session or a token)."""
        name = request.query.get("name") or "anonymous"
        if not _NAME.fullmatch(name):
            raise HTTPError(400, "a name is 1 to 32 letters, digits, '_' or '-'")
        return name

    # [/identity]

    # [feed]
    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(self.seed)
        self.prices = dict(START)
        self.ticks = 0

    async def background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().background)  # history and presence first
            if self.interval is not None:
                nursery.start_soon(self.feed, self.interval)
            task_status.started()

    async def feed(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            await self.tick()

    async def tick(self) -> None:
        """Move every price a little and publish it; log the big moves."""
        self.ticks += 1
        for symbol in SYMBOLS:
            old = self.prices[symbol]
            new = self.prices[symbol] = round(old * (1 + self.rng.gauss(0, 0.002)), 5)
            await self.broadcast("prices", "price", {"symbol": symbol, "price": new})
            if abs(new - old) / old > 0.004:
                await self.broadcast("log", "line", line("move", f"{symbol} {old} -> {new}"))
        await self.broadcast("metrics", "metric", {"name": "ticks", "value": self.ticks})
        viewers = len(self.members("viewers"))  # joins on this node
        await self.broadcast("metrics", "metric", {"name": "viewers", "value": viewers})

    # [/feed]


def line(level: str, text: str) -> dict[str, Any]:
    """A log line's payload."""
    return {"level": level, "text": text, "time": round(time.time(), 3)}


# [site]
class Site(pr.Router):
    """The page, peregrine.js, the log's backlog, and the Channels endpoint."""

    def __init__(self, dashboard: Dashboard | None = None) -> None:
        super().__init__()
        self.dashboard = dashboard if dashboard is not None else Dashboard()
        self.mount("/socket", self.dashboard)  # phoenix.js: /socket/websocket

    @pr.get("/")
    async def page(self, request: pr.Request, response: pr.Response) -> None:
        response.html(PAGE.read_text())

    @pr.get("/log")
    async def log(self, request: pr.Request, response: pr.Response) -> None:
        """The log lines up to offset ``upto`` (the join reply's), newest ``limit``."""
        try:
            upto = int(request.query.get("upto", ""))
            limit = min(int(request.query.get("limit", "50")), 200)
        except ValueError:
            raise HTTPError(400, "upto and limit are whole numbers") from None
        if upto < 0 or limit < 1:
            raise HTTPError(400, "upto >= 0 and limit >= 1")
        kept = await self.dashboard.history_of("log", since=max(0, upto - limit))
        lines = [{"offset": p.offset, **p.payload} for p in kept if p.offset <= upto]
        response.json({"lines": lines})


# [/site]
