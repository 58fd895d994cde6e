"""The app the log-format tests serve in a subprocess (``tests/integration/test_json_logs.py``).

``peregrine-rt tests.integration.apps_logs:App --log-format json --access-log``:
``/ws`` is a WebSocket echo, ``/boom`` raises (an error line with its
traceback), anything else answers ``ok``.
"""

from __future__ import annotations

import peregrine_rt as pr


class App:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
        elif request.path == "/boom":
            raise RuntimeError("the handler failed on purpose")
        else:
            response.text("ok\n")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)
