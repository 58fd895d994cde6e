"""A handler checked against pr.WebSocketHandler by mypy (docs/handlers.rst).

The page shows the part between the ``# [typed]`` markers.  The tests serve
the handler, and run mypy over this file and over a broken copy of it: the
Protocol must accept the one and reject the other.
"""

from __future__ import annotations

from pathlib import Path

from mypy import api

import peregrine_rt as pr
from peregrine_rt.testing import open_client


# [typed]
class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
        else:
            response.text("try /ws")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


_: type[pr.WebSocketHandler] = Echo  # mypy checks Echo here, at no cost at run time


def make_server(handler: type[pr.HTTPHandler], port: int = 0) -> pr.Server:
    return pr.Server(handler, port=port)  # any handler: WebSocketHandler is an HTTPHandler


# [/typed]


async def test_the_typed_handler_serves() -> None:
    assert make_server(Echo).spec.has_websocket
    async with open_client(Echo) as client:
        assert (await client.get("/")).text == "try /ws"
        async with client.websocket("/ws") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"


def test_mypy_holds_handlers_to_the_protocol(tmp_path: Path) -> None:
    source = Path(__file__).read_text()
    # An on_message that forgets binary messages is no longer a WebSocketHandler.
    broken = source.replace("message: str | bytes) -> None:", "message: str) -> None:")
    assert broken != source
    for name, text in (("typed_ok.py", source), ("typed_broken.py", broken)):
        (tmp_path / name).write_text(text)
    # The second run reuses the first one's cache of peregrine_rt and trio.
    options = ["--strict", "--follow-imports=silent", f"--cache-dir={tmp_path / 'cache'}"]
    good = api.run([*options, str(tmp_path / "typed_ok.py")])
    assert good[2] == 0, good[0]
    bad = api.run([*options, str(tmp_path / "typed_broken.py")])
    assert bad[2] == 1, bad[0]
    assert (
        '(expression has type "type[Echo]", variable has type "type[WebSocketHandler]")' in (bad[0])
    ), bad[0]
    assert "Found 1 error" in bad[0], bad[0]
