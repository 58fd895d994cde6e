"""The examples of docs/channels/client.rst: a bot on the Python client, and its test.

The page shows the parts between the ``# [name]`` markers.
"""

from __future__ import annotations

from typing import Any

import trio

from peregrine_rt._channels import Channels, Refuse, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt.client import JoinRefused, Message, PushError, SocketState, open_socket
from peregrine_rt.testing import open_server
from peregrine_rt.testing._channels import open_channels_client


class Chat(Channels):
    history = MemoryHistory()

    @topic("room:{name}")
    class Room:
        async def on_new_msg(self, socket: Socket, payload: Any) -> Any:
            if not str(payload.get("body", "")).strip():
                raise Refuse("empty")
            await socket.broadcast("new_msg", payload)
            return {"sent": True}


# [bot]
async def echo_bot(
    url: str, *, replies: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> list[str]:
    """Join room:lobby, answer ``replies`` messages, return what it heard."""
    heard: list[str] = []
    async with open_socket(url, params={"user": "bot"}) as socket:
        lobby = socket.channel("room:lobby", params={"nick": "bot"})
        async with lobby.messages("new_msg") as messages:  # subscribe first...
            await lobby.join()  # ...so nothing after the join is missed
            task_status.started()
            async for message in messages:
                body = message.payload["body"]
                heard.append(body)
                if not body.startswith("bot:"):  # not one of its own echoes
                    await lobby.push("new_msg", {"body": f"bot: {body}"})
                elif len(heard) >= 2 * replies:
                    break
    return heard


# [/bot]


# [errors]
async def say(url: str, topic: str, body: str) -> str:
    async with open_socket(url) as socket:
        channel = socket.channel(topic)
        try:
            await channel.join(timeout=5)
            await channel.push("new_msg", {"body": body}, timeout=5)
        except JoinRefused as exc:
            return f"refused: {exc.reason}"
        except PushError as exc:
            return f"not sent: {exc.response}"
        return "sent"


# [/errors]


async def test_the_bot_answers_over_a_real_socket() -> None:
    async with open_server(Chat) as live, trio.open_nursery() as nursery:
        heard: list[str] = []

        async def run_bot(task_status: trio.TaskStatus[None]) -> None:
            heard.extend(
                await echo_bot(live.ws_url + "/socket", replies=1, task_status=task_status)
            )

        await nursery.start(run_bot)
        async with open_socket(live.ws_url + "/socket") as socket:
            lobby = socket.channel("room:lobby")
            async with lobby.messages("new_msg") as messages:
                await lobby.join()
                await lobby.push("new_msg", {"body": "hello"})
                got = [(await messages.receive()).payload["body"] for _ in range(2)]
        assert got == ["hello", "bot: hello"]
    assert heard == ["hello", "bot: hello"]


# [test]
async def test_the_chat_with_the_testing_helper() -> None:
    async with open_channels_client(Chat, "/socket") as socket:
        assert socket.state is SocketState.OPEN
        lobby = socket.channel("room:helper")
        async with lobby.messages() as messages:
            await lobby.join()
            assert await lobby.push("new_msg", {"body": "hi"}) == {"sent": True}
            message: Message = await messages.receive()
            assert (message.event, message.payload, message.offset) == (
                "new_msg",
                {"body": "hi"},
                1,
            )


# [/test]


async def test_errors_are_typed() -> None:
    async with open_server(Chat) as live:
        assert await say(live.ws_url + "/socket", "room:a", "hi") == "sent"
        assert await say(live.ws_url + "/socket", "room:a", " ") == "not sent: {'reason': 'empty'}"
        assert await say(live.ws_url + "/socket", "nowhere", "hi") == "refused: unmatched topic"
