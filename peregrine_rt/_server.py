"""``Server(Handler)``: listeners, one task per connection, timeouts, graceful shutdown.

Resource handling:
    :meth:`Server.serve` owns everything it starts — listening sockets, the
    handler instance, one task per connection, the timeout reaper — in one
    nursery, and nothing outlives it.

Shutdown:
    :meth:`Server.aclose`, a signal handled by :func:`run`, or cancelling
    ``serve()`` all lead to the same graceful sequence: stop accepting, close
    idle keep-alive connections, let in-flight requests finish for up to
    ``Config.shutdown_grace`` seconds, cancel what is left, call the handler's
    ``shutdown()``.  The work runs in a shielded scope, so that a cancellation
    of ``serve()`` turns into that bounded sequence instead of dropping
    in-flight requests; ``serve()`` then re-raises the cancellation.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import types
from typing import TYPE_CHECKING, Any, Unpack

import trio

from ._admission import Admission
from ._answers import ResponseHeads
from ._batch import WriteBatch
from ._config import Config
from ._connection import NEW_CONNECTION_IDLE, HTTPConnection
from ._fdlimit import raise_fd_limit
from ._gc import GCPolicy
from ._handler import HandlerSpec, check_handler
from ._hub import Hub
from ._lag import LagMonitor
from ._logfmt import JSONFormatter
from ._metrics import Stats
from ._ops import operations
from ._options import ServerOptions
from ._outbox import CORK_LIMIT, SendScheduler
from ._poller import make_poller
from ._threads import thread_limiter
from ._transport import SocketTransport, StreamTransport, Transport
from ._trim import MallocTrim

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .handlers import HTTPHandler
    from .websocket import WebSocket

__all__ = ["Server", "install_default_logging", "serve_until_signalled"]

# Connections the reaper checks between two schedule points; also the size of the waves
# of pings and of their pongs (at 20,000 sockets, 1,000 made 9-20 ms rounds; 250 quarters it).
REAP_BATCH = 250
REAP_CANCELS = 64  # timeouts it fires between two schedule points
CONNECTION_TASK = "peregrine_rt connection"  # the trio task name of every connection

log = logging.getLogger("peregrine_rt.server")
error_log = logging.getLogger("peregrine_rt.error")
access_log = logging.getLogger("peregrine_rt.access")


def _make_hub(config: Config) -> Hub:
    if config.redis_url is None:
        return Hub()
    from ._redis_hub import RedisHub  # noqa: PLC0415 - coredis is an optional extra

    return RedisHub(config.redis_url, timeout=config.redis_timeout)


class Server:
    """An HTTP/WebSocket server for one handler class.

    Args:
        handler: the handler class (instantiated once, when serving starts), or
            an instance of one.  It is checked against the handler contract
            right here: a :class:`~peregrine_rt.exceptions.HandlerError` names
            what is missing or mistyped.
        config: a :class:`Config`; keyword arguments override its fields
            (``Server(Echo, port=0)``).

    Use ``await nursery.start(server.serve)`` (it returns the server once it
    listens; ``server.port`` is the bound port) and ``await server.aclose()``,
    or :func:`run` for a whole program with signal handling.
    """

    def __init__(
        self,
        handler: type[HTTPHandler] | HTTPHandler,
        config: Config | None = None,
        **overrides: Unpack[ServerOptions],
    ) -> None:
        self.spec: HandlerSpec = check_handler(handler)
        self._handler = handler
        config = config or Config()
        self.config = config.replace(**overrides) if overrides else config
        self.handler_instance: Any = None
        self.shutting_down = False
        self.connections: set[HTTPConnection] = set()
        self.websockets: set[WebSocket] = set()
        self.listeners: list[socket.socket] = []
        self._shutdown_requested = trio.Event()
        self._stopped = trio.Event()
        self._no_connections = trio.Event()
        self._hard_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self.heads = ResponseHeads(self.config)
        """Builds every response head this server sends (its own answers included)."""
        # A corked burst past this is written at once (a fast client never meets it).
        self.scheduler = SendScheduler(min(CORK_LIMIT, self.config.ws_outbox_size // 2))
        """The WebSocket send path's flush task and writer tasks (``peregrine_rt._outbox``)."""
        self.lag = LagMonitor()
        """Measures the event loop's lag while serving (``lag.worst``, ``lag.take_worst()``)."""
        self.gc_policy = GCPolicy(lambda: len(self.connections), self.config.gc_freeze_above)
        """Keeps the garbage collector off long-lived objects at scale (``peregrine_rt._gc``)."""
        self.malloc_trim = MallocTrim(self.config.malloc_trim_interval)
        """Hands memory Python freed back to the system on a schedule (``peregrine_rt._trim``)."""
        self.write_batch = WriteBatch() if self.config.batch_writes else None
        """Writes a pass's responses together (``Config.batch_writes``; ``_batch``)."""
        self.poller = make_poller() if self.config.read_poller else None
        """Plain TCP connections wait for bytes in its epoll (``Config.read_poller``, Linux)."""
        self.admission = Admission(self.config, self.heads)
        """Connection limits, refusals and accept() trouble (``peregrine_rt._admission``)."""
        self.hub: Hub = _make_hub(self.config)
        """The hub of this server (``ws.hub`` and ``request.hub`` in handlers)."""
        self.stats: Stats = self.hub.stats
        """This process's figures (``peregrine_rt._metrics.Stats``; ``/metrics`` shows them)."""
        self.accepting = False  # listening and taking connections (readiness)
        self.dispatch: Any = None  # the handler's handle, once serving
        # The server's own endpoints (Operations), whether responses are counted
        # (metrics) and timed (log or metrics), and the endpoints the connection
        # looks up by raw target on the app's port (None: responses not timed).
        self.ops, self.counting, self.observed, self.endpoints = operations(self)
        # What a connection calls to count a response when no access log needs it.
        self.tally = self.stats.tally if self.counting and not self.config.access_log else None

    # -- addresses ------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port of the first listener (useful with ``port=0``)."""
        for sock in self.listeners:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not listening on TCP")

    @property
    def url(self) -> str:
        """``http(s)://host:port`` of the first listener (``http+unix://path`` on a Unix socket)."""
        scheme = "https" if self.config.ssl_context else "http"
        sock = self.listeners[0]
        if sock.family == getattr(socket, "AF_UNIX", None):
            return f"{scheme}+unix://{sock.getsockname()}"
        host = sock.getsockname()[0]
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def _bind(self) -> list[socket.socket]:
        config = self.config
        if config.uds is not None:
            try:
                os.unlink(config.uds)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(config.uds)
            socks = [sock]
        else:
            socks = []
            infos = socket.getaddrinfo(
                config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            seen = set()
            for family, type_, proto, _, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                sock = socket.socket(family, type_, proto)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if config.reuse_port:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(addr)
                except BaseException:
                    sock.close()
                    raise
                socks.append(sock)
                if config.port == 0:
                    break  # one port: binding v4 and v6 to two random ports would confuse
        for sock in socks:
            sock.listen(config.backlog)
            sock.setblocking(False)
        return socks

    # -- serving --------------------------------------------------------------

    async def serve(
        self,
        *,
        sockets: Sequence[socket.socket] | None = None,
        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen as configured and serve until shut down (see the module docstring).

        Args:
            sockets: serve on these bound stream sockets instead of binding
                ``Config.host``/``port``/``uds`` (a supervisor's, systemd's
                socket activation...).  The server listens on them
                (``Config.backlog``) and closes them when it stops.

        Error handling:
            An ``OSError`` from binding (address in use, permission), or an
            exception from the handler's ``startup()`` or from ``background()``
            before it reports ready, is raised before ``task_status.started()``,
            so ``nursery.start`` raises it as itself, not in an
            ``ExceptionGroup``.  (Your own nursery then groups it on the way
            out, as for any trio task: catch it around ``nursery.start``.)
        """
        raise_fd_limit(self.config.max_connections)
        if sockets is None:
            self.listeners = self._bind()
        else:
            self.listeners = list(sockets)
            for sock in self.listeners:
                sock.listen(self.config.backlog)  # again, for a successor: the queue stays
                sock.setblocking(False)
        await self._serve(self.listeners, None, task_status)

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve connections accepted from given trio listeners (any trio Stream)."""
        await self._serve([], listeners, task_status)

    async def _serve(
        self,
        socks: list[socket.socket],
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None,
        task_status: trio.TaskStatus[Server],
    ) -> None:
        lone: BaseException | None = None
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._watch_cancellation)
                await outer.start(self._run_shielded, socks, listeners)
                task_status.started(self)
        except BaseExceptionGroup as group:
            # One failure (startup() raising, background() failing before it
            # is ready, however many nurseries deep) comes out as itself, as
            # a bind error does, not wrapped in the nurseries' groups.
            lone = group
            while isinstance(lone, BaseExceptionGroup) and len(lone.exceptions) == 1:
                lone = lone.exceptions[0]
            if isinstance(lone, (BaseExceptionGroup, trio.Cancelled)):
                raise
        finally:
            for sock in socks:
                sock.close()
            if self.config.uds is not None and socks:
                try:
                    os.unlink(self.config.uds)
                except OSError:
                    pass
        if lone is not None:
            raise lone  # out of the except block: its own context, not the group

    async def _watch_cancellation(self) -> None:
        try:
            await self._stopped.wait()
        except trio.Cancelled:
            self.request_shutdown()
            raise

    async def _run_shielded(
        self,
        socks: list[socket.socket],
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
        try:
            with trio.CancelScope(shield=True) as hard:
                self._hard_scope = hard
                await self._lifespan(socks, listeners, task_status)
        finally:
            self._stopped.set()

    async def _lifespan(
        self,
        socks: list[socket.socket],
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]] | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
        config = self.config
        thread_limiter().total_tokens = config.thread_pool_size
        handler = self._handler
        self.handler_instance = handler() if isinstance(handler, type) else handler
        self.dispatch = self.handler_instance.handle
        if self.ops is not None:
            self.ops.check(self.handler_instance)
        attach_hub = getattr(self.handler_instance, "attach_hub", None)
        if callable(attach_hub):  # HubMixin, or any handler that wants the hub
            attach_hub(self.hub)
        if self.spec.has_startup:
            await self.handler_instance.startup()
        try:
            # Two nurseries: the hub and background() outlive the connections,
            # so that on_close (shielded, bounded) can still publish and reach
            # what background() holds while the connections wind down.
            async with trio.open_nursery() as services:
                await services.start(self.hub.serve)
                await services.start(self.lag.run)
                await services.start(self.gc_policy.run)
                services.start_soon(self.malloc_trim.run)
                if self.ops is not None:
                    await services.start(self.ops.run)
                if self.spec.has_background:
                    await services.start(self._background)
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._reaper)
                    await nursery.start(self.scheduler.run)
                    if self.write_batch is not None:
                        await nursery.start(self.write_batch.run, nursery)
                    if self.poller is not None:
                        await nursery.start(self.poller.run)
                    with trio.CancelScope() as accepting:
                        async with trio.open_nursery() as accept_nursery:
                            for sock in socks:
                                accept_nursery.start_soon(self._accept_loop, sock, nursery)
                            for listener in listeners or ():
                                accept_nursery.start_soon(self._listener_loop, listener, nursery)
                            accept_nursery.start_soon(self._wait_for_shutdown, accepting)
                            self.accepting = True
                            task_status.started()
                    # Shutting down: no new connections from here on.
                    self.accepting = False
                    for sock in socks:
                        sock.close()
                    for listener in listeners or ():
                        await trio.aclose_forcefully(listener)
                    for conn in list(self.connections):
                        if conn.idle:
                            conn.scope.cancel()
                    for ws in list(self.websockets):
                        nursery.start_soon(ws.close, *self._ws_close)  # request_shutdown()
                    if self.connections:
                        with trio.move_on_after(config.shutdown_grace):
                            # A second look once connections that had no request
                            # yet have had their time to send one (Connection.idle).
                            with trio.move_on_after(NEW_CONNECTION_IDLE):
                                await self._no_connections.wait()
                            for conn in list(self.connections):
                                if conn.idle:
                                    conn.scope.cancel()
                            await self._no_connections.wait()
                    for conn in list(self.connections):
                        conn.scope.cancel()
                    nursery.cancel_scope.cancel()
                services.cancel_scope.cancel()
        finally:
            if self.spec.has_shutdown:
                with trio.move_on_after(config.shutdown_grace):
                    try:
                        await self.handler_instance.shutdown()
                    except Exception:
                        error_log.exception("%s.shutdown() raised", self.spec.name)

    async def _background(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Run the handler's ``background()`` for the server's life (see handlers.rst).

        It gets ``task_status`` if it takes one, and the server accepts
        connections once it reports ready; an exception before that fails the
        start, after it is logged and shuts the server down gracefully.
        """
        handler = self.handler_instance
        ready = False

        def started(value: object = None) -> None:
            nonlocal ready
            if not ready:
                ready = True
                task_status.started()

        status = types.SimpleNamespace(started=started)  # the task_status it is given
        try:
            if self.spec.background_reports_ready:
                await handler.background(task_status=status)
            else:
                status.started()
                await handler.background()
        except Exception:
            if not ready:
                raise
            error_log.exception("%s.background() raised; shutting down", self.spec.name)
            self.request_shutdown()
        else:
            status.started()  # returned without reporting: nothing more to wait for

    async def _wait_for_shutdown(self, accepting: trio.CancelScope) -> None:
        await self._shutdown_requested.wait()
        accepting.cancel()

    def request_shutdown(self, ws_code: int = 1001, reason: str = "server shutting down") -> None:
        """Start the graceful shutdown (see the module docstring) without waiting for it.

        Open WebSockets are closed with ``ws_code`` and ``reason``: 1001 (going
        away) by default; the worker supervisor's rolling restart passes 1012
        (service restart), which tells clients to reconnect at once.  The first
        request wins: a later call, with other values, changes nothing.
        """
        if not self.shutting_down:
            self.shutting_down = True
            self._ws_close = (ws_code, reason)  # read once _shutdown_requested is set
            log.info("shutting down (grace %.1f s)", self.config.shutdown_grace)
            self._shutdown_requested.set()

    @property
    def refused_connections(self) -> int:
        """Connections refused with 503 at ``max_connections`` (or the per-IP cap) so far."""
        return self.admission.refused

    @property
    def serving(self) -> bool:
        """Whether :meth:`serve` has started and not finished yet."""
        return self._nursery is not None and not self._stopped.is_set()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`serve` has finished."""
        return self._stopped.is_set()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`serve` has finished (shutdown complete, handler's ``shutdown()`` run).

        Returns at once if it has finished already.
        """
        await self._stopped.wait()

    async def aclose(self) -> None:
        """Shut down gracefully and wait until done (idempotent; see the module docstring)."""
        self.request_shutdown()
        if self._hard_scope is not None:
            await self._stopped.wait()

    def abort(self) -> None:
        """Stop at once: cancel every connection and the handler's work now."""
        self.request_shutdown()
        for conn in list(self.connections):  # handle_stream() ones run outside our scope
            conn.scope.cancel()
        if self._hard_scope is not None:
            self._hard_scope.cancel()

    # -- connections ----------------------------------------------------------

    async def _accept_loop(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        nodelay = sock.family in (socket.AF_INET, socket.AF_INET6)
        admission = self.admission
        is_tls = self.config.ssl_context is not None
        while True:
            try:
                conn, addr = sock.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await admission.backoff(exc, len(self.connections))
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if admission.failures:
                admission.recovered()
            conn.setblocking(False)
            if nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = (addr[0], addr[1]) if isinstance(addr, tuple) else None
            if admission.full(len(self.connections), client):
                if is_tls:  # a plain-text 503 would be garbage to a TLS client
                    admission.note_refusal(addr)
                    conn.close()
                else:
                    admission.refuse(conn, nursery, addr)
                continue
            transport: Transport
            if is_tls:
                stream = trio.SSLStream(
                    trio.SocketStream(trio.socket.from_stdlib_socket(conn)),
                    self.config.ssl_context,  # type: ignore[arg-type]  # checked by is_tls
                    server_side=True,
                )
                transport = StreamTransport(stream, client, "https")
            else:
                transport = SocketTransport(conn, client, self.write_batch, self.poller)
            self._start_connection(nursery, transport)

    async def _listener_loop(
        self, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery
    ) -> None:
        while True:
            stream = await listener.accept()
            client = None
            if isinstance(stream, trio.SocketStream):
                peer = stream.socket.getpeername()
                client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
            if self.admission.full(len(self.connections), client):
                await self.admission.refuse_stream(stream)
                continue
            self._start_connection(nursery, StreamTransport(stream, client))

    def _start_connection(self, nursery: trio.Nursery, transport: Transport) -> None:
        # One name for every connection task: trio would format one per task.
        nursery.start_soon(self._run_connection, self._track(transport), name=CONNECTION_TASK)

    def _track(self, transport: Transport) -> HTTPConnection:
        """A new connection over ``transport``, counted (``_run_connection`` uncounts it)."""
        conn = HTTPConnection(self, transport)
        self.connections.add(conn)
        self.admission.opened(transport.client)
        if len(self.connections) == 1:
            self._no_connections = trio.Event()
        return conn

    async def _run_connection(self, conn: HTTPConnection) -> None:
        try:
            await conn.run()
        except Exception:
            error_log.exception("connection task failed")
        finally:
            self.connections.discard(conn)
            self.admission.closed(conn.transport.client)
            if not self.connections:
                self._no_connections.set()

    async def handle_stream(
        self, stream: trio.abc.Stream, client: tuple[str, int] | None = None
    ) -> None:
        """Serve one connection over ``stream`` until it closes (the server must be serving).

        This is how tests (and ``peregrine_rt.testing``) talk to a server through
        memory streams: the same parser, limits, timeouts and handler code as
        for sockets.
        """
        if self._nursery is None or self.shutting_down:
            raise RuntimeError(
                "the server is not serving (start serve() or serve_listeners() first)"
            )
        if self.admission.full(len(self.connections), client):
            await self.admission.refuse_stream(stream)
            return
        await self._run_connection(self._track(StreamTransport(stream, client)))

    async def _reaper(self) -> None:
        """Enforce the header, body, keep-alive and send timeouts of every connection."""
        config = self.config
        timeouts = [
            config.header_timeout,
            config.body_timeout,
            config.keep_alive_timeout,
            config.send_timeout,
            config.ws_ping_timeout,
            config.ws_close_timeout,
        ]
        if config.min_rate is not None:
            timeouts.append(config.min_rate_grace)
        if config.ws_ping_interval is not None:
            timeouts.append(config.ws_ping_interval)
        tick = max(0.01, min(min(timeouts) / 4, 1.0))
        await trio.sleep(tick)
        while True:
            start = trio.current_time()
            now = start
            # In batches: with 20,000 connections the checks themselves take
            # a while, and each timeout wakes a task that has cleaning up to
            # do; a mass timeout is unwound REAP_CANCELS at a time, with other
            # tasks served in between.  The batches of a sweep are spread over
            # the tick, so that the pings due in it (and the pongs, each waking
            # a task) come in small waves, not at once.
            cancelled = 0
            watched: list[HTTPConnection | WebSocket] = [*self.connections, *self.websockets]
            batches = max(1, -(-len(watched) // REAP_BATCH))
            for checked, item in enumerate(watched, 1):
                if item.check_timeout(now):
                    cancelled += 1
                    if not cancelled % REAP_CANCELS:
                        await trio.lowlevel.checkpoint()
                        now = trio.current_time()
                elif not checked % REAP_BATCH:
                    await trio.sleep_until(start + tick * (checked // REAP_BATCH) / batches)
                    now = trio.current_time()
            await trio.sleep_until(start + tick)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))


def install_default_logging(level: int | str | None, log_format: str = "text") -> None:
    """Log ``peregrine_rt``'s lines to stderr, as text or JSON (unless the app set logging up)."""
    root = logging.getLogger("peregrine_rt")
    if level is not None:
        root.setLevel(level)
    if not logging.getLogger().handlers and not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JSONFormatter()
            if log_format == "json"
            else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
        )
        root.addHandler(handler)
        if level is None:
            root.setLevel(logging.INFO)


async def serve_until_signalled(server: Server) -> None:
    """Serve; SIGINT/SIGTERM start a graceful shutdown, a second one stops at once."""
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(*_SIGNALS) as signals:
                async for signum in signals:
                    if signum == getattr(signal, "SIGHUP", None):
                        log.warning(
                            "SIGHUP ignored: one process cannot restart without dropping "
                            "its connections; serve with --workers N to restart with SIGHUP"
                        )
                        continue
                    if not server.shutting_down:
                        log.info("received %s", signal.Signals(signum).name)
                        server.request_shutdown()
                    else:
                        log.warning("second signal: stopping now")
                        server.abort()

        nursery.start_soon(watch_signals)
        await nursery.start(server.serve)
        log.info("serving %s on %s", server.spec.name, server.url)
        await server.wait_stopped()
        nursery.cancel_scope.cancel()
