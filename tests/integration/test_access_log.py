"""Every answer the server sends is in the access log, with its status (issue: first contact).

``docs/handlers.rst`` promises one line per request with ``--access-log``; a
413 for a body over the limit, a 400 for a malformed request, a 101 upgrade,
a 408 and the 503 at the connection limit left none.
"""

from __future__ import annotations

import logging

import pytest

import peregrine_rt as pr
from tests.integration.conftest import Reader, get, open_server
from tests.integration.ws_helpers import connect_ws


class App:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
            return
        body = await request.body()
        response.text(f"{len(body)}")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        pass


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "peregrine_rt.access"]


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="peregrine_rt.access")
    return caplog


async def test_a_body_over_the_limit_is_logged_with_413(log: pytest.LogCaptureFixture) -> None:
    async with open_server(App, access_log=True, max_body_size=10) as h:
        stream = await h.connect()
        await stream.send_all(get("POST /up", "Content-Length: 100") + b"x" * 100)
        assert (await Reader(stream).response()).status == 413
    [line] = access_lines(log)
    assert '"-" 413 ' in line  # refused with the head, before a request existed


async def test_a_malformed_request_is_logged_with_400(log: pytest.LogCaptureFixture) -> None:
    async with open_server(App, access_log=True) as h:
        stream = await h.connect()
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        assert (await Reader(stream).response()).status == 400
    [line] = access_lines(log)
    assert line.endswith(tuple(f" 400 {n}" for n in range(1, 1000)))
    assert '"-" 400' in line


async def test_an_upgrade_is_logged_with_101(log: pytest.LogCaptureFixture) -> None:
    async with open_server(App, access_log=True) as h:
        ws = await connect_ws(h, path="/ws")
        await ws.close()
    assert any('"GET /ws HTTP/1.1" 101 0' in line for line in access_lines(log))


async def test_the_503_at_the_limit_is_logged(log: pytest.LogCaptureFixture) -> None:
    async with open_server(App, transport="tcp", access_log=True, max_connections=1) as h:
        kept = await h.connect()
        await h.wait_connections(1)
        refused = await h.connect()
        assert (await Reader(refused).response()).status == 503
        await kept.aclose()
    assert any(line.endswith('"-" 503 0') for line in access_lines(log))


async def test_nothing_is_logged_without_access_log(log: pytest.LogCaptureFixture) -> None:
    async with open_server(App, max_body_size=10) as h:
        stream = await h.connect()
        await stream.send_all(get("POST /up", "Content-Length: 100") + b"x" * 100)
        assert (await Reader(stream).response()).status == 413
    assert access_lines(log) == []
