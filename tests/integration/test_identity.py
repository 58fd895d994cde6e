"""Sessions, tokens and their authenticate hooks through a real server (memory streams).

The hook mechanics themselves (where ``authenticate`` runs, ``HTTPError``
answers) are tested in ``test_handshake_identity.py``; here the helpers built
on them: a login that sets a signed cookie, a socket admitted by it, bearer
tokens in their three carriers, a token's ``exp`` closing the socket with
3000 and a refresh over the socket keeping it open.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._auth import Identity, Tokens, bearer_auth, session_auth
from peregrine_rt._sessions import Sessions
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import WebSocketRejected, open_client, open_server, wait_until
from peregrine_rt.testing._client import TEST_HOST

TOKENS = Tokens("t" * 32)
SESSIONS = Sessions("s" * 32)


async def forbid(request: pr.Request) -> Identity | None:
    raise HTTPError(403, "not on the list")


class App:
    """``/login?user=`` sets the session; ``/me`` reads it; three WebSocket endpoints.

    * ``/ws``: bearer tokens (subprotocol ``chat`` chosen); a JSON message
      ``{"refresh": TOKEN}`` replaces the socket's identity.
    * ``/session``: the session cookie.
    * ``/closed``: an authenticate that always answers 403.
    """

    def __init__(self) -> None:
        self.hooks: list[tuple[Any, ...]] = []
        self.bearer = bearer_auth(TOKENS)
        self.session = session_auth(SESSIONS)

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/login":
            SESSIONS.save(response, {"user": request.query["user"]})
            response.text("welcome")
        elif request.path == "/logout":
            SESSIONS.clear(response)
            response.text("bye")
        elif request.path == "/me":
            who = await self.session(request) or await self.bearer(request)
            if who is None:
                raise HTTPError(401, "log in first")
            response.json({"user": who.name})
        elif request.path == "/ws":
            await pr.upgrade(request, response, subprotocols=["chat"], authenticate=self.bearer)
        elif request.path == "/session":
            await pr.upgrade(request, response, authenticate=self.session)
        elif request.path == "/closed":
            await pr.upgrade(request, response, authenticate=forbid)
        else:
            response.status = 404

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.hooks.append(("open", ws.user))
        await ws.send(json.dumps({"type": "welcome", "user": ws.user.name}))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        self.hooks.append(("message", ws.user))
        data = json.loads(message)
        if "refresh" in data:
            try:
                identity = TOKENS.verify(data["refresh"])
            except HTTPError as exc:
                await ws.send(json.dumps({"type": "refused", "why": exc.detail}))
                return
            if identity.name != ws.user.name:
                await ws.send(json.dumps({"type": "refused", "why": "another user"}))
                return
            ws.set_user(identity)
            await ws.send(json.dumps({"type": "refreshed", "expires_at": ws.expires_at}))
        else:
            await ws.send(json.dumps({"type": "echo", "user": ws.user.name, "text": data["text"]}))

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.hooks.append(("close", ws.user, code, reason))


def cookie_value(response: Any) -> str:
    return str(response.headers["set-cookie"]).split(";")[0].partition("=")[2]


async def test_login_sets_a_signed_cookie_that_admits_http_and_websocket() -> None:
    app = App()
    async with open_client(app) as client:
        login = await client.get("/login", params={"user": "ada"})
        assert login.status == 200
        attributes = login.headers["set-cookie"].split("; ")[1:]
        assert attributes == ["Max-Age=1209600", "Path=/", "HttpOnly", "SameSite=Lax"]
        cookie = cookie_value(login)
        me = await client.get("/me", cookies={"session": cookie})
        assert me.json() == {"user": "ada"}
        async with client.websocket("/session", cookies={"session": cookie}) as ws:
            assert await ws.receive_json() == {"type": "welcome", "user": "ada"}
        # No cookie, or one changed by a single character: no session.
        tampered = cookie[:5] + ("A" if cookie[5] != "A" else "B") + cookie[6:]
        for cookies in ({}, {"session": tampered}, {"session": "garbage"}):
            me = await client.get("/me", cookies=cookies)
            assert (me.status, me.text) == (401, "401 Unauthorized\nlog in first\n"), cookies
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/session", cookies=cookies):
                    pass
            assert refused.value.response.status == 401
        logout = await client.get("/logout")
        assert logout.headers["set-cookie"].startswith("session=; Max-Age=0; Path=/")


@pytest.mark.parametrize("carrier", ["subprotocol", "query", "header"])
async def test_a_bearer_token_admits_in_each_carrier(carrier: str) -> None:
    app = App()
    token = TOKENS.issue("ada", ttl=600, room="lobby")
    carriers: dict[str, dict[str, Any]] = {
        "subprotocol": {"subprotocols": ["chat", f"bearer.{token}"]},
        "query": {"params": {"token": token}, "subprotocols": ["chat"]},
        "header": {"headers": {"Authorization": f"Bearer {token}"}, "subprotocols": ["chat"]},
    }
    options = carriers[carrier]
    async with open_client(app) as client, client.websocket("/ws", **options) as ws:
        assert ws.subprotocol == "chat"  # never the bearer entry
        assert await ws.receive_json() == {"type": "welcome", "user": "ada"}
        await ws.send(json.dumps({"text": "hi"}))
        assert await ws.receive_json() == {"type": "echo", "user": "ada", "text": "hi"}
    opened = app.hooks[0]
    assert opened[0] == "open"
    assert opened[1].claims["room"] == "lobby"


async def test_no_token_or_a_bad_one_is_401_before_the_upgrade() -> None:
    app = App()
    good = TOKENS.issue("ada", ttl=600)
    tampered = good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB")
    foreign = Tokens("x" * 32).issue("ada", ttl=600)
    async with open_client(app) as client:
        for protocols, why in (
            (["chat"], "authentication required"),
            (["chat", f"bearer.{tampered}"], "invalid token"),
            (["chat", f"bearer.{foreign}"], "invalid token"),
        ):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/ws", subprotocols=protocols):
                    pass
            response = refused.value.response
            assert response.status == 401, why
            assert response.text == f"401 {why}\n"
        # The token check sends its challenge along.
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        # Over plain HTTP the same token works from the Authorization header.
        me = await client.get("/me", headers={"Authorization": f"Bearer {good}"})
        assert me.json() == {"user": "ada"}
        me = await client.get("/me", headers={"Authorization": f"Bearer {tampered}"})
        assert me.status == 401
    assert app.hooks == []  # no socket opened


async def test_an_authenticate_that_raises_403_refuses_with_403() -> None:
    app = App()
    async with open_client(app) as client:
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/closed"):
                pass
    assert refused.value.response.status == 403
    assert refused.value.response.text == "403 not on the list\n"
    assert app.hooks == []


async def test_ws_user_is_seen_by_every_hook() -> None:
    app = App()
    token = TOKENS.issue("ada", ttl=600)
    async with open_client(app) as client:
        async with client.websocket("/ws", subprotocols=["chat", f"bearer.{token}"]) as ws:
            await ws.receive_json()
            await ws.send(json.dumps({"text": "hi"}))
            await ws.receive_json()
        await wait_until(lambda: len(app.hooks) == 3)
    kinds = [hook[0] for hook in app.hooks]
    assert kinds == ["open", "message", "close"]
    users = {hook[1] for hook in app.hooks}
    assert len(users) == 1
    (user,) = users
    assert isinstance(user, Identity)
    assert user.name == "ada"
    assert user.expires_at == TOKENS.verify(token).expires_at
    assert app.hooks[2][2:] == (1000, "")


async def test_a_token_expiry_closes_the_socket_with_3000(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    token = TOKENS.issue("ada", ttl=30)
    async with open_client(app, timeout=100, ws_ping_interval=None) as client:
        async with client.websocket("/ws", subprotocols=["chat", f"bearer.{token}"]) as ws:
            start = trio.current_time()
            assert await ws.receive_json() == {"type": "welcome", "user": "ada"}
            close = await ws.receive_close()
            elapsed = trio.current_time() - start
            assert (close.code, close.reason) == (3000, "identity expired")
            # exp is whole seconds rounded up (30-31 s), the reaper ticks within 1 s.
            assert 29.5 <= elapsed <= 32.5, elapsed
        await wait_until(lambda: app.hooks and app.hooks[-1][0] == "close")
    assert app.hooks[-1][2:] == (3000, "identity expired")


async def test_a_refreshed_token_keeps_the_socket_past_the_first_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = App()
    async with open_client(app, timeout=100, ws_ping_interval=None) as client:
        token = TOKENS.issue("ada", ttl=30)
        async with client.websocket("/ws", subprotocols=["chat", f"bearer.{token}"]) as ws:
            start = trio.current_time()
            await ws.receive_json()
            await trio.sleep(20)  # virtual time
            # A refresh that does not verify changes nothing.
            await ws.send(json.dumps({"refresh": token[:-3] + "xyz"}))
            assert await ws.receive_json() == {"type": "refused", "why": "invalid token"}
            await ws.send(json.dumps({"refresh": TOKENS.issue("bob", ttl=30)}))
            assert await ws.receive_json() == {"type": "refused", "why": "another user"}
            # The real one: 30 s more from now.
            await ws.send(json.dumps({"refresh": TOKENS.issue("ada", ttl=30)}))
            answer = await ws.receive_json()
            assert answer["type"] == "refreshed"
            await trio.sleep(20)  # 40 s in: past the first token's expiry
            await ws.send(json.dumps({"text": "still here"}))
            assert await ws.receive_json() == {"type": "echo", "user": "ada", "text": "still here"}
            # The refreshed identity expires in its turn, about 50 s in.
            close = await ws.receive_close()
            elapsed = trio.current_time() - start
            assert (close.code, close.reason) == (3000, "identity expired")
            assert 49.5 <= elapsed <= 52.5, elapsed


async def test_the_origin_default_is_same_origin_and_checked_before_the_token() -> None:
    app = App()
    token = TOKENS.issue("ada", ttl=600)
    protocols = ["chat", f"bearer.{token}"]
    async with open_client(app) as client:
        for origin in (f"http://{TEST_HOST}", f"https://{TEST_HOST}"):
            async with client.websocket("/ws", subprotocols=protocols, headers={"Origin": origin}):
                pass
        for origin in ("http://evil.example", f"http://{TEST_HOST}:8080", "null"):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket(
                    "/ws", subprotocols=protocols, headers={"Origin": origin}
                ):
                    pass
            assert refused.value.response.status == 403, origin
        # A foreign origin is refused before the token is even looked at.
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/ws", headers={"Origin": "http://evil.example"}):
                pass
        assert refused.value.response.status == 403
    async with open_client(app, ws_allowed_origins=("*",)) as client:
        headers = {"Origin": "http://evil.example"}
        async with client.websocket("/ws", subprotocols=protocols, headers=headers) as ws:
            assert await ws.receive_json() == {"type": "welcome", "user": "ada"}


async def test_a_third_party_client_over_tcp_bearer_subprotocol_and_expiry() -> None:
    # The websockets library, as a stand-in for a browser: it offers the
    # subprotocols, must get a real one back, and sees the 3000 close.
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect
    from websockets.typing import Origin, Subprotocol

    app = App()
    async with open_server(app) as live:
        url = f"{live.ws_url}/ws"

        def client() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            token = TOKENS.issue("ada", ttl=0.5)  # exp rounded up: 0.5-1.5 s from now
            offer = [Subprotocol("chat"), Subprotocol(f"bearer.{token}")]
            with connect(url, subprotocols=offer, open_timeout=5) as conn:
                seen["subprotocol"] = conn.subprotocol
                seen["welcome"] = json.loads(conn.recv(timeout=5))
                try:
                    conn.recv(timeout=10)  # nothing comes but the close
                except ConnectionClosed as exc:
                    assert exc.rcvd is not None
                    seen["close"] = (exc.rcvd.code, exc.rcvd.reason)
            fresh = Subprotocol(f"bearer.{TOKENS.issue('ada', ttl=60)}")
            for protocols, origin in (
                ([Subprotocol("chat")], None),
                ([Subprotocol("chat"), fresh], Origin("http://evil.example")),
            ):
                try:
                    with connect(url, subprotocols=protocols, origin=origin, open_timeout=5):
                        pass
                except InvalidStatus as exc:
                    seen.setdefault("refused", []).append(exc.response.status_code)
            return seen

        seen = await trio.to_thread.run_sync(client)
    assert seen["subprotocol"] == "chat"
    assert seen["welcome"] == {"type": "welcome", "user": "ada"}
    assert seen["close"] == (3000, "identity expired")
    assert seen["refused"] == [401, 403]
