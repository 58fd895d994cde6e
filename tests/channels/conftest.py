"""Helpers of the Channels tests: a Phoenix client over the test client's WebSocket."""

from __future__ import annotations

from itertools import count
from typing import Any

from peregrine_rt.testing import ClientWebSocket


class Phx:
    """Speaks Phoenix V2 frames over a test WebSocket, numbering refs as phoenix.js does."""

    def __init__(self, ws: ClientWebSocket) -> None:
        self.ws = ws
        self.refs = count(1)

    def ref(self) -> str:
        return str(next(self.refs))

    async def send(self, join_ref: str | None, topic: str, event: str, payload: Any) -> str:
        ref = self.ref()
        await self.ws.send_json([join_ref, ref, topic, event, payload])
        return ref

    async def join(self, topic: str, params: Any = None) -> tuple[str, list[Any]]:
        """Join and return (join_ref, the reply frame)."""
        ref = self.ref()
        await self.ws.send_json([ref, ref, topic, "phx_join", {} if params is None else params])
        return ref, await self.receive()

    async def receive(self) -> list[Any]:
        frame = await self.ws.receive_json()
        assert isinstance(frame, list)
        assert len(frame) == 5
        return frame

    async def receive_until(self, event: str) -> list[Any]:
        """Skip frames (presence, pushes) until one with ``event``."""
        while True:
            frame = await self.receive()
            if frame[3] == event:
                return frame
