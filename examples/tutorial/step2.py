"""Step 2: rooms, history and recovery.  ``peregrine-rt examples.tutorial.step2:Chat``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import peregrine_rt as pr

PAGE = 100  # messages in a history page


class Chat(pr.Channels):
    """Rooms ``room:<name>``; their messages kept in SQLite, in ``CHAT_DATA``."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__()
        self.data_dir = Path(data_dir or os.environ.get("CHAT_DATA", "data/tutorial"))

    def make_history(self, hub: pr.Hub) -> pr.History:
        return pr.SQLiteHistory(self.data_dir)  # one file in data_dir, made on first run

    @pr.topic("room:{name}")
    class Room:
        async def join(self, socket: pr.Socket, params: dict[str, Any]) -> dict[str, Any]:
            return {"room": socket.params["name"]}  # the library adds epoch and offset

        async def on_new_msg(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            text = payload.get("text") if isinstance(payload, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise pr.Refuse("empty", text="a message has some text")
            message = {"text": text, "ts": int(time.time() * 1000)}
            return {"id": await socket.broadcast("new_msg", message)}  # its offset

        async def on_history(self, socket: pr.Socket, payload: Any) -> dict[str, Any]:
            """The newest ``limit`` messages before ``before`` (offsets are dense)."""
            ask = payload if isinstance(payload, dict) else {}
            before, limit = ask.get("before"), ask.get("limit", PAGE)
            if type(before) is not int or type(limit) is not int or before < 1 or limit < 1:
                raise pr.Refuse("bad_message", text="history takes before and limit (integers)")
            since = max(0, before - 1 - min(limit, PAGE))
            kept = await cast(Chat, socket.channels).history_of(socket.topic, since=since)
            return {"messages": [{"id": p.offset, **p.payload} for p in kept if p.offset < before]}
