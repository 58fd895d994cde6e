"""Handlers the worker-process tests serve in subprocesses.

``peregrine-rt tests.integration.apps_workers:Pid --workers 2`` (run from the
repository), or as a script, which serves ``Pid`` from ``__main__`` with
``peregrine_rt.run(..., workers=2)``:
``python tests/integration/apps_workers.py PORT``.

Environment switches for the tests (read by each worker when it starts):

* ``PID_APP_FAIL_IF=<path>``: ``startup()`` raises while that file exists;
* ``PID_APP_HANG_SHUTDOWN=1``: ``shutdown()`` never returns.
"""

from __future__ import annotations

import os
import sys

import trio

import peregrine_rt as pr


class Pid:
    """Every request gets the worker's PID (``/hang`` never answers); a WebSocket answers
    each message with it."""

    async def startup(self) -> None:
        marker = os.environ.get("PID_APP_FAIL_IF")
        if marker and os.path.exists(marker):
            raise RuntimeError(f"startup refused: {marker} exists")

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None:
            await pr.upgrade(request, response)
            return
        if request.path == "/hang":
            await trio.sleep_forever()
        response.text(str(os.getpid()))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(str(os.getpid()))

    async def shutdown(self) -> None:
        if os.environ.get("PID_APP_HANG_SHUTDOWN"):
            with trio.CancelScope(shield=True):
                await trio.sleep_forever()


if __name__ == "__main__":
    pr.run(Pid, port=int(sys.argv[1]), workers=2, shutdown_grace=2)
