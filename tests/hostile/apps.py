"""Apps the hostile-input tests serve in a process of their own (to read its memory)."""

from __future__ import annotations

import peregrine_rt as pr


class FragmentSink:
    """Answers each message with its type and length; messages up to 64 MiB."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response, max_message_size=64 << 20)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(f"got {type(message).__name__} {len(message)}")


class SmallSink(FragmentSink):
    """The same, with the default message limit (``Config.ws_max_message_size``, 1 MiB)."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)
