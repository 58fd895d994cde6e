"""Identity at the handshake, the same-origin default and HTTPError answers, through a server.

The helpers that build identities (sessions, tokens) have their own tests;
here the hook itself: where it runs, what its answers do, and the expiry
deadline it arms on the socket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._upgrade import origin_allowed
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import WebSocketRejected, open_client, wait_until
from peregrine_rt.testing._client import TEST_HOST


@dataclass(frozen=True)
class Who:
    name: str
    expires_at: float | None = None


class Guarded:
    """Admits ``?user=NAME``; ``?user=banned`` is forbidden; no user is refused."""

    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = ttl
        self.seen: list[tuple[str, Any]] = []
        self.closed: list[tuple[int, str]] = []

    async def authenticate(self, request: pr.Request) -> Who | None:
        name = request.query.get("user")
        if name == "banned":
            raise HTTPError(403, "banned", {"x-why": "banned", "status": "odd but allowed"})
        if name is None:
            return None
        return Who(name, None if self.ttl is None else time.time() + self.ttl)

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            ws = await pr.upgrade(request, response)
            assert ws.user is request.user
            return
        if request.path == "/teapot":
            response.set_cookie("seen", "1")
            raise HTTPError(418, "short and stout", {"x-pot": "yes"})
        response.text("ok")

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.seen.append(("open", ws.user))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        if message == "refresh":
            ws.set_user(Who(ws.user.name, time.time() + 60))
            await ws.send("refreshed")
            return
        await ws.send(f"{ws.user.name}: {message!s}")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.append((code, reason))


async def test_authenticate_admits_refuses_and_forbids() -> None:
    app = Guarded()
    async with open_client(app) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/ws"):
                pass
        assert refused.value.response.status == 401
        assert refused.value.response.headers["www-authenticate"].startswith("Bearer")
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/ws?user=banned"):
                pass
        assert refused.value.response.status == 403
        assert refused.value.response.headers["x-why"] == "banned"
        assert refused.value.response.headers["status"] == "odd but allowed"
        assert app.seen == []  # neither opened
        async with client.websocket("/ws?user=ada") as ws:
            await ws.send("hi")
            assert await ws.receive() == "ada: hi"
            await ws.close()
        await wait_until(lambda: app.closed)
    assert app.seen == [("open", Who("ada"))]


async def test_expiry_closes_with_3000_unless_refreshed(autojump_clock: trio.abc.Clock) -> None:
    app = Guarded(ttl=30)
    async with open_client(app, timeout=None, ws_ping_interval=None) as client:
        async with client.websocket("/ws?user=ada") as ws:
            await ws.send("hi")
            assert await ws.receive() == "ada: hi"
            start = trio.current_time()
            with pytest.raises(pr.ConnectionClosed) as closed:
                await ws.receive()
            assert closed.value.code == 3000
            assert closed.value.reason == "identity expired"
            assert 29 <= trio.current_time() - start <= 32  # the reaper ticks within a second
        await wait_until(lambda: app.closed)
        assert app.closed == [(3000, "identity expired")]
        async with client.websocket("/ws?user=bob") as ws:
            await trio.sleep(20)  # autojump clock: no real time passes
            await ws.send("refresh")
            assert await ws.receive() == "refreshed"
            await trio.sleep(40)  # past the first expiry, before the refreshed one
            await ws.send("still")
            assert await ws.receive() == "bob: still"
            await ws.close()


async def test_same_origin_is_the_default() -> None:
    app = Guarded()
    async with open_client(app) as client:
        host = TEST_HOST
        for origin in (f"http://{host}", f"https://{host}", None):
            headers = {} if origin is None else {"Origin": origin}
            async with client.websocket("/ws?user=ada", headers=headers) as ws:
                await ws.close()
        for origin in ("http://evil.example", f"http://{host}.evil.example", "null"):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/ws?user=ada", headers={"Origin": origin}):
                    pass
            assert refused.value.response.status == 403, origin
    async with (
        open_client(app, ws_allowed_origins=("*",)) as client,
        client.websocket("/ws?user=ada", headers={"Origin": "http://evil.example"}) as ws,
    ):
        await ws.close()


async def test_http_error_answers_keep_cookies_and_the_connection() -> None:
    async with open_client(Guarded()) as client:
        response = await client.get("/teapot")
        assert response.status == 418
        assert response.text == "418 I'm a Teapot\nshort and stout\n"
        assert response.headers["x-pot"] == "yes"
        assert response.headers["set-cookie"].startswith("seen=1")
        assert (await client.get("/")).text == "ok"  # the same connection goes on


def test_http_error_needs_an_error_status() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        HTTPError(302)


def test_a_misnamed_or_sync_authenticate_is_refused_at_build() -> None:
    class Typo(Guarded):
        async def on_authenticate(self, request: pr.Request) -> None:  # a near miss
            return None

    with pytest.raises(pr.HandlerError, match="did you mean authenticate"):
        pr.Server(Typo)

    class Sync:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            pass

        def authenticate(self, request: pr.Request) -> None:
            return None

    with pytest.raises(pr.HandlerError, match=r"Sync\.authenticate must be async def"):
        pr.Server(Sync)


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "expected"),
    [
        (None, "app.example", None, True),  # not a browser
        ("https://app.example", "app.example", None, True),
        ("https://app.example:443", "app.example", None, True),
        ("http://app.example", "app.example:80", None, True),
        ("http://app.example:8000", "app.example:8000", None, True),
        ("http://APP.example:8000", "app.example:8000", None, True),
        ("http://app.example:8001", "app.example:8000", None, False),
        ("http://app.example", "app.example:8000", None, False),
        ("http://[::1]:8000", "[::1]:8000", None, True),
        ("http://[::1]:8000", "[::2]:8000", None, False),
        ("null", "app.example", None, False),
        ("file://", "app.example", None, False),
        ("http://app.example:99999", "app.example", None, False),
        ("https://app.example", None, None, False),
        ("https://other.example", "app.example", ("https://other.example",), True),
        ("https://app.example", "app.example", ("https://other.example",), False),
        (None, "app.example", ("https://other.example",), False),
        ("https://evil.example", "app.example", ("*",), True),
    ],
)
def test_origin_rules(
    origin: str | None, host: str | None, allowed: tuple[str, ...] | None, expected: bool
) -> None:
    assert origin_allowed(origin, host, allowed) is expected
