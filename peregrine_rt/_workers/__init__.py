"""Worker processes: ``peregrine-rt app:Handler --workers N`` and ``run(Handler, workers=N)``.

The parent is a supervisor only: it never imports the handler's module nor
serves a connection.  It

1. binds the address once, with ``SO_REUSEPORT`` and without listening, so the
   port is reserved (and ``port=0`` becomes one concrete port) for as long as
   the parent lives, across worker restarts;
2. starts worker 0 and waits until it serves (a worker that cannot start the
   first time — import error, handler contract, ``startup()`` failing — stops
   the whole program with its exit status instead of a restart loop), then
   the others;
3. restarts a worker that exits, logging why, after a delay that doubles with
   each quick failure (``BACKOFF_BASE`` up to ``BACKOFF_MAX``; a worker that
   served ``STABLE_AFTER`` seconds starts the count again);
4. on SIGINT or SIGTERM tells every worker to stop (each runs the usual
   graceful shutdown), on a second signal to stop at once, kills workers still
   running ``Config.shutdown_grace + KILL_MARGIN`` seconds after the first
   signal, and returns when all are gone.

Each worker is ``python -c ...`` in its own process group (a Ctrl-C in a
terminal reaches the parent only).  It creates its *own* listening socket on
the reserved port with ``SO_REUSEPORT``: the kernel then spreads new
connections over the workers' sockets.  A socket pair connects each worker to
the parent: the parent sends the plan (a pickled :class:`WorkerPlan`) down it,
then ``_STOP`` or ``_ABORT``; the worker answers ``ready`` once it listens; and
end-of-file tells a worker its parent is gone (even killed with SIGKILL), upon
which it shuts down gracefully.  Stop requests go through the socket, not
signals, so a worker that also gets SIGTERM directly (systemd signals the whole
control group) still shuts down gracefully, once: in a worker any number of
signals only ever mean "shut down gracefully".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import signal
import socket
import ssl
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from ._config import Config
from ._loader import (
    cannot_listen,
    fail,
    fail_load,
    find_attr,
    find_os_error,
    import_error_summary,
    load_app,
)
from ._server import Server
from .exceptions import HandlerError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["WorkerPlan", "handler_target", "run_workers", "worker_main"]

log = logging.getLogger("peregrine_rt.workers")

BACKOFF_BASE = 0.1  # seconds before restarting a worker that failed quickly once
BACKOFF_MAX = 10.0  # the delay doubles per quick failure, up to this
STABLE_AFTER = 10.0  # a worker that served this long resets the failure count
KILL_MARGIN = 3.0  # seconds past shutdown_grace before stragglers get SIGKILL

_READY = b"ready"  # worker -> supervisor: listening
_STOP = b"S"  # supervisor -> worker: shut down gracefully
_ABORT = b"A"  # supervisor -> worker: stop at once
_LENGTH = struct.Struct("!I")
_MAIN_MODULE = "__peregrine_main__"  # the name a worker imports a script's handler under
_WORKER_CODE = "import sys; from peregrine_rt._workers import worker_main; sys.exit(worker_main())"
_LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"

_in_worker = False  # set in a worker process: run(workers>1) there would fork without end


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, sent to it pickled: no SSLContext, no handler object."""

    target: str  # MODULE:QUALNAME of the handler class
    config: Config  # workers=1, reuse_port=True, a concrete port, no ssl_context
    main_path: str | None = None  # the script to import when the class lives in __main__
    certfile: str | None = None
    keyfile: str | None = None
    log_level: int | str | None = None
    sys_path: list[str] = field(default_factory=list)
    app_dir: str | None = None  # --app-dir, for the messages of load_app


# -- the handler, by name ------------------------------------------------------------


def handler_target(handler: type | object) -> tuple[str, str | None]:
    """``(MODULE:QUALNAME, script path or None)`` by which a worker imports ``handler``.

    Error handling:
        :class:`HandlerError` when ``handler`` is an instance, or a class a
        fresh process could not import under the same name (defined in a
        function, in an interactive session, replaced in its module...).
    """
    if not isinstance(handler, type):
        raise HandlerError(
            f"workers > 1 needs the handler class, not an instance of "
            f"{type(handler).__qualname__}: each worker process builds its own"
        )
    name = f"{handler.__module__}:{handler.__qualname__}"
    why = f"worker processes import the handler class by name, but {name} "
    if "<locals>" in handler.__qualname__:
        raise HandlerError(why + "is defined inside a function: define it at module level")
    module = sys.modules.get(handler.__module__)
    obj: object = module
    for part in handler.__qualname__.split("."):
        obj = getattr(obj, part, None)
    if obj is not handler:
        raise HandlerError(why + "does not name this class: define it at module level")
    if handler.__module__ != "__main__":
        return name, None
    # A script's class: workers import the script again, under another name (as
    # multiprocessing does), or the module that `python -m` ran.
    spec = getattr(module, "__spec__", None)
    if spec is not None and not spec.name.endswith(".__main__"):
        return f"{spec.name}:{handler.__qualname__}", None
    path = getattr(module, "__file__", None)
    if spec is not None or path is None:
        raise HandlerError(
            why + "lives in a __main__ that cannot be imported again "
            "(an interactive session, -c, or a package's __main__): move it to a module"
        )
    main_path = os.path.abspath(path)
    return name, main_path


def _load_handler(plan: WorkerPlan) -> object:
    """Import the handler class in a worker (LookupError, as ``load_app`` raises it)."""
    if plan.main_path is None:
        return load_app(plan.target, plan.app_dir)
    spec = importlib.util.spec_from_file_location(_MAIN_MODULE, plan.main_path)
    if spec is None or spec.loader is None:
        raise LookupError(f"cannot import {plan.main_path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[_MAIN_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise LookupError(import_error_summary(plan.main_path, exc)) from exc
    return find_attr(module, plan.target, plan.target.partition(":")[2])


# -- the parent ---------------------------------------------------------------------


def _reserve(config: Config) -> list[socket.socket]:
    """Bind (not listen) every address of ``config`` with SO_REUSEPORT; OSError if taken."""
    infos = socket.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            if config.port == 0:
                break  # as Server does: one address when the port is picked for us
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _install_logging(level: int | str | None) -> None:
    """Like ``_server.install_default_logging``, with each line naming its process."""
    root = logging.getLogger("peregrine_rt")
    if level is not None:
        root.setLevel(level)
    if not logging.getLogger().handlers and not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
        if level is None:
            root.setLevel(logging.INFO)


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
) -> int:
    """Serve with ``config.workers`` supervised worker processes; the exit status.

    ``handler`` is a class (imported by the workers as ``module:qualname``) or
    a ``MODULE:ATTR`` string (imported only by the workers).  Returns when the
    workers are gone: 0 after a clean shutdown, else the status of worker 0
    when it could not start, or 1 when a worker stopped badly on shutdown.

    Error handling:
        :class:`HandlerError` for a handler class the workers cannot import,
        ``ValueError`` for options that cannot cross processes (a Unix socket,
        an ``SSLContext``: use certfile/keyfile), ``OSError`` when the address
        cannot be bound — all before any worker starts.
    """
    if _in_worker:
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
    try:
        host, port = reserved[0].getsockname()[:2]
        worker_config = config.replace(
            host=host if config.port == 0 else config.host,
            port=port,
            workers=1,
            reuse_port=True,
        )
        plan = WorkerPlan(
            target=target,
            config=worker_config,
            main_path=main_path,
            certfile=certfile,
            keyfile=keyfile,
            log_level=log_level,
            sys_path=list(sys.path),
            app_dir=app_dir,
        )
        _install_logging(log_level)
        scheme = "https" if certfile else "http"
        shown = f"[{host}]" if ":" in host else host
        supervisor = _Supervisor(plan, config.workers, name, f"{scheme}://{shown}:{port}")
        return trio.run(supervisor.run)
    finally:
        for sock in reserved:
            sock.close()


@dataclass(eq=False)
class _Worker:
    index: int
    process: trio.Process
    control: trio.SocketStream
    raw: socket.socket  # the control socket's stdlib object, for a send from sync code
    ready_at: float | None = None


class _Supervisor:
    def __init__(self, plan: WorkerPlan, count: int, name: str, url: str) -> None:
        self.payload = pickle.dumps(plan)
        self.grace = plan.config.shutdown_grace
        self.redis_url = plan.config.redis_url
        self.count = count
        self.name = name
        self.url = url
        self.live: dict[int, _Worker] = {}
        self.ever_ready: set[int] = set()
        self.stopping = False
        self.stop_requested = trio.Event()
        self.first_outcome = trio.Event()  # worker 0 serves, or failed, or a signal came
        self.exit_code = 0
        self._nursery: trio.Nursery | None = None

    async def run(self) -> int:
        async with trio.open_nursery() as outer:
            self._nursery = outer
            await outer.start(self._watch_signals)
            async with trio.open_nursery() as slots:
                slots.start_soon(self._keep, 0)
                await self.first_outcome.wait()
                if not self.stopping:
                    for index in range(1, self.count):
                        slots.start_soon(self._keep, index)
            outer.cancel_scope.cancel()  # every worker is gone: stop the watchers
        if self.ever_ready:
            log.info("stopped")
        return self.exit_code

    # -- one slot: start, watch, restart ------------------------------------------

    async def _keep(self, index: int) -> None:
        failures = 0
        while not self.stopping:
            worker = await self._spawn(index)
            ready = await self._wait_ready(worker)
            if ready:
                worker.ready_at = trio.current_time()
                log.info("worker %d (pid %d) is serving", index, worker.process.pid)
                self._on_ready(index)
            returncode = await worker.process.wait()
            await worker.control.aclose()
            del self.live[index]
            if self.stopping:
                if returncode not in (0, -signal.SIGTERM):
                    log.warning(
                        "worker %d (pid %d) %s", index, worker.process.pid, _describe(returncode)
                    )
                    self.exit_code = 1
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
        ours, theirs = socket.socketpair()
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                process_group=0,  # a terminal's Ctrl-C reaches the parent, which forwards it
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        control = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        worker = _Worker(index, process, control, ours)
        self.live[index] = worker
        message = _LENGTH.pack(len(self.payload)) + self.payload
        if self.stopping:  # a signal came while it was being started
            message += _STOP
        try:
            await control.send_all(message)
        except trio.BrokenResourceError:
            pass  # it died already; process.wait() says how
        return worker

    async def _wait_ready(self, worker: _Worker) -> bool:
        """True once the worker listens; False if it exits first."""
        received = b""
        while len(received) < len(_READY):
            try:
                data = await worker.control.receive_some(64)
            except trio.BrokenResourceError:
                return False
            if not data:
                return False
            received += data
        return received == _READY

    def _on_ready(self, index: int) -> None:
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

    # -- signals -------------------------------------------------------------------

    async def _watch_signals(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.stop_requested.is_set():
                    log.info("received %s; stopping %d workers", name, len(self.live))
                    self.stopping = True
                    self.stop_requested.set()
                    self.first_outcome.set()
                    assert self._nursery is not None
                    self._nursery.start_soon(self._kill_stragglers)
                    self._tell_all(_STOP)
                else:
                    log.warning("second signal: workers stop now")
                    self._tell_all(_ABORT)

    def _tell_all(self, message: bytes) -> None:
        for worker in self.live.values():
            try:
                worker.raw.send(message)  # non-blocking; a byte always fits in the buffer
            except OSError:
                pass  # it has exited; _keep() hears of it from process.wait()

    async def _kill_stragglers(self) -> None:
        await trio.sleep(self.grace + KILL_MARGIN)
        for worker in self.live.values():
            log.warning(
                "worker %d (pid %d) still running %.1f s after the signal; killing it",
                worker.index,
                worker.process.pid,
                self.grace + KILL_MARGIN,
            )
            worker.process.kill()


# -- a worker -----------------------------------------------------------------------


def _read_plan(control: socket.socket) -> WorkerPlan:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = control.recv(n - len(data))
            if not chunk:
                raise EOFError("the supervisor went away before sending the plan")
            data += chunk
        return data

    (length,) = _LENGTH.unpack(exactly(_LENGTH.size))
    plan = pickle.loads(exactly(length))
    assert isinstance(plan, WorkerPlan)
    return plan


async def _serve_worker(server: Server, control: socket.socket) -> None:
    """Serve until the supervisor says stop (or dies); a signal only ever stops gracefully.

    Unlike :func:`~peregrine_rt._server.serve_until_signalled`, a second signal
    does not abort: under systemd's default ``KillMode=control-group`` a worker
    gets SIGTERM from systemd *and* the stop the supervisor forwards, and that
    must still be one graceful shutdown.  Stopping at once is the supervisor's
    call (``_ABORT``, on a second signal to it).
    """
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(control))

    async def watch_signals(task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not server.shutting_down:
                    log.info("received %s", signal.Signals(signum).name)
                    server.request_shutdown()

    async def watch_supervisor() -> None:
        while True:
            try:
                data = await stream.receive_some(64)
            except trio.BrokenResourceError:
                data = b""
            if not data:  # the supervisor is gone (even with SIGKILL)
                if not server.shutting_down:
                    log.warning("the supervisor exited; shutting down")
                    server.request_shutdown()
                return
            if _ABORT in data:
                server.abort()
            elif _STOP in data:
                server.request_shutdown()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        await nursery.start(server.serve)
        log.info("serving %s on %s", server.spec.name, server.url)
        await stream.send_all(_READY)
        nursery.start_soon(watch_supervisor)
        await server.wait_stopped()
        nursery.cancel_scope.cancel()


def worker_main() -> int:
    """The worker process: ``python -c ... FD``, FD the socket to the supervisor."""
    global _in_worker
    _in_worker = True
    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)
    plan = _read_plan(control)
    sys.path[:] = plan.sys_path
    _install_logging(plan.log_level)
    try:
        handler = _load_handler(plan)
    except LookupError as exc:
        return fail_load(exc, log_level=plan.log_level)
    config = plan.config
    if plan.certfile and plan.keyfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(plan.certfile, plan.keyfile)
        except (OSError, ssl.SSLError) as exc:
            return fail(f"cannot load the TLS certificate: {exc}")
        config = config.replace(ssl_context=context)
    try:
        server = Server(handler, config)  # type: ignore[arg-type]  # any object: Server checks it
    except (HandlerError, ValueError) as exc:
        return fail(str(exc))
    try:
        trio.run(_serve_worker, server, control)
    except BaseException as exc:
        os_error = find_os_error(exc)
        if os_error is None:
            raise
        return fail(cannot_listen(config, os_error))
    return 0
