"""Bearer tokens, expiry and refresh, the token sections of docs/web/sessions.rst, run as tests.

The page shows the marked parts (tokens, chat) and ``sessions_tokens.js``
(the browser side), which a test here runs under Node.js with ``fetch``,
``location``, ``setInterval`` and ``WebSocket`` stood in for, and replays
what it did against the server.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt import Sessions, Tokens, bearer_auth, session_auth
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import WebSocketRejected, open_client
from peregrine_rt.testing._client import TEST_HOST

sessions = Sessions("dev-only-key-do-not-deploy")

# [tokens]
# HS256 wants a key of 32 bytes or more; several keys rotate as for sessions (newest first).
TOKEN_KEYS = os.environ.get("TOKEN_KEYS", "dev-only-token-key-do-not-deploy-0123").split()
tokens = Tokens(TOKEN_KEYS, audience="chat")
TOKEN_TTL = 300  # seconds: short, since a token cannot be revoked before its exp
bearer = bearer_auth(tokens)  # an authenticate hook for upgrade()
# [/tokens]


# [chat]
logged_in = session_auth(sessions)  # the login cookie of the section above


class Chat:
    """``POST /token`` gives a logged-in user a token; ``/ws`` takes it as a bearer token."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/token" and request.method == "POST":
            user = await logged_in(request)
            if user is None:
                raise HTTPError(401, "log in first")
            response.json({"token": tokens.issue(user.name, ttl=TOKEN_TTL)})
        elif request.path == "/ws":
            # The browser offers ["chat", "bearer.<token>"]: "chat" is chosen.
            await pr.upgrade(request, response, subprotocols=["chat"], authenticate=bearer)
        else:
            raise HTTPError(404)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        data = json.loads(message)
        if data.get("type") == "refresh":
            try:
                identity = tokens.verify(data["token"])  # HTTPError(401) if it does not verify
            except HTTPError as exc:
                await ws.send(json.dumps({"type": "error", "error": exc.detail}))
                return  # nothing changes: the socket still closes at the old expiry
            if identity.name != ws.user.name:
                await ws.send(json.dumps({"type": "error", "error": "another user"}))
                return
            ws.set_user(identity)  # the deadline moves to the new token's exp
        else:
            await ws.send(json.dumps({"from": ws.user.name, "text": data["text"]}))


# [/chat]


def login_cookie(user: str) -> dict[str, str]:
    """The session cookie the login page of the session section would have set."""
    return {"session": sessions.encode({"user": user})}


async def test_a_token_admits_through_the_subprotocol() -> None:
    async with open_client(Chat) as client:
        assert (await client.post("/token")).status == 401
        answer = await client.post("/token", cookies=login_cookie("ada"))
        token = answer.json()["token"]
        async with client.websocket("/ws", subprotocols=["chat", f"bearer.{token}"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send_json({"text": "hi"})
            assert await ws.receive_json() == {"from": "ada", "text": "hi"}
        # Without a token, or with one for another audience: 401 before the upgrade.
        other = Tokens(TOKEN_KEYS).issue("ada", ttl=60)
        for protocols in (["chat"], ["chat", f"bearer.{other}"]):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket("/ws", subprotocols=protocols):
                    pass
            assert refused.value.response.status == 401


async def test_expiry_closes_with_3000_and_a_refresh_keeps_the_socket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_client(Chat, timeout=1000, ws_ping_interval=None) as client:
        token = tokens.issue("ada", ttl=TOKEN_TTL)
        async with client.websocket("/ws", subprotocols=["chat", f"bearer.{token}"]) as ws:
            start = trio.current_time()
            close = await ws.receive_close()
            assert (close.code, close.reason) == (3000, "identity expired")
            assert TOKEN_TTL - 1 <= trio.current_time() - start <= TOKEN_TTL + 2
        token = tokens.issue("ada", ttl=TOKEN_TTL)
        async with client.websocket("/ws", subprotocols=["chat", f"bearer.{token}"]) as ws:
            start = trio.current_time()
            await trio.sleep(240)
            await ws.send_json({"type": "refresh", "token": "not a token"})
            assert await ws.receive_json() == {"type": "error", "error": "invalid token"}
            await ws.send_json({"type": "refresh", "token": tokens.issue("ada", ttl=TOKEN_TTL)})
            await trio.sleep(120)  # 360 s in: past the first token's exp
            await ws.send_json({"text": "still here"})
            assert await ws.receive_json() == {"from": "ada", "text": "still here"}
            close = await ws.receive_close()
            assert close.code == 3000
            assert 540 - 1 <= trio.current_time() - start <= 540 + 2


# Node.js runs sessions_tokens.js with the browser's globals stood in for.
HARNESS = """
const vm = require("vm"), fs = require("fs");
const out = (record) => console.log(JSON.stringify(record));
let interval = null, cleared = false, socket = null;
globalThis.location = { href: process.env.PAGE };
globalThis.fetch = async (path, init) => {
  out({ fetch: path, method: init.method });
  return { ok: true, json: async () => ({ token: process.env.TOKEN }) };
};
globalThis.setInterval = (callback, ms) => { interval = { callback, ms }; return 1; };
globalThis.clearInterval = () => { cleared = true; };
globalThis.WebSocket = class {
  constructor(url, protocols) { socket = this; out({ url: String(url), protocols }); }
  send(data) { out({ sent: JSON.parse(data) }); }
};
vm.runInThisContext(fs.readFileSync(process.env.SNIPPET, "utf8"));
(async () => {
  await connect((text) => out({ shown: text }));
  out({ every: interval.ms });
  await interval.callback();
  socket.onclose({ code: 3000 });
  out({ cleared });
})();
"""


async def test_the_browser_side(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    token = tokens.issue("ada", ttl=TOKEN_TTL)
    env = {
        **os.environ,
        "PAGE": f"https://{TEST_HOST}/chat/",
        "TOKEN": token,
        "SNIPPET": str(Path(__file__).with_name("sessions_tokens.js")),
    }
    ran = await trio.run_process([node, "-e", HARNESS], capture_stdout=True, env=env)
    records: list[dict[str, Any]] = [json.loads(line) for line in ran.stdout.splitlines()]
    assert records[0] == {"fetch": "/token", "method": "POST"}
    assert records[1] == {"url": f"wss://{TEST_HOST}/ws", "protocols": ["chat", f"bearer.{token}"]}
    assert records[2] == {"every": 240_000}
    assert records[3] == {"fetch": "/token", "method": "POST"}
    refresh = records[4]["sent"]
    assert refresh == {"type": "refresh", "token": token}
    assert records[5:] == [{"shown": "session expired: log in again"}, {"cleared": True}]
    # What the page did, replayed against the server: it is admitted and refreshes.
    async with open_client(Chat) as client:
        protocols = records[1]["protocols"]
        async with client.websocket("/ws", subprotocols=protocols) as ws:
            assert ws.subprotocol == "chat"
            await ws.send_json(refresh)
            await ws.send_json({"text": "hi"})
            assert await ws.receive_json() == {"from": "ada", "text": "hi"}
