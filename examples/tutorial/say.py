"""Say something in a room of the tutorial's chat, then print what the room says.

``python -m examples.tutorial.say hello``: joins ``room:lobby`` of the server
on ``ws://127.0.0.1:8000/socket``, says ``hello``, prints each ``new_msg``
until Ctrl-C.  From step 3 on, the chat wants a nick first:
``python -m examples.tutorial.say hello --nick ada``.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

from peregrine_rt.client import open_socket

URL = "ws://127.0.0.1:8000/socket"


async def say(text: str, *, nick: str | None = None, url: str = URL, **options: Any) -> None:
    """Say ``text`` in the lobby (as ``nick``, if given), then print what the lobby says.

    ``options`` go to :func:`~peregrine_rt.client.open_socket` (the tests pass ``connect``).
    """
    async with open_socket(url, **options) as socket:
        if nick is not None:
            print("chat:", await socket.channel("chat", {"nick": nick}).join())
        lobby = socket.channel("room:lobby")
        async with lobby.messages("new_msg") as messages:
            print("joined:", await lobby.join())
            print("ack:", await lobby.push("new_msg", {"text": text}))
            async for message in messages:
                print(message.offset, message.payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--nick")
    parser.add_argument("--url", default=URL)
    args = parser.parse_args()
    trio.run(lambda: say(args.text, nick=args.nick, url=args.url))


if __name__ == "__main__":
    main()
