"""The Channels handler through a real server: joins, events, replies, broadcasts, errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from peregrine_rt._channels._server import Channels, Socket
from peregrine_rt._channels._topics import Refuse, topic
from peregrine_rt._routing import Router
from peregrine_rt.testing import open_client, open_server, wait_until

from .conftest import Phx


class Chat(Channels):
    @topic("room:{name}")
    class Room:
        async def join(self, socket: Socket, params: dict[str, Any]) -> dict[str, Any] | None:
            if socket.params["name"] == "secret":
                raise Refuse("unauthorized")
            if params.get("crash"):
                raise RuntimeError("boom")
            socket.assigns["nick"] = params.get("nick", "anon")
            return {"room": socket.params["name"]}

        async def on_new_msg(self, socket: Socket, payload: Any) -> Any:
            await socket.broadcast("new_msg", {"from": socket.assigns["nick"], **payload})
            return {"sent": True}

        async def on_typing(self, socket: Socket, payload: Any) -> None:
            await socket.broadcast_from("typing", {"nick": socket.assigns["nick"]})

        async def on_crash(self, socket: Socket, payload: Any) -> None:
            raise RuntimeError("callback crashed")

        async def on_deny(self, socket: Socket, payload: Any) -> None:
            raise Refuse("not_now", retry=3)

        async def leave(self, socket: Socket) -> None:
            socket.ws.state.setdefault("left", []).append(socket.topic)

    @topic("news")
    class News:
        pass


async def test_join_reply_and_heartbeat() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket?vsn=2.0.0") as ws:
        phx = Phx(ws)
        join_ref, frame = await phx.join("room:lobby", {"nick": "ann"})
        assert frame == [
            join_ref,
            join_ref,
            "room:lobby",
            "phx_reply",
            {"status": "ok", "response": {"room": "lobby"}},
        ]
        ref = await phx.send(None, "phoenix", "heartbeat", {})
        assert await phx.receive() == [
            None,
            ref,
            "phoenix",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]


async def test_refused_and_unmatched_joins() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        _, frame = await phx.join("room:secret")
        assert frame[4] == {"status": "error", "response": {"reason": "unauthorized"}}
        _, frame = await phx.join("nowhere")
        assert frame[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
        _, frame = await phx.join("room:a:b")  # {name} does not match across ':'
        assert frame[4]["response"]["reason"] == "unmatched topic"
        _, frame = await phx.join("news")
        assert frame[4] == {"status": "ok", "response": {}}


async def test_join_crash_is_an_error_reply(caplog: pytest.LogCaptureFixture) -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        _, frame = await phx.join("room:x", {"crash": True})
        assert frame[4] == {"status": "error", "response": {"reason": "join crashed"}}
        _, frame = await phx.join("room:x")  # the socket stays usable
        assert frame[4]["status"] == "ok"
    assert "the join callback raised" in caplog.text


async def test_event_reply_and_broadcast_reach_every_member() -> None:
    async with (
        open_client(Chat) as client,
        client.websocket("/socket/websocket") as ws1,
        client.websocket("/socket/websocket") as ws2,
    ):
        a, b = Phx(ws1), Phx(ws2)
        ja, _ = await a.join("room:lobby", {"nick": "ann"})
        await b.join("room:lobby", {"nick": "bob"})
        ref = await a.send(ja, "room:lobby", "new_msg", {"body": "hi"})
        expected = [None, None, "room:lobby", "new_msg", {"from": "ann", "body": "hi"}]
        first, second = await a.receive(), await a.receive()
        assert expected in (first, second)
        assert [
            ja,
            ref,
            "room:lobby",
            "phx_reply",
            {"status": "ok", "response": {"sent": True}},
        ] in (
            first,
            second,
        )
        assert await b.receive() == expected


async def test_broadcast_from_skips_the_sender() -> None:
    async with (
        open_client(Chat) as client,
        client.websocket("/socket/websocket") as ws1,
        client.websocket("/socket/websocket") as ws2,
    ):
        a, b = Phx(ws1), Phx(ws2)
        ja, _ = await a.join("room:lobby", {"nick": "ann"})
        await b.join("room:lobby", {"nick": "bob"})
        ref = await a.send(ja, "room:lobby", "typing", {})
        assert await b.receive() == [None, None, "room:lobby", "typing", {"nick": "ann"}]
        # ann gets only the ack, then the next thing (a heartbeat reply), never her own typing
        assert (await a.receive())[1] == ref
        hb = await a.send(None, "phoenix", "heartbeat", {})
        assert (await a.receive())[1] == hb


async def test_app_broadcast_without_a_socket() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        await phx.join("news")
        await client.app.broadcast("news", "headline", {"t": 1})
        assert await phx.receive() == [None, None, "news", "headline", {"t": 1}]
        with pytest.raises(ValueError, match="protocol event"):
            await client.app.broadcast("news", "phx_reply", {})


async def test_unmatched_topic_for_an_event_not_joined() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        ref = await phx.send("9", "room:lobby", "new_msg", {"body": "x"})
        assert await phx.receive() == [
            "9",
            ref,
            "room:lobby",
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        ]


async def test_callback_crash_sends_phx_error_and_socket_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        jr, _ = await phx.join("room:lobby")
        await phx.send(jr, "room:lobby", "crash", {})
        assert await phx.receive() == [jr, jr, "room:lobby", "phx_error", {}]
        # the join is gone: a new event is unmatched; a rejoin works
        await phx.send(jr, "room:lobby", "new_msg", {})
        assert (await phx.receive())[4]["response"]["reason"] == "unmatched topic"
        jr2, frame = await phx.join("room:lobby")
        assert frame[4]["status"] == "ok"
        await phx.send(jr2, "room:lobby", "crash", {})
        assert (await phx.receive())[3] == "phx_error"
    assert caplog.text.count("the crash callback raised") == 1  # logged once with traceback
    assert "crash raised again" in caplog.text


async def test_refuse_from_an_event_is_an_error_reply() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        jr, _ = await phx.join("room:lobby")
        ref = await phx.send(jr, "room:lobby", "deny", {})
        assert await phx.receive() == [
            jr,
            ref,
            "room:lobby",
            "phx_reply",
            {"status": "error", "response": {"reason": "not_now", "retry": 3}},
        ]
        ref = await phx.send(jr, "room:lobby", "what", {})
        assert (await phx.receive())[4]["response"]["reason"] == "unknown event"


async def test_leave_and_duplicate_join() -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        jr1, _ = await phx.join("room:lobby")
        jr2, reply = await phx.join("room:lobby")  # the first join is closed first
        assert reply == [jr1, jr1, "room:lobby", "phx_close", {}]
        assert (await phx.receive())[:4] == [jr2, jr2, "room:lobby", "phx_reply"]
        assert len(client.app.members("room:lobby")) == 1
        ref = await phx.send(jr2, "room:lobby", "phx_leave", {})
        assert await phx.receive() == [
            jr2,
            ref,
            "room:lobby",
            "phx_reply",
            {"status": "ok", "response": {}},
        ]
        assert await phx.receive() == [jr2, jr2, "room:lobby", "phx_close", {}]
        assert client.app.members("room:lobby") == []
        await client.app.broadcast("room:lobby", "new_msg", {})
        hb = await phx.send(None, "phoenix", "heartbeat", {})
        assert (await phx.receive())[1] == hb  # nothing of the room after leaving


async def test_close_calls_leave_and_empties_the_topic() -> None:
    async with open_client(Chat) as client:
        async with client.websocket("/socket/websocket") as ws:
            await Phx(ws).join("room:lobby")
            assert len(client.app.members("room:lobby")) == 1
        await wait_until(lambda: client.app.members("room:lobby") == [])
        assert client.server is not None
        assert client.server.hub.topics() == []


@pytest.mark.parametrize(
    ("message", "code"),
    [("nope", 1007), ("{}", 1008), ('[null,null,"t","e"]', 1008), (b"\x00", 1003)],
)
async def test_malformed_messages_close(message: str | bytes, code: int) -> None:
    async with open_client(Chat) as client, client.websocket("/socket/websocket") as ws:
        await ws.send(message)
        close = await ws.receive_close()
        assert close.code == code


async def test_vsn_1_is_refused_and_phoenix_subprotocol_chosen() -> None:
    async with open_client(Chat) as client:
        response = await client.get("/socket/websocket?vsn=1.0.0")
        assert response.status == 400
        async with client.websocket("/socket/websocket", subprotocols=["phoenix"]) as ws:
            assert ws.subprotocol == "phoenix"


async def test_mounted_as_a_router_websocket_route_with_identity() -> None:
    async def authenticate(request: Any) -> str | None:
        token: str | None = request.query.get("token")
        return token

    class WhoAmI(Channels):
        @topic("me")
        class Me:
            async def join(self, socket: Socket, params: Any) -> dict[str, Any]:
                return {"user": socket.user}

    router = Router()
    router.websocket(
        "/socket/websocket", WhoAmI, authenticate=authenticate, subprotocols=Channels.SUBPROTOCOLS
    )
    async with open_client(router) as client, client.websocket("/socket/websocket?token=ann") as ws:
        _, frame = await Phx(ws).join("me")
        assert frame[4]["response"] == {"user": "ann"}


async def test_a_second_independent_client_websockets_library() -> None:
    # The websockets library's sync client, in a thread, against a real port.
    async with open_server(Chat) as server:
        url = server.ws_url + "/socket/websocket?vsn=2.0.0"

        def talk() -> list[Any]:
            with connect(url, subprotocols=[Subprotocol("phoenix")]) as conn:
                assert conn.subprotocol == "phoenix"
                conn.send(json.dumps(["1", "1", "room:lobby", "phx_join", {"nick": "py"}]))
                got = [json.loads(conn.recv(timeout=10))]
                conn.send(json.dumps(["1", "2", "room:lobby", "new_msg", {"body": "x"}]))
                got.append(json.loads(conn.recv(timeout=10)))
                got.append(json.loads(conn.recv(timeout=10)))
                return got

        frames = await trio.to_thread.run_sync(talk)
        assert frames[0][4] == {"status": "ok", "response": {"room": "lobby"}}
        assert [None, None, "room:lobby", "new_msg", {"from": "py", "body": "x"}] in frames[1:]
