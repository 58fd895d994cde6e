"""The ASGI ``lifespan`` scope, run for the server's whole life.

The app's lifespan coroutine must outlive ``startup``: it sends
``lifespan.startup.complete``, then waits in ``receive()`` until the server
stops.  It runs in a task of the adapter's ``background()`` nursery, in a
shielded cancel scope of its own: ``background()`` is cancelled once the last
connection closed, and the coroutine must still receive ``lifespan.shutdown``
then.  :meth:`Lifespan.shutdown` sends it, waits (bounded) for the answer, and
cancels the scope, so nothing outlives the server.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import trio

from ..exceptions import LifespanFailure

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

__all__ = ["Lifespan"]

log = logging.getLogger("peregrine_rt.server")
error_log = logging.getLogger("peregrine_rt.error")


class Lifespan:
    """One run of an app's lifespan: ``await startup(nursery)``, later ``await shutdown(t)``."""

    def __init__(self, app: App, state: dict[str, Any], mode: Literal["auto", "on"]) -> None:
        self._app = app
        self._mode = mode
        self._scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": state,
        }
        self._inbox, self._outlet = trio.open_memory_channel[dict[str, Any]](2)
        self._startup = trio.Event()
        self._shutdown = trio.Event()
        self._outcome: dict[str, Any] | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._cancel = trio.CancelScope(shield=True)
        self.supported = True

    async def startup(self, nursery: trio.Nursery) -> None:
        """Run ``lifespan.startup``; return once the app completed it.

        Raises:
            LifespanFailure: the app sent ``lifespan.startup.failed``, or (with
                ``lifespan="on"``) raised or returned before completing.
                With ``"auto"``, an app that raises or returns first does not
                support lifespan (logged at info level) and the server goes on.
        """
        self._inbox.send_nowait({"type": "lifespan.startup"})
        nursery.start_soon(self._run)
        await self._startup.wait()
        outcome = self._outcome
        if outcome is not None and outcome["type"] == "lifespan.startup.complete":
            return
        self._cancel.cancel()
        if outcome is not None:
            message = outcome.get("message") or "(no message)"
            raise LifespanFailure(f"ASGI lifespan startup failed: {message}")
        error = self._error
        if self._mode == "on":
            why = f"raised {error!r}" if error is not None else "returned"
            raise LifespanFailure(
                f"ASGI lifespan startup failed: the app {why} before lifespan.startup.complete"
            ) from error
        self.supported = False
        log.info(
            "the ASGI app does not support lifespan (%s): going on without it",
            repr(error) if error is not None else "it returned at once",
        )

    async def shutdown(self, timeout: float) -> None:
        """Run ``lifespan.shutdown`` (up to ``timeout`` seconds), then cancel what is left."""
        try:
            if self.supported and not self._ended:
                self._inbox.send_nowait({"type": "lifespan.shutdown"})
                with trio.move_on_after(timeout) as waited:
                    await self._shutdown.wait()
                outcome = self._outcome
                if waited.cancelled_caught:
                    error_log.error("the ASGI app's lifespan shutdown took over %.1f s", timeout)
                elif outcome is not None and outcome["type"] == "lifespan.shutdown.failed":
                    message = outcome.get("message") or "(no message)"
                    error_log.error("ASGI lifespan shutdown failed: %s", message)
        finally:
            self._cancel.cancel()

    async def _run(self) -> None:
        with self._cancel:
            try:
                await self._app(self._scope, self._receive, self._send)
            except Exception as exc:
                self._error = exc
                if self._startup.is_set():
                    error_log.exception("the ASGI app's lifespan raised")
            finally:
                self._ended = True
                self._startup.set()
                self._shutdown.set()

    async def _receive(self) -> dict[str, Any]:
        return await self._outlet.receive()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if self._startup.is_set():
                raise RuntimeError(f"{kind} sent twice")
            self._outcome = message
            self._startup.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._outcome = message
            self._shutdown.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a lifespan scope")
