"""The live status page (``Config.status_page``): the server's figures, watched in a browser.

Four paths under ``base`` (``{ops_prefix}/status``), answered by the server in
front of the app (:mod:`._ops` dispatches them):

* ``base`` — the page (``GET``/``HEAD``), for a valid token only: ``?token=``
  in the URL, or the cookie the page sets when it is loaded with one
  (``HttpOnly; SameSite=Strict; Path=base``, so that a reload works once the
  page's script has taken the token out of the address bar).  Anything else
  is a 403, with no hint of the token.
* ``base/status.js`` and ``base/status.css`` — the page's script and style,
  files of the package (``peregrine_rt/static/status/``), public: they hold
  no secret.  No build step, no external resource; the page's
  Content-Security-Policy allows its own origin only.
* ``base/socket`` — a WebSocket on the server's own machinery
  (``upgrade(hooks=...)``), token checked before the handshake.  It is
  subscribed to :data:`TOPIC` on the server's hub and gets a snapshot at once,
  then one a second.

:meth:`StatusPage.run` publishes the snapshots with ``hub.publish_local``:
each worker already merges every worker's figures, so a snapshot never goes
through Redis.  It waits on an event while nobody watches, so an unwatched
page costs nothing.  A snapshot is small (:meth:`StatusPage.snapshot`):
counters are totals, and the page turns their differences between two
snapshots into rates, over the server's clock.

The page's own socket is a WebSocket like any other: it counts among the
open connections, and its snapshots among messages sent and hub deliveries.
Its topic is left out of the topics table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from ._json import dumps
from ._ops import check_token, get_or_head
from ._upgrade import upgrade
from .exceptions import HandshakeError

if TYPE_CHECKING:
    from ._hub import Hub
    from ._request import Request
    from ._response import Response
    from .websocket import WebSocket

__all__ = ["ASSETS", "COOKIE", "INTERVAL", "TOPIC", "StatusPage"]

TOPIC: Final = "peregrine:status"
"""The hub topic the page's sockets are subscribed to (local to each process)."""

INTERVAL: Final = 1.0
"""Seconds between two snapshots while someone watches."""

COOKIE: Final = "peregrine_status"
"""The cookie that carries the token once the page was loaded with ``?token=``."""

ASSETS: Final = Path(__file__).resolve().parent / "static" / "status"
"""The page, its script and its style, in the installed package."""

_ASSET_TYPES: Final = {
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
}
# The page loads its own script, style and socket, and nothing else.
_PAGE_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",  # the token may be in the URL
    "x-content-type-options": "nosniff",
}
_COUNTERS: Final = (
    "ws_received",
    "ws_sent",
    "hub_publishes",
    "hub_deliveries",
    "hub_lost",
    "slow_closed",
    "slow_dropped",
)

Endpoint = Callable[["Request", "Response"], Awaitable[None]]


class StatusPage:
    """The status page of one server process (see the module docstring).

    Args:
        figures: returns the merged figures of every worker (``Operations.figures``).
        token: what ``?token=`` (or the cookie) must be.
        base: the page's path; the others are below it.
        hub: the server's hub, which the page's sockets subscribe to.
        interval: seconds between two snapshots while someone watches.
    """

    def __init__(
        self,
        *,
        figures: Callable[[], dict[str, Any]],
        token: str,
        base: str,
        hub: Hub,
        interval: float = INTERVAL,
    ) -> None:
        self.figures = figures
        self.token = token
        self.base = base
        self.hub = hub
        self.interval = interval
        self.published = 0
        """Snapshots published to the watchers so far (those sent on open aside)."""
        self._watched = trio.Event()  # set when a socket subscribes
        self._page = (ASSETS / "index.html").read_bytes()

    def routes(self) -> dict[str, Endpoint]:
        """The paths this page answers, each with its endpoint."""
        paths: dict[str, Endpoint] = {
            self.base: self._serve_page,
            f"{self.base}/socket": self._socket,
        }
        for name in _ASSET_TYPES:
            paths[f"{self.base}/{name}"] = self._asset
        return paths

    @property
    def watchers(self) -> int:
        """How many of this process's sockets watch the page now."""
        return self.hub.count(TOPIC)

    def authorized(self, request: Request) -> bool:
        """Whether ``request`` carries the token (``?token=`` first, else the cookie)."""
        given = request.query.get("token")
        if given is None:
            given = request.cookies.get(COOKIE)
        return check_token(given, self.token)

    # -- HTTP ---------------------------------------------------------------------

    async def _serve_page(self, request: Request, response: Response) -> None:
        if not get_or_head(request, response):
            return
        if not self.authorized(request):
            _forbidden(response)
            return
        response.body = self._page
        response.headers["content-type"] = "text/html; charset=utf-8"
        for name, value in _PAGE_HEADERS.items():
            response.headers[name] = value
        if request.query.get("token") is not None:
            response.set_cookie(
                COOKIE,
                self.token,
                path=self.base,
                secure=request.scheme == "https",
                samesite="strict",
            )

    async def _asset(self, request: Request, response: Response) -> None:
        if not get_or_head(request, response):
            return
        name = request.path.rpartition("/")[2]
        response.file(
            ASSETS / name,
            content_type=_ASSET_TYPES[name],
            cache_control="no-cache",
            precompressed=False,
        )
        response.headers["x-content-type-options"] = "nosniff"

    async def _socket(self, request: Request, response: Response) -> None:
        if not self.authorized(request):
            _forbidden(response)
            return
        try:
            await upgrade(request, response, hooks=self, authenticate=None)
        except HandshakeError:
            return  # the response is the refusal already

    # -- the socket's life (upgrade hooks) ----------------------------------------

    async def on_open(self, ws: WebSocket) -> None:
        self.hub.subscribe(ws, TOPIC)
        self._watched.set()
        await ws.send(dumps(self.snapshot()))  # never an empty page

    async def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        """Any message asks for a snapshot now (the page sends none on its own)."""
        await ws.send(dumps(self.snapshot()))

    # -- snapshots ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What the page shows, from :attr:`figures`: totals, gauges, topics, closes."""
        figures = self.figures()
        counters = figures.get("counters") or {}
        gauges = figures.get("gauges") or {}
        requests = 0
        statuses: dict[str, int] = {}
        for _method, status, n in counters.get("requests") or ():
            requests += n
            kind = f"{int(status) // 100}xx"
            statuses[kind] = statuses.get(kind, 0) + n
        totals = {"requests": requests}
        totals.update({name: int(counters.get(name) or 0) for name in _COUNTERS})
        connections = gauges.get("connections") or {}
        topics = sorted(
            ((name, n) for name, n in (gauges.get("topics") or {}).items() if name != TOPIC),
            key=lambda item: (-item[1], item[0]),
        )
        return {
            "time": time.time(),
            "processes": figures.get("processes", 1),
            "redis": gauges.get("redis_up"),
            "connections": {
                kind: connections.get(kind, 0) for kind in ("http", "websocket", "sse")
            },
            "counters": totals,
            "statuses": statuses,
            "closes": dict(counters.get("ws_closes") or {}),
            "topics": [[name, n] for name, n in topics],
            "channel_topics": gauges.get("channel_topics") or 0,
            "watchers": self.watchers,
        }

    def tick(self) -> int:
        """Publish a snapshot to this process's watchers, if any; how many took it."""
        if not self.watchers:
            return 0
        self.published += 1
        return self.hub.publish_local(TOPIC, dumps(self.snapshot()))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """For the server's life: a snapshot every :attr:`interval` while someone watches."""
        task_status.started()
        while True:
            if not self.watchers:
                self._watched = trio.Event()
                await self._watched.wait()
            await trio.sleep(self.interval)
            self.tick()


def _forbidden(response: Response) -> None:
    response.text("403 the status page needs its token (?token=...)\n", status=403)
    response.headers["cache-control"] = "no-store"
