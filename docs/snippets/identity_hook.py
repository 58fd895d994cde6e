"""The authenticate hook, ws.user and a refreshed expiry (docs/web/identity.rst).

The page shows the part between the ``# [hook]`` markers; the tests below
serve it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import WebSocketRejected, open_client

API_KEYS = {"k-ada": "ada", "k-bob": "bob"}


# [hook]
@dataclass(frozen=True)
class User:
    name: str
    expires_at: float | None = None  # UNIX time: the socket closes with 3000 then


class Feed:
    async def authenticate(self, request: pr.Request) -> User | None:
        key = request.headers.get("x-api-key") or request.query.get("key")
        if key is None:
            return None  # 401: the handshake is refused before the 101
        name = API_KEYS.get(key)
        if name is None:
            raise HTTPError(403, "unknown key")
        return User(name, expires_at=time.time() + 3600)

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)  # runs authenticate first

    async def on_open(self, ws: pr.WebSocket) -> None:
        await ws.send(f"hello {ws.user.name}")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("renew "):
            name = API_KEYS.get(message.removeprefix("renew "))
            if name != ws.user.name:
                await ws.close(1008, "bad key")
                return
            ws.set_user(User(name, expires_at=time.time() + 3600))  # another hour
            await ws.send(f"renewed until {ws.expires_at:.0f}")


# [/hook]


async def test_the_hook_admits_and_refuses() -> None:
    async with open_client(Feed) as client:
        for headers, status in (({}, 401), ({"X-Api-Key": "nope"}, 403)):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/", headers=headers):
                    pass
            assert refused.value.response.status == status
        async with client.websocket("/?key=k-ada") as ws:
            assert await ws.receive() == "hello ada"
            await ws.close()


async def test_an_hour_later_it_closes_unless_renewed(autojump_clock: trio.abc.Clock) -> None:
    async with (
        open_client(Feed, timeout=None, ws_ping_interval=None) as client,
        client.websocket("/", headers={"X-Api-Key": "k-bob"}) as ws,
    ):
        assert await ws.receive() == "hello bob"
        opened = trio.current_time()
        await trio.sleep(3000)
        await ws.send("renew k-bob")
        assert (await ws.receive()).startswith("renewed until")
        await trio.sleep(1000)  # past the first hour: still open
        with pytest.raises(pr.ConnectionClosed) as closed:
            await ws.receive()  # until the renewed hour is over
        assert (closed.value.code, closed.value.reason) == (3000, "identity expired")
        assert 6600 <= trio.current_time() - opened <= 6602  # the renewed hour, not the first
