"""The handler classes behind the messages of handler_errors.txt (handlers.rst).

Each class breaks the handler contract in one way; the test builds a server
for each and requires the messages, in order, to be the file's lines.
"""

from __future__ import annotations

from pathlib import Path

import peregrine_rt as pr


class NoHandle:
    pass


class SyncHandle:
    def handle(self, request, response): ...


class Arity:
    async def handle(self, request): ...


class WsOnly:
    async def handle(self, request, response): ...

    async def on_open(self, ws): ...


class SyncMsg:
    async def handle(self, request, response): ...

    def on_message(self, ws, message): ...


class Chat:
    async def handle(self, request, response):
        await pr.upgrade(request, response)


class NeedsArgs:
    def __init__(self, db):
        self.db = db

    async def handle(self, request, response): ...


BROKEN = [NoHandle, SyncHandle, Arity, WsOnly, SyncMsg, Chat, NeedsArgs]


def message(cls: type) -> str:
    try:
        pr.Server(cls)
    except pr.HandlerError as exc:
        return str(exc)
    raise AssertionError(f"{cls.__name__} was accepted")


def test_the_quoted_messages_are_the_servers() -> None:
    quoted = (Path(__file__).parent / "handler_errors.txt").read_text().splitlines()
    assert quoted == [message(cls) for cls in BROKEN]
