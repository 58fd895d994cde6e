"""The wait_until example of docs/testing.rst: wait for a condition, not for a time.

The page shows the part between the ``# [wait]`` markers.
"""

from __future__ import annotations

import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_client, wait_until


class Log:
    """Keeps every WebSocket message it receives."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        self.messages.append(message)


# [wait]
async def test_the_handler_gets_the_message() -> None:
    app = Log()
    async with open_client(app) as client, client.websocket("/") as ws:
        await ws.send("hello")  # returns once sent, maybe before on_message ran
        await wait_until(lambda: app.messages == ["hello"])


# [/wait]


async def test_wait_until_costs_no_time_on_the_autojump_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = Log()
    async with open_client(app) as client, client.websocket("/") as ws:
        await ws.send("hello")
        await wait_until(lambda: app.messages == ["hello"])
