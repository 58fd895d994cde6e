"""The handler classes behind the messages of handler_near_misses.txt (handlers.rst).

Each class names a hook wrongly; the test builds a server for each and
requires the messages, in order, to be the file's lines.
"""

from __future__ import annotations

from pathlib import Path

import peregrine_rt as pr


class Chat:
    async def handle(self, request, response):
        await pr.upgrade(request, response)

    async def on_mesage(self, ws, message): ...


class Echo:
    async def handle(self, request, response): ...

    async def onMessage(self, ws, message): ...


class Consumer:  # written for Django Channels
    async def handle(self, request, response): ...

    async def connect(self): ...


class Counter:
    async def handel(self, request, response): ...


NEAR_MISSES = [Chat, Echo, Consumer, Counter]


def message(cls: type) -> str:
    try:
        pr.Server(cls)
    except pr.HandlerError as exc:
        return str(exc)
    raise AssertionError(f"{cls.__name__} was accepted")


def test_the_quoted_messages_are_the_servers() -> None:
    quoted = (Path(__file__).parent / "handler_near_misses.txt").read_text().splitlines()
    assert quoted == [message(cls) for cls in NEAR_MISSES]
