"""The server's own endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and the status page.

All are opt-in (``Config.metrics``, ``health``, ``status_page``) and live
under ``Config.ops_prefix``.  :class:`Operations` answers them in front of
the app (the connection looks the request's raw target up in
:attr:`~Operations.targets` before calling the app's ``handle``; with none on,
requests reach the app with no extra step), or on a port of their own
(``Config.metrics_port``, served by a small second :class:`Server` in the
same process).

A Router app that has a route on one of these paths is refused when the
server is built (:meth:`Operations.check`): the app's route would never be
reached.  For other handlers the server's endpoints simply come first.

Readiness (``/readyz``): the server listens, its hub is linked (always, in
memory; a RedisHub while connected to Redis) and no shutdown is under way.
Liveness (``/healthz``): the process answers at all.  Each answer is a
small JSON object saying which checks passed.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._metrics import (
    CONTENT_TYPE,
    FOLD_BATCH,
    FOLD_INTERVAL,
    FOLD_MIN,
    SHARE_INTERVAL,
    SharedFigures,
    merge,
    render,
)

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response
    from ._server import Server

__all__ = [
    "TOPIC_LIMIT",
    "Operations",
    "check_token",
    "get_or_head",
    "operations",
    "sample",
    "temporary_metrics_dir",
]

log = logging.getLogger("peregrine_rt.server")

TOPIC_LIMIT = 50  # topics a snapshot lists (the busiest), for the status page
Endpoint = Callable[["Request", "Response"], Awaitable[None]]


class Operations:
    """The operations endpoints of one server (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        config = server.config
        prefix = config.ops_prefix
        self.paths: dict[str, Endpoint] = {}
        if config.metrics:
            self.paths[f"{prefix}/metrics"] = self._metrics
        if config.health:
            self.paths[f"{prefix}/healthz"] = self._healthz
            self.paths[f"{prefix}/readyz"] = self._readyz
        self.status: Any = None
        self.status_token: str | None = None
        if config.status_page:
            from ._status import StatusPage  # noqa: PLC0415 - only when asked for

            self.status_token = config.status_token or secrets.token_urlsafe(18)
            self.status = StatusPage(
                figures=self.figures,
                token=self.status_token,
                base=f"{prefix}/status",
                hub=server.hub,
            )
            self.paths.update(self.status.routes())
        self.shared: SharedFigures | None = None
        if config.metrics_dir is not None:
            self.shared = SharedFigures(config.metrics_dir)
        # The same, by the request target's raw bytes: the lookup every request
        # pays when the endpoints share the app's port (no path decoding).
        self.targets: dict[bytes, Endpoint] = {
            path.encode("ascii"): endpoint for path, endpoint in self.paths.items()
        }
        self.port: int | None = None  # the bound metrics_port, once listening
        self._own_port = config.metrics_port is not None

    # -- building -----------------------------------------------------------------

    def check(self, handler: object) -> None:
        """Refuse an app whose routes (a Router's) cover one of these paths."""
        if self._own_port:
            return  # on a port of their own: no clash possible
        for _ in range(16):  # through middleware (CORS(Router), ...) to the router
            if callable(getattr(handler, "route_for", None)):
                break
            handler = getattr(handler, "app", None)
            if handler is None:
                return
        match = getattr(handler, "route_for", None)
        if not callable(match):
            return
        for path in self.paths:
            found = match(path)
            if found is not None:
                from .exceptions import HandlerError  # noqa: PLC0415

                prefix = self.server.config.ops_prefix
                raise HandlerError(
                    f"{path} is served by the server (Config.ops_prefix={prefix!r}), but the "
                    f"app has a route for it ({found}): set ops_prefix, or metrics_port"
                )

    @property
    def shares_port(self) -> bool:
        """Whether these endpoints answer on the app's port (found there by :attr:`targets`)."""
        return not self._own_port and bool(self.paths)

    async def serve_own(self, request: Request, response: Response) -> None:
        """The handler of ``metrics_port``: these paths, 404 for the rest."""
        endpoint = self.paths.get(request.path)
        if endpoint is None:
            response.text("not found\n", status=404)
        else:
            await endpoint(request, response)

    # -- the figures --------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """This process's figures, with every other worker's when they share a directory."""
        own = self.server.stats.snapshot()
        if self.shared is None:
            return merge([own])
        # What a scrape shows of this worker is on disk before it is shown: a
        # next scrape, answered by another worker, cannot show less (a counter
        # going down would read as a reset to Prometheus).
        self.shared.write(own)
        return self.shared.figures(own)

    async def _metrics(self, request: Request, response: Response) -> None:
        if not get_or_head(request, response):
            return
        response.body = render(self.figures())
        response.headers["content-type"] = CONTENT_TYPE
        response.headers["cache-control"] = "no-store"

    async def _healthz(self, request: Request, response: Response) -> None:
        if not get_or_head(request, response):
            return
        _json(response, 200, {"status": "ok"})

    def readiness(self) -> dict[str, bool]:
        """The checks ``/readyz`` makes, by name."""
        server = self.server
        return {
            "listening": server.accepting,
            "hub": bool(getattr(server.hub, "connected", True)),
            "not_shutting_down": not server.shutting_down,
        }

    async def _readyz(self, request: Request, response: Response) -> None:
        if not get_or_head(request, response):
            return
        checks = self.readiness()
        ready = all(checks.values())
        _json(
            response, 200 if ready else 503, {"status": "ready" if ready else "not ready", **checks}
        )

    # -- running ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """For the server's life: share figures, serve ``metrics_port``, tick the status page."""
        async with trio.open_nursery() as nursery:
            if self.server.counting:
                nursery.start_soon(self._fold)
            if self.shared is not None:
                nursery.start_soon(self._share)
            if self.status is not None:
                await nursery.start(self.status.run)
            if self._own_port:
                await nursery.start(self._serve_own_port)
            if self.status is not None and self.server.config.status_token is None:
                # Made up here, so shown once; a token from the config is never logged.
                where = self._status_url()
                log.info("status page at %s?token=%s", where, self.status_token)
            task_status.started()

    def _status_url(self) -> str:
        server = self.server
        config = server.config
        path = f"{config.ops_prefix}/status"
        try:
            if self._own_port:
                host = config.host if ":" not in config.host else f"[{config.host}]"
                return f"http://{host}:{self.port}{path}"
            return f"{server.url}{path}"
        except (RuntimeError, IndexError):
            return path

    async def _fold(self) -> None:
        stats = self.server.stats
        interval = FOLD_INTERVAL
        while True:  # the responses tallied stay a short list between scrapes
            await trio.sleep(interval)
            folded = stats.fold()
            # About FOLD_BATCH responses per fold at the rate just seen.
            interval = (
                max(FOLD_MIN, min(FOLD_INTERVAL, interval * FOLD_BATCH / folded))
                if folded
                else FOLD_INTERVAL
            )

    async def _share(self) -> None:
        assert self.shared is not None
        shared = self.shared
        try:
            while True:
                # In this thread (a small file): writes stay in order, one at a time.
                shared.write(self.server.stats.snapshot())
                await trio.sleep(SHARE_INTERVAL)
        finally:
            with trio.CancelScope(shield=True):
                try:
                    shared.write(self.server.stats.snapshot())  # the last word on exit
                except OSError:
                    pass

    async def _serve_own_port(self, *, task_status: trio.TaskStatus[None]) -> None:
        from ._server import Server  # noqa: PLC0415 - the same layer, at run time

        config = self.server.config
        assert config.metrics_port is not None
        inner = Server(
            _OwnPort(self),
            host=config.host,
            port=config.metrics_port,
            reuse_port=config.reuse_port,
            max_connections=64,
            ssl_context=None,
            uds=None,
            access_log=False,
            gc_freeze_above=None,
            redis_url=None,
            metrics=False,
            health=False,
            status_page=False,
            metrics_port=None,
            metrics_dir=None,
            shutdown_grace=min(1.0, config.shutdown_grace),
        )
        await trio.lowlevel.checkpoint()
        async with trio.open_nursery() as nursery:
            await nursery.start(inner.serve)
            self.port = inner.port
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                inner.abort()


class _OwnPort:
    """The handler of ``Config.metrics_port``: the operations endpoints only."""

    def __init__(self, ops: Operations) -> None:
        self._ops = ops

    async def handle(self, request: Request, response: Response) -> None:
        await self._ops.serve_own(request, response)


def _json(response: Response, status: int, body: dict[str, Any]) -> None:
    response.body = (json.dumps(body) + "\n").encode()
    response.status = status
    response.headers["content-type"] = "application/json"
    response.headers["cache-control"] = "no-store"


def get_or_head(request: Request, response: Response) -> bool:
    """Whether ``request`` reads (GET, HEAD); else ``response`` is the 405 with ``Allow``."""
    if request.method in ("GET", "HEAD"):
        return True
    response.text("method not allowed\n", status=405)
    response.headers["allow"] = "GET, HEAD"
    return False


def operations(
    server: Server,
) -> tuple[Operations | None, bool, bool, dict[bytes, Endpoint] | None]:
    """Wire a new server's figures and endpoints: what ``Server.__init__`` keeps.

    Returns ``(ops, counting, observed, endpoints)``: the :class:`Operations`
    (None when no endpoint is on), whether responses are counted (metrics,
    the status page) and observed (also the access log), and the endpoints
    the connection looks a raw target up in before the app (``{}`` when only
    timing is needed, None when responses are neither counted nor logged).
    """
    config = server.config
    server.stats.sample = partial(sample, server)
    server.admission.stats = server.stats  # a connection refused at the limit is a 503
    counting = config.metrics or config.status_page
    observed = config.access_log or counting
    ops = Operations(server) if config.metrics or config.health or config.status_page else None
    endpoints: dict[bytes, Endpoint] | None = None
    if ops is not None and ops.shares_port:
        endpoints = ops.targets
    elif observed:
        endpoints = {}
    return ops, counting, observed, endpoints


def sample(server: Server) -> dict[str, Any]:
    """The gauges that are a matter of looking: connections by kind, Redis, busiest topics.

    Topics only for the status page (``/metrics`` shows none): counting every
    topic's subscribers on each scrape would be work for nothing.
    """
    websockets = len(server.websockets)
    sse = server.stats.sse_streams
    hub = server.hub
    connected = getattr(hub, "connected", None)
    topics = {}
    names = hub.topics() if server.config.status_page else None
    if names:
        counted = sorted(((hub.count(name), name) for name in names), reverse=True)
        topics = {name: count for count, name in counted[:TOPIC_LIMIT]}
    return {
        "connections": {
            "http": max(0, len(server.connections) - websockets - sse),
            "websocket": websockets,
            "sse": sse,
        },
        "redis_up": None if connected is None else int(bool(connected)),
        "topics": topics,
    }


def check_token(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token`` (constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def temporary_metrics_dir() -> str:
    """A fresh directory for the workers' shared figures (the supervisor's)."""
    return tempfile.mkdtemp(prefix="peregrine-metrics-")
