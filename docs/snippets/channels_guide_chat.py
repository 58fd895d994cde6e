"""docs/channels/guide.rst, part 2: a small chat on Channels, and its tests.

The page shows the parts between the ``# [name]`` markers.  The tests drive
the chat with the Python client over memory streams to the app's real
server, and restart that server on the same SQLite file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._channels import Channels, Refuse, Socket, topic
from peregrine_rt._channels._sqlite import SQLiteHistory
from peregrine_rt.client import Backoff, JoinRefused, PushError, open_socket
from peregrine_rt.exceptions import HandshakeError
from peregrine_rt.testing import wait_until
from peregrine_rt.testing._channels import TEST_URL, ChannelsConnector, open_channels_connector

# [identity]
tokens = pr.Tokens("guide-secret-of-at-least-32-bytes!")  # from the app's settings
signed_in = pr.bearer_auth(tokens)  # ?token=... (or Authorization: Bearer ...)
# [/identity]


# [chat]
class Chat(Channels):
    # One SQLite file in data/chat/ (created on first run): history survives a restart.
    history = SQLiteHistory("data/chat", max_count=1000)

    async def authenticate(self, request: pr.Request) -> pr.Identity | None:
        return await signed_in(request)  # None: 401, no socket; the Identity: socket.user

    @topic("room:{name}", presence=True)
    class Room:
        async def join(self, socket: Socket, params: dict[str, Any]) -> dict[str, Any]:
            room = socket.params["name"]
            if room.startswith("staff-") and socket.user.claims.get("role") != "staff":
                raise Refuse("unauthorized")  # the client's join fails with this reason
            return {"room": room}

        async def on_new_msg(self, socket: Socket, payload: Any) -> dict[str, Any]:
            body = str(payload.get("body", "")).strip()[:500] if isinstance(payload, dict) else ""
            if not body:
                raise Refuse("empty")  # an error reply: the sender's push fails
            await socket.broadcast("new_msg", {"from": socket.user.name, "body": body})
            return {"sent": True}  # the ack: the sender's push returns it

        async def on_typing(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast_from("typing", {"from": socket.user.name})  # not to itself

        async def presence_key(self, socket: Socket) -> str:
            return str(socket.user.name)  # one entry per user, one meta per tab


# [/chat]


def chat_in(directory: Path) -> Chat:
    """The Chat with its history in ``directory`` (the same directory = the same history)."""

    class Here(Chat):
        history = SQLiteHistory(directory, max_count=1000)

    return Here()


FAST = Backoff(initial=0.02, maximum=0.2)


@asynccontextmanager
async def chat_client(
    connector: ChannelsConnector | None, user: str, **claims: Any
) -> AsyncIterator[Any]:
    token = tokens.issue(user, ttl=600, **claims)
    async with open_socket(
        TEST_URL + "/socket", params={"token": token}, connect=connector, backoff=FAST
    ) as socket:
        yield socket


async def test_joins_are_authorised_by_the_handshake_identity(tmp_path: Path) -> None:
    async with open_channels_connector(chat_in(tmp_path)) as connector:
        assert connector is not None
        with pytest.raises(HandshakeError) as no_token:
            async with open_socket(TEST_URL + "/socket", connect=connector):
                pass
        assert no_token.value.status == 401
        async with (
            chat_client(connector, "ann") as ann,
            chat_client(connector, "sam", role="staff") as sam,
        ):
            assert (await ann.channel("room:lobby").join())["room"] == "lobby"
            with pytest.raises(JoinRefused) as refused:
                await ann.channel("room:staff-only").join()
            assert refused.value.reason == "unauthorized"
            assert (await sam.channel("room:staff-only").join())["room"] == "staff-only"


# [test]
async def test_messages_are_acked_and_typing_skips_the_sender(tmp_path: Path) -> None:
    async with (
        open_channels_connector(chat_in(tmp_path)) as connector,
        chat_client(connector, "ann") as ann,
        chat_client(connector, "bob") as bob,
    ):
        ann_room, bob_room = ann.channel("room:lobby"), bob.channel("room:lobby")
        async with (
            ann_room.messages("new_msg", "typing") as ann_sees,
            bob_room.messages("new_msg", "typing") as bob_sees,
        ):
            await ann_room.join()
            await bob_room.join()
            await ann_room.push("typing")
            assert await ann_room.push("new_msg", {"body": " hi "}) == {"sent": True}  # the ack
            typing, message = await bob_sees.receive(), await bob_sees.receive()
            assert (typing.event, typing.payload) == ("typing", {"from": "ann"})
            assert (message.event, message.payload, message.offset) == (
                "new_msg",
                {"from": "ann", "body": "hi"},
                2,  # typing took offset 1: on a topic with history, every broadcast is kept
            )
            assert (await ann_sees.receive()).event == "new_msg"  # its own typing never came
            with pytest.raises(PushError) as empty:
                await bob_room.push("new_msg", {"body": "   "})
            assert empty.value.response == {"reason": "empty"}
            await wait_until(
                lambda: sorted(e.key for e in ann_room.presence.list()) == ["ann", "bob"]
            )


# [/test]


@asynccontextmanager
async def restartable(directory: Path) -> AsyncIterator[tuple[Any, Any]]:
    """A chat server that ``restart()`` stops and starts again on the same data directory."""
    current: list[ChannelsConnector] = []
    scopes: list[trio.CancelScope] = []

    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            async with open_channels_connector(chat_in(directory)) as connector:
                assert connector is not None
                current.append(connector)
                task_status.started()
                await trio.sleep_forever()

    async def connect() -> trio.abc.Stream:
        return await current[-1]()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)

        async def restart() -> None:
            current[-1].refuse = True
            scopes[-1].cancel()  # the server shuts down: every connection drops
            await nursery.start(serve)

        yield connect, restart
        nursery.cancel_scope.cancel()


async def test_a_client_recovers_what_it_missed_across_a_server_restart(tmp_path: Path) -> None:
    async with restartable(tmp_path) as (connect, restart):
        away = True  # while true, ann's page cannot reach the server

        async def ann_connect() -> trio.abc.Stream:
            if away:
                raise ConnectionRefusedError("ann is offline")
            stream: trio.abc.Stream = await connect()
            return stream

        ann_token, bob_token = tokens.issue("ann", ttl=600), tokens.issue("bob", ttl=600)
        async with open_socket(
            TEST_URL + "/socket", params={"token": bob_token}, connect=connect, backoff=FAST
        ) as bob:
            away = False
            async with open_socket(
                TEST_URL + "/socket", params={"token": ann_token}, connect=ann_connect, backoff=FAST
            ) as ann:
                room, bobs = ann.channel("room:lobby"), bob.channel("room:lobby")
                async with room.messages("new_msg") as messages, room.joins() as joins:
                    await room.join()
                    assert (await joins.receive()).recovered is None
                    await bobs.join()
                    await bobs.push("new_msg", {"body": "before"})
                    assert (await messages.receive()).offset == 1

                    away = True
                    await restart()  # the server stops and starts again on the same file
                    await bobs.wait_joined()  # bob is back; ann is not
                    await bobs.push("new_msg", {"body": "while ann was away"})
                    await bobs.push("new_msg", {"body": "and this"})
                    away = False

                    rejoined = await joins.receive()
                    assert (rejoined.rejoin, rejoined.recovered) == (True, True)
                    missed = [await messages.receive() for _ in range(2)]
                    assert [(m.offset, m.payload["body"]) for m in missed] == [
                        (2, "while ann was away"),
                        (3, "and this"),
                    ]
