"""A worker process: ``python -c ... CONTROL LISTENING...`` (see the package's steps).

It reads its plan from the control socket, imports the handler, and serves
the sockets it inherited from the supervisor until told to stop.
"""

from __future__ import annotations

import errno
import logging
import pickle
import signal
import socket
import ssl
import sys
from functools import partial
from typing import Any

import trio

from .._loader import cannot_listen, fail, fail_load, find_os_error
from .._server import Server
from ..exceptions import HandlerError
from ._plan import ABORT, LENGTH, READY, RESTART, STOP, WorkerPlan, install_logging, load_handler

__all__ = ["HANDOVER_POLL", "HANDOVER_WAIT", "in_worker", "worker_main"]

log = logging.getLogger("peregrine_rt.workers")

HANDOVER_WAIT = 0.5  # seconds a replaced worker waits for its new connections' first requests
HANDOVER_POLL = 0.005  # how often it looks

in_worker = False  # set in a worker process: run(workers>1) there would fork without end


def _read_plan(control: socket.socket) -> WorkerPlan:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = control.recv(n - len(data))
            if not chunk:
                raise EOFError("the supervisor went away before sending the plan")
            data += chunk
        return data

    (length,) = LENGTH.unpack(exactly(LENGTH.size))
    plan = pickle.loads(exactly(length))
    assert isinstance(plan, WorkerPlan)
    return plan


class _Listener(socket.socket):
    """A worker's copy of its slot's listening socket: a handover stops its accepting.

    The socket stays open meanwhile (the supervisor and the successor hold it
    too), so what waits in its queue is the successor's to accept.  The
    server's accept loop takes the refusal as "nothing to accept" and waits.
    """

    accepting = True

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.accepting:
            raise BlockingIOError(errno.EAGAIN, "handed over to a new worker")
        return super().accept()


async def _hand_over(server: Server, listening: list[_Listener]) -> None:
    """Step 5, in the old worker: stop accepting, let new connections send a request, stop."""
    log.info("a new worker serves in my place: stopping")
    for sock in listening:
        sock.accepting = False
    # A connection accepted a moment ago whose request is still on its way
    # would count as idle and be closed by the shutdown: its client, on a
    # fresh connection, could not retry.  Wait for that request (bounded:
    # a browser's preconnected socket may never send one).
    with trio.move_on_after(HANDOVER_WAIT):
        while any(conn.idle and not conn.handled for conn in server.connections):
            await trio.sleep(HANDOVER_POLL)
    server.request_shutdown(1012, "service restart")


async def _serve_worker(server: Server, control: socket.socket, listening: list[_Listener]) -> None:
    """Serve until the supervisor says stop (or dies); a signal only ever stops gracefully.

    Unlike :func:`~peregrine_rt._server.serve_until_signalled`, a second signal
    does not abort: under systemd's default ``KillMode=control-group`` a worker
    gets SIGTERM from systemd *and* the stop the supervisor forwards, and that
    must still be one graceful shutdown.  Stopping at once is the supervisor's
    call (``ABORT``, on a second signal to it).
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
            if ABORT in data:
                server.abort()
            elif STOP in data:
                server.request_shutdown()
            elif RESTART in data and not server.shutting_down:
                nursery.start_soon(_hand_over, server, listening)

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals)
        await nursery.start(partial(server.serve, sockets=listening))
        log.info("serving %s on %s", server.spec.name, server.url)
        await stream.send_all(READY)
        nursery.start_soon(watch_supervisor)
        await server.wait_stopped()
        nursery.cancel_scope.cancel()


def worker_main() -> int:
    """The worker process: ``python -c ... CONTROL LISTENING...``, file descriptors."""
    global in_worker
    in_worker = True
    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)
    listening = [_Listener(fileno=int(fd)) for fd in sys.argv[2:]]
    for sock in listening:
        sock.set_inheritable(False)
    plan = _read_plan(control)
    sys.path[:] = plan.sys_path
    install_logging(plan.log_level, plan.config.log_format)
    try:
        handler = load_handler(plan)
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
        trio.run(_serve_worker, server, control, listening)
    except BaseException as exc:
        os_error = find_os_error(exc)
        if os_error is None:
            raise
        return fail(cannot_listen(config, os_error))
    return 0
