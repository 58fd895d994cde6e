"""Step 1: one topic, one event.  ``peregrine-rt examples.tutorial.step1:Chat``."""

from __future__ import annotations

from typing import Any

import peregrine_rt as pr


class Chat(pr.Channels):
    """Whoever joins ``room:lobby`` gets every ``new_msg`` sent there."""

    @pr.topic("room:lobby")
    class Lobby:
        async def on_new_msg(self, socket: pr.Socket, payload: Any) -> None:
            text = payload.get("text") if isinstance(payload, dict) else None
            await socket.broadcast("new_msg", {"text": str(text)})
