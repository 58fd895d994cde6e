"""The mistakes of docs/mistakes.rst made from Python; their messages are mistakes_python.txt.

Each test below makes one mistake; the message it gets, as
``ExceptionType: message``, must be the next line of the file.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import peregrine_rt as pr
from peregrine_rt.testing import open_client

QUOTED = (Path(__file__).parent / "mistakes_python.txt").read_text().splitlines()


def line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Upload:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text(f"{len(await request.body())} bytes\n")


# [static]
class Site(pr.StaticMixin):
    websocket_paths = ()  # forgot: static = pr.DirServer("static")


# [/static]


async def test_test_client_options() -> None:
    seen = []
    async with open_client(Upload) as client:
        # [client]
        with pytest.raises(TypeError) as typo:
            await client.post("/upload", jsn={"name": "report"})
        with pytest.raises(TypeError) as files:
            await client.post("/upload", file={"report": b"..."})
        # [/client]
    seen += [line(typo.value), line(files.value)]
    assert seen == QUOTED[0:2]


def test_static_mixin_without_static() -> None:
    with pytest.raises(pr.HandlerError) as raised:
        # [static-build]
        pr.Server(Site)
        # [/static-build]
    assert line(raised.value) == QUOTED[2]


def test_run_on_a_busy_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as raised:
            pr.run(Upload, host="127.0.0.1", port=port)
    assert line(raised.value) == QUOTED[3]
