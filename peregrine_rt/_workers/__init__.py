"""Worker processes: ``peregrine-rt app:Handler --workers N`` and ``run(Handler, workers=N)``.

The parent is a supervisor only: it never imports the handler's module nor
serves a connection.  It

1. binds the address once, with ``SO_REUSEPORT`` and without listening, so the
   port is reserved (and ``port=0`` becomes one concrete port) for as long as
   the parent lives; and binds one more socket per worker *slot* (slot i is
   "worker i", whichever process holds it).  It passes the slot's socket to
   each worker it starts there, which listens on it: the kernel spreads new
   connections over the slots' accept queues (one queue per worker, an even
   share), and a queue outlives the process serving it, since the parent
   holds every slot's socket;
2. starts worker 0 and waits until it serves (a worker that cannot start the
   first time — import error, handler contract, ``startup()`` failing — stops
   the whole program with its exit status instead of a restart loop), then
   the others;
3. restarts a worker that exits, logging why, after a delay that doubles with
   each quick failure (``BACKOFF_BASE`` up to ``BACKOFF_MAX``; a worker that
   served ``STABLE_AFTER`` seconds starts the count again);
4. keeps the slot's socket for a restart at once, so the successor accepts
   what queued meanwhile; before a delayed one, or after a worker that never
   served, it closes it (the kernel then sends new connections to the other
   slots) and binds a fresh one for the next try;
5. on SIGHUP replaces the workers one slot at a time (``_Supervisor._roll``):
   a new process (so the handler's module is imported afresh) on the same
   socket; once it serves, the old one gets ``RESTART``, stops accepting
   (its queue is the successor's now), waits up to ``HANDOVER_WAIT`` for the
   first request of connections it has just accepted, and shuts down
   gracefully with WebSockets closed 1012 (service restart); the next slot
   starts when it is gone (killed after ``Config.shutdown_grace +
   KILL_MARGIN``).  If a new worker cannot start, the restart stops there and
   the workers serving keep serving; a SIGHUP during a restart queues one more;
6. on SIGINT or SIGTERM tells every worker to stop (each runs the usual
   graceful shutdown), on a second signal to stop at once, kills workers still
   running ``Config.shutdown_grace + KILL_MARGIN`` seconds after the first
   signal, and returns when all are gone.

Why the parent holds the sockets: with one listening socket per worker
process, a closing worker's socket takes its accept queue with it, and the
kernel resets every connection queued there (Linux can move them only with
``net.ipv4.tcp_migrate_req``, a system setting, or eBPF), so a restart under
load would fail requests.  One socket inherited by every worker (gunicorn's
way) keeps its queue but wakes every worker for each connection and lets the
least busy take most of them.  A socket per slot, held by the parent, keeps
both the kernel's even spread and the queue across the handover.

Each worker is ``python -c ... CONTROL LISTENING...`` (``_worker.py``) in its
own process group (a Ctrl-C in a terminal reaches the parent only).  A socket
pair connects each worker to the parent: the parent sends the plan (a pickled
:class:`WorkerPlan`) down it, then ``STOP``, ``ABORT`` or ``RESTART``; the
worker answers ``ready`` once it serves; and end-of-file tells a worker its
parent is gone (even killed with SIGKILL), upon which it shuts down
gracefully.  Stop requests go through the socket, not signals, so a worker
that also gets SIGTERM directly (systemd signals the whole control group)
still shuts down gracefully, once: in a worker any number of signals only
ever mean "shut down gracefully".
"""

from __future__ import annotations

import logging
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .._metrics import clear_shared_figures
from .._ops import temporary_metrics_dir
from . import _worker
from ._plan import ABORT, LENGTH, READY, RESTART, STOP, WorkerPlan, handler_target, install_logging
from ._worker import worker_main

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["WorkerPlan", "handler_target", "run_workers", "worker_main"]

log = logging.getLogger("peregrine_rt.workers")

BACKOFF_BASE = 0.1  # seconds before restarting a worker that failed quickly once
BACKOFF_MAX = 10.0  # the delay doubles per quick failure, up to this
STABLE_AFTER = 10.0  # a worker that served this long resets the failure count
KILL_MARGIN = 3.0  # seconds past shutdown_grace before stragglers get SIGKILL
_WORKER_CODE = "import sys; from peregrine_rt._workers import worker_main; sys.exit(worker_main())"


def _bind(socks: list[socket.socket], family: int, addr: tuple[Any, ...]) -> socket.socket:
    """A TCP socket bound to ``addr`` with SO_REUSEPORT, appended to ``socks``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    socks.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(addr)
    return sock


def _reserve(config: Config) -> list[socket.socket]:
    """Bind (not listen) every address of ``config`` with SO_REUSEPORT; OSError if taken."""
    infos = socket.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, _, _, _, addr in infos:
            if (family, addr) not in seen:
                seen.add((family, addr))
                _bind(socks, family, addr)
                if config.port == 0:
                    break  # as Server does: one address when the port is picked for us
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _slot_sockets(reserved: list[socket.socket]) -> list[socket.socket]:
    """A socket bound to each reserved address: one slot's, its worker listens (step 1)."""
    socks: list[socket.socket] = []
    try:
        for sock in reserved:
            _bind(socks, sock.family, sock.getsockname())
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def run_workers(
    handler: object,
    config: Config,
    *,
    log_level: int | str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    app_dir: str | None = None,
    asgi: bool = False,
) -> int:
    """Serve with ``config.workers`` supervised worker processes; the exit status.

    ``handler`` is a class (imported by the workers as ``module:qualname``) or
    a ``MODULE:ATTR`` string (imported only by the workers); with ``asgi``,
    that string names an ASGI app, which each worker wraps in ``ASGI``.  Returns when the
    workers are gone: 0 after a clean shutdown, else the status of worker 0
    when it could not start, or 1 when a worker stopped badly on shutdown.

    Error handling:
        :class:`HandlerError` for a handler class the workers cannot import,
        ``ValueError`` for options that cannot cross processes (a Unix socket,
        an ``SSLContext``: use certfile/keyfile), ``OSError`` when the address
        cannot be bound — all before any worker starts.
    """
    if _worker.in_worker:
        raise RuntimeError(
            "run(..., workers > 1) was called inside a worker process: in the script "
            "that starts the server, call it under `if __name__ == '__main__':`"
        )
    if config.uds is not None:
        raise ValueError("worker processes share a TCP port (SO_REUSEPORT), not a Unix socket")
    if config.ssl_context is not None:
        raise ValueError(
            "an ssl.SSLContext cannot be sent to worker processes: "
            "use peregrine-rt --certfile/--keyfile"
        )
    if isinstance(handler, str):
        target, main_path = handler, None
        name = handler
    else:
        target, main_path = handler_target(handler)
        name = target.partition(":")[2]
    reserved = _reserve(config)
    shared_dir: str | None = None
    held: list[socket.socket] = []  # the metrics port's reservation
    held_port = 0
    try:
        host, port = reserved[0].getsockname()[:2]
        worker_config = config.replace(
            host=host if config.port == 0 else config.host,
            port=port,
            workers=1,
            reuse_port=True,
        )
        if config.metrics_port is not None:
            # Every worker serves the metrics port too (SO_REUSEPORT); 0 becomes
            # one concrete port here, held for the supervisor's life.
            held = _reserve(config.replace(port=config.metrics_port))
            held_port = held[0].getsockname()[1]
            worker_config = worker_config.replace(metrics_port=held_port)
        if config.status_page and config.status_token is None:
            # One token for every worker: a page and its socket may reach different ones.
            worker_config = worker_config.replace(status_token=secrets.token_urlsafe(18))
        if config.metrics_dir is not None:
            clear_shared_figures(config.metrics_dir)  # a past run's workers are not these
        elif config.metrics or config.status_page:
            # One scrape covers every worker: each writes its figures here
            # (peregrine_rt._metrics.SharedFigures); removed when all are gone.
            shared_dir = temporary_metrics_dir()
            worker_config = worker_config.replace(metrics_dir=shared_dir)
        plan = WorkerPlan(
            target=target,
            config=worker_config,
            main_path=main_path,
            certfile=certfile,
            keyfile=keyfile,
            log_level=log_level,
            sys_path=list(sys.path),
            app_dir=app_dir,
            asgi=asgi,
        )
        install_logging(log_level, config.log_format)
        scheme = "https" if certfile else "http"
        shown = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{shown}:{port}"
        if config.status_page and config.status_token is None:
            where = url if config.metrics_port is None else f"{scheme}://{shown}:{held_port}"
            log.info(
                "status page at %s%s/status?token=%s",
                where,
                config.ops_prefix,
                worker_config.status_token,
            )
        supervisor = _Supervisor(plan, config.workers, name, url, reserved)
        return trio.run(supervisor.run)
    finally:
        for sock in reserved + held:
            sock.close()
        if shared_dir is not None:
            shutil.rmtree(shared_dir, ignore_errors=True)


@dataclass(eq=False)
class _Worker:
    """One worker process, as the supervisor sees it."""

    index: int  # its slot
    process: trio.Process
    control: trio.SocketStream
    raw: socket.socket  # the control socket's stdlib object, for a send from sync code
    ready_at: float | None = None
    retiring: bool = False  # replaced by a rolling restart: its exit is expected
    gone: trio.Event = field(default_factory=trio.Event)  # exited, its control socket closed


class _Supervisor:
    def __init__(
        self, plan: WorkerPlan, count: int, name: str, url: str, reserved: list[socket.socket]
    ) -> None:
        self.payload = pickle.dumps(plan)
        self.grace = plan.config.shutdown_grace
        self.redis_url = plan.config.redis_url
        self.count = count
        self.name = name
        self.url = url
        self.reserved = reserved
        self.sockets: dict[int, list[socket.socket]] = {}  # each slot's listening sockets
        self.slots: dict[int, _Worker] = {}  # each slot's current worker
        self.live: set[_Worker] = set()  # every worker process not reaped yet
        self.ever_ready: set[int] = set()
        self.stopping = False
        self.stop_requested = trio.Event()
        self.first_outcome = trio.Event()  # worker 0 serves, or failed, or a signal came
        self.restarts_pending = 0  # SIGHUPs not yet acted upon
        self.exit_code = 0
        self._nursery: trio.Nursery | None = None
        self._slot_nursery: trio.Nursery | None = None
        self._rolling = False

    async def run(self) -> int:
        try:
            async with trio.open_nursery() as outer:
                self._nursery = outer
                await outer.start(self._watch_signals)
                async with trio.open_nursery() as slots:
                    self._slot_nursery = slots
                    slots.start_soon(self._keep, 0)
                    await self.first_outcome.wait()
                    if not self.stopping:
                        for index in range(1, self.count):
                            slots.start_soon(self._keep, index)
                outer.cancel_scope.cancel()  # every worker is gone: stop the watchers
        finally:
            for index in list(self.sockets):
                self._close_sockets(index)
        if self.ever_ready:
            log.info("stopped")
        return self.exit_code

    # -- listening sockets --------------------------------------------------------

    def _sockets_of(self, index: int) -> list[socket.socket]:
        """The slot's sockets, bound on first use (see step 1)."""
        if index not in self.sockets:
            self.sockets[index] = _slot_sockets(self.reserved)
        return self.sockets[index]

    def _close_sockets(self, index: int) -> None:
        for sock in self.sockets.pop(index, ()):
            sock.close()

    # -- one slot: start, watch, restart ------------------------------------------

    async def _keep(self, index: int) -> None:
        failures = 0
        while not self.stopping:
            worker = self.slots.get(index)
            if worker is None or worker.gone.is_set():
                worker = await self._spawn(index)
                self.slots[index] = worker
                ready = await self._wait_ready(worker)
                if ready:
                    self._on_ready(worker)
            else:
                ready = True  # handed over by a rolling restart, serving already
            await worker.gone.wait()
            if self.slots[index] is not worker:
                continue  # a rolling restart replaced it: watch its successor
            returncode = worker.process.returncode
            assert returncode is not None
            if self.stopping:
                return
            if index == 0 and not ready and not self.ever_ready:
                if returncode != 2:  # 2: the worker printed a one-line usage error itself
                    log.error(
                        "worker 0 (pid %d) %s before serving; stopping",
                        worker.process.pid,
                        _describe(returncode),
                    )
                self.exit_code = returncode if returncode > 0 else 1
                self.stopping = True
                self.first_outcome.set()
                return
            quick = worker.ready_at is None or (
                trio.current_time() - worker.ready_at < STABLE_AFTER
            )
            failures = failures + 1 if quick else 0
            delay = 0.0 if failures == 0 else min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1))
            if delay or not ready:  # step 4: no worker would take this queue soon
                self._close_sockets(index)  # before the log line: a client reading it may connect
            log.warning(
                "worker %d (pid %d) %s%s; restarting it in %.1f s",
                index,
                worker.process.pid,
                _describe(returncode),
                "" if ready else " before serving",
                delay,
            )
            with trio.move_on_after(delay):
                await self.stop_requested.wait()

    async def _spawn(self, index: int) -> _Worker:
        """Start a worker process for slot ``index`` (reaped by :meth:`_reap`)."""
        ours, theirs = socket.socketpair()
        listening = [sock.fileno() for sock in self._sockets_of(index)]
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno()), *map(str, listening)],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *listening),
                process_group=0,  # a terminal's Ctrl-C reaches the parent, which forwards it
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        control = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        worker = _Worker(index, process, control, ours)
        self.live.add(worker)
        assert self._slot_nursery is not None
        self._slot_nursery.start_soon(self._reap, worker)
        message = LENGTH.pack(len(self.payload)) + self.payload
        if self.stopping:  # a signal came while it was being started
            message += STOP
        try:
            await control.send_all(message)
        except trio.BrokenResourceError:
            pass  # it died already; process.wait() says how
        return worker

    async def _reap(self, worker: _Worker) -> None:
        returncode = await worker.process.wait()
        await worker.control.aclose()
        self.live.discard(worker)
        if (self.stopping or worker.retiring) and returncode not in (0, -signal.SIGTERM):
            log.warning(
                "worker %d (pid %d) %s", worker.index, worker.process.pid, _describe(returncode)
            )
            if self.stopping:
                self.exit_code = 1
        worker.gone.set()

    async def _wait_ready(self, worker: _Worker) -> bool:
        """True once the worker listens; False if it exits first."""
        received = b""
        while len(received) < len(READY):
            try:
                data = await worker.control.receive_some(64)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            if not data:
                return False
            received += data
        return received == READY

    def _on_ready(self, worker: _Worker) -> None:
        index = worker.index
        worker.ready_at = trio.current_time()
        log.info("worker %d (pid %d) is serving", index, worker.process.pid)
        first_time = index not in self.ever_ready
        self.ever_ready.add(index)
        if index == 0 and not self.first_outcome.is_set():
            self.first_outcome.set()
            if self.redis_url is None:
                log.warning(
                    "%d workers without Redis: topics (the hub) do not cross processes, so "
                    "a message published in one worker reaches only that worker's "
                    "subscribers; use --redis URL (Config.redis_url)",
                    self.count,
                )
        if first_time and len(self.ever_ready) == self.count:
            log.info("serving %s with %d workers on %s", self.name, self.count, self.url)

    # -- rolling restart (SIGHUP) ---------------------------------------------------

    async def _roll(self) -> None:
        """Replace every worker, one slot at a time (step 5); again if SIGHUP came meanwhile."""
        self._rolling = True
        try:
            while self.restarts_pending and not self.stopping:
                self.restarts_pending = 0
                started = trio.current_time()
                log.info("restarting %d workers, one at a time", self.count)
                for index in range(self.count):
                    if self.stopping or not await self._replace(index):
                        break
                else:
                    log.info(
                        "restart done: %d workers replaced in %.1f s",
                        self.count,
                        trio.current_time() - started,
                    )
        finally:
            self._rolling = False

    async def _replace(self, index: int) -> bool:
        """Start a new worker on slot ``index``, then retire the old one; False on failure."""
        old = self.slots.get(index)
        if old is None or old.gone.is_set():
            return True  # no worker there now: the next one it starts has the new code
        new = await self._spawn(index)
        if not await self._wait_ready(new):
            await new.gone.wait()
            if self.stopping:
                return False
            assert new.process.returncode is not None
            log.error(
                "restart stopped: the new worker %d (pid %d) %s before serving; the "
                "workers that are serving keep serving",
                index,
                new.process.pid,
                _describe(new.process.returncode),
            )
            return False
        if self.stopping:
            return False
        # The slot is the new worker's from here on.  Retire whichever worker
        # holds it now: the old one, or one started after the old one crashed.
        old = self.slots[index]
        self.slots[index] = new
        self._on_ready(new)
        old.retiring = True
        log.info(
            "worker %d (pid %d) replaces pid %d, which finishes its requests "
            "and closes its WebSockets with 1012",
            index,
            new.process.pid,
            old.process.pid,
        )
        _tell(old, RESTART)
        with trio.move_on_after(self.grace + KILL_MARGIN):
            await old.gone.wait()
            return True
        log.warning(
            "worker %d (pid %d) still running %.1f s after its restart; killing it",
            index,
            old.process.pid,
            self.grace + KILL_MARGIN,
        )
        old.process.kill()
        return True

    # -- signals -------------------------------------------------------------------

    async def _watch_signals(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    self._on_sighup()
                elif not self.stop_requested.is_set():
                    log.info("received %s; stopping %d workers", name, len(self.live))
                    self.stopping = True
                    self.stop_requested.set()
                    self.first_outcome.set()
                    assert self._nursery is not None
                    self._nursery.start_soon(self._kill_stragglers)
                    self._tell_all(STOP)
                else:
                    log.warning("second signal: workers stop now")
                    self._tell_all(ABORT)

    def _on_sighup(self) -> None:
        if self.stopping:
            return
        if len(self.ever_ready) < self.count:
            log.warning("received SIGHUP while the workers are starting; ignored")
            return
        self.restarts_pending += 1
        if self._rolling:
            log.info("received SIGHUP during a restart: another one follows it")
        else:
            log.info("received SIGHUP")
            assert self._slot_nursery is not None
            self._slot_nursery.start_soon(self._roll)

    def _tell_all(self, message: bytes) -> None:
        for worker in self.live:
            _tell(worker, message)

    async def _kill_stragglers(self) -> None:
        await trio.sleep(self.grace + KILL_MARGIN)
        for worker in self.live:
            log.warning(
                "worker %d (pid %d) still running %.1f s after the signal; killing it",
                worker.index,
                worker.process.pid,
                self.grace + KILL_MARGIN,
            )
            worker.process.kill()


def _tell(worker: _Worker, message: bytes) -> None:
    try:
        worker.raw.send(message)  # non-blocking; a byte always fits in the buffer
    except OSError:
        pass  # it has exited; _reap() hears of it from process.wait()
