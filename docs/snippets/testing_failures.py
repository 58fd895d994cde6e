"""The failure messages quoted in docs/testing.rst (testing_failures.txt), produced for real."""

from __future__ import annotations

from pathlib import Path

import pytest

import peregrine_rt as pr
from peregrine_rt.testing import ReceiveTimeout, UnexpectedEvent, WebSocketClosed, open_client


class Quiet:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if message == "binary":
            await ws.send(b"\x00\x01")
        elif message == "refuse":
            await ws.close(1008, "not allowed")


def line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def test_the_quoted_failures_are_the_clients(autojump_clock) -> None:
    seen = []
    async with open_client(Quiet, ws_ping_interval=None) as client, client.websocket("/") as ws:
        with pytest.raises(ReceiveTimeout) as nothing:
            await ws.receive()
        seen.append(line(nothing.value))
        await ws.send("binary")
        with pytest.raises(UnexpectedEvent) as binary:
            await ws.receive_text()
        seen.append(line(binary.value))
        await ws.send("refuse")
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
        seen.append(line(closed.value))
    quoted = (Path(__file__).parent / "testing_failures.txt").read_text().splitlines()
    assert quoted == seen
