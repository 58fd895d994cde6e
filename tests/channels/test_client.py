"""The Python client (peregrine_rt.client) against a fake Phoenix server, then the real Channels.

The fake server (:class:`FakePhoenix`) is a plain peregrine_rt handler that
answers joins, leaves, heartbeats and a few events per the protocol, and can
be told to misbehave (refuse, stay silent, replay a duplicate, change epoch),
so that each client behaviour is shown on its own.  The client reaches it in
memory (``open_channels_connector``), under the autojump clock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt._channels._phoenix import Frame, decode, encode, publication_ref, reply
from peregrine_rt._channels._server import Channels, Socket
from peregrine_rt._channels._sqlite import SQLiteHistory
from peregrine_rt._channels._topics import Refuse, topic
from peregrine_rt.client import (
    Backoff,
    ChannelClosed,
    ChannelState,
    JoinRefused,
    Message,
    PushError,
    PushTimeout,
    SocketState,
    open_socket,
    sync_diff,
    sync_state,
)
from peregrine_rt.testing import open_server, wait_until
from peregrine_rt.testing._channels import (
    TEST_URL,
    ChannelsConnector,
    open_channels_client,
    open_channels_connector,
)

FAST = Backoff(initial=0.1, maximum=2.0)


class FakePhoenix:
    """Just enough of a Phoenix server, recording what the client sends."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.targets: list[str] = []
        self.subprotocols: list[str | None] = []
        self.members: dict[pr.WebSocket, dict[str, str]] = {}  # ws -> topic -> join_ref
        self.refused: dict[str, str] = {}  # topic -> reason
        self.answer_heartbeats = True
        self.epoch = "e1"
        self.log: dict[str, list[tuple[int, str, Any]]] = {}
        self.duplicate_replay = False
        self.presence: dict[str, Any] | None = None

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        self.targets.append(bytes(request.target).decode())
        if request.query.get("token") == "bad":
            raise pr.HTTPError(403, "bad token")
        ws = await pr.upgrade(request, response, subprotocols=("phoenix",), authenticate=None)
        self.subprotocols.append(ws.subprotocol)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.members[ws] = {}

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.members.pop(ws, None)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        frame = decode(message)
        self.frames.append(frame)
        if frame.event == "heartbeat":
            if self.answer_heartbeats:
                await ws.send(encode(reply(frame, "ok")))
        elif frame.event == "phx_join":
            await self._join(ws, frame)
        elif frame.event == "phx_leave":
            self.members[ws].pop(frame.topic, None)
            await ws.send(encode(reply(frame, "ok")))
            await ws.send(
                encode(Frame(frame.join_ref, frame.join_ref, frame.topic, "phx_close", {}))
            )
        elif frame.event == "echo":
            await ws.send(encode(reply(frame, "ok", {"echo": frame.payload})))
        elif frame.event == "fail":
            await ws.send(encode(reply(frame, "error", {"reason": "nope"})))
        # "silent": no reply

    async def _join(self, ws: pr.WebSocket, frame: Frame) -> None:
        if frame.topic in self.refused:
            await ws.send(encode(reply(frame, "error", {"reason": self.refused[frame.topic]})))
            return
        log = self.log.setdefault(frame.topic, [])
        last = log[-1][0] if log else 0
        response: dict[str, Any] = {"epoch": self.epoch, "offset": last}
        missed: list[tuple[int, str, Any]] = []
        since = frame.payload.get("since")
        if since is not None:
            response["recovered"] = since["epoch"] == self.epoch
            if response["recovered"]:
                missed = [entry for entry in log if entry[0] > since["offset"]]
                if self.duplicate_replay and since["offset"] > 0:
                    missed.insert(0, log[since["offset"] - 1])  # one the client has
            else:
                response["reason"] = "epoch_changed"
        self.members[ws][frame.topic] = str(frame.join_ref)
        await ws.send(encode(reply(frame, "ok", response)))
        for offset, event, payload in missed:
            await ws.send(encode(Frame(None, publication_ref(offset), frame.topic, event, payload)))
        if self.presence is not None:
            await ws.send(
                encode(Frame(frame.join_ref, None, frame.topic, "presence_state", self.presence))
            )

    async def publish(self, topic: str, event: str, payload: Any) -> int:
        log = self.log.setdefault(topic, [])
        offset = (log[-1][0] if log else 0) + 1
        log.append((offset, event, payload))
        await self.push_all(topic, Frame(None, publication_ref(offset), topic, event, payload))
        return offset

    async def push_all(self, topic: str, frame: Frame) -> None:
        for ws, topics in list(self.members.items()):
            if topic in topics:
                await ws.send(encode(frame))

    def sent(self, event: str) -> list[Frame]:
        return [f for f in self.frames if f.event == event]

    def restart(self, *, epoch: str | None = None) -> None:
        """Forget members (the client reconnects anyway); a new epoch if given."""
        if epoch is not None:
            self.epoch = epoch
            self.log = {}


@asynccontextmanager
async def fake_socket(
    app: FakePhoenix, **options: Any
) -> AsyncIterator[tuple[pr.client.Socket, ChannelsConnector]]:
    options.setdefault("backoff", FAST)
    async with open_channels_connector(app) as connector:
        assert connector is not None
        async with open_socket(TEST_URL + "/socket", connect=connector, **options) as socket:
            yield socket, connector


async def next_message(messages: trio.MemoryReceiveChannel[Message]) -> Message:
    with trio.fail_after(5):
        return await messages.receive()


# -- the fake server ------------------------------------------------------------------


async def test_join_sends_params_on_the_phoenix_url_and_returns_the_response() -> None:
    app = FakePhoenix()
    async with fake_socket(app, params={"token": "t1"}) as (socket, _):
        assert socket.state is SocketState.OPEN
        room = socket.channel("room:1", params=lambda: {"nick": "ann"})
        response = await room.join()
        assert response == {"epoch": "e1", "offset": 0}
        assert room.state is ChannelState.JOINED
        assert app.targets == ["/socket/websocket?vsn=2.0.0&token=t1"]
        (join,) = app.sent("phx_join")
        assert (join.join_ref, join.topic, join.payload) == (join.ref, "room:1", {"nick": "ann"})


async def test_a_token_is_offered_as_phoenix_js_offers_it() -> None:
    app = FakePhoenix()
    async with fake_socket(app, token="secret") as (socket, _):
        assert socket.subprotocol == "phoenix"
        assert app.subprotocols == ["phoenix"]


async def test_a_refused_handshake_raises_on_entry() -> None:
    app = FakePhoenix()
    with pytest.raises(pr.HandshakeError) as caught:
        async with fake_socket(app, params={"token": "bad"}):
            pytest.fail("the block must not run")  # pragma: no cover
    assert caught.value.status == 403


async def test_a_refused_join_raises_with_the_reason_and_closes_the_channel() -> None:
    app = FakePhoenix()
    app.refused["room:secret"] = "unauthorized"
    async with fake_socket(app) as (socket, _):
        room = socket.channel("room:secret")
        with pytest.raises(JoinRefused) as caught:
            await room.join()
        assert caught.value.reason == "unauthorized"
        assert room.state is ChannelState.CLOSED
        with pytest.raises(ChannelClosed):
            await room.push("echo", {})


async def test_push_returns_the_reply_or_raises_the_error() -> None:
    app = FakePhoenix()
    async with fake_socket(app) as (socket, _):
        room = socket.channel("room:1")
        await room.join()
        assert await room.push("echo", {"n": 1}) == {"echo": {"n": 1}}
        with pytest.raises(PushError) as caught:
            await room.push("fail")
        assert (caught.value.status, caught.value.reason) == ("error", "nope")


async def test_an_unanswered_push_times_out(autojump_clock: trio.testing.MockClock) -> None:
    app = FakePhoenix()
    async with fake_socket(app, heartbeat=None) as (socket, _):
        room = socket.channel("room:1")
        await room.join()
        start = trio.current_time()
        with pytest.raises(PushTimeout) as caught:
            await room.push("silent", {}, timeout=3)
        assert trio.current_time() - start == pytest.approx(3)
        assert (caught.value.event, caught.value.timeout) == ("silent", 3)


async def test_heartbeats_flow_and_an_unanswered_one_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = FakePhoenix()
    async with fake_socket(app, heartbeat=5) as (socket, connector):
        async with socket.state_changes() as changes:
            await trio.sleep(16)
            beats = app.sent("heartbeat")
            assert [(f.join_ref, f.topic, f.payload) for f in beats] == [(None, "phoenix", {})] * 3
            assert connector.connections == 1
            app.answer_heartbeats = False
            await wait_until(lambda: connector.connections == 2, timeout=30)
            seen = [changes.receive_nowait() for _ in range(4)]
        assert [c.state for c in seen] == [
            SocketState.CLOSED,
            SocketState.RECONNECTING,
            SocketState.CONNECTING,
            SocketState.OPEN,
        ]
        assert seen[0].reason is not None and "heartbeat" in seen[0].reason
        assert seen[1].delay is not None and 0 <= seen[1].delay <= FAST.ceiling(0)


async def test_a_dropped_connection_reconnects_with_backoff_and_rejoins_with_since(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = FakePhoenix()
    async with fake_socket(app) as (socket, connector):
        room = socket.channel("room:1")
        async with room.messages("new") as messages, room.joins() as joins:
            await room.join()
            assert (await joins.receive()).rejoin is False
            for n in range(2):
                await app.publish("room:1", "new", {"n": n})
            assert [(await next_message(messages)).offset for _ in range(2)] == [1, 2]
            async with socket.state_changes() as changes:
                connector.refuse = True
                await connector.drop_all()
                # refused attempts back off: ceilings 0.1, 0.2, 0.4... with full jitter
                delays: list[tuple[int, float]] = []
                while len(delays) < 4:
                    change = await changes.receive()
                    if change.state is SocketState.RECONNECTING:
                        assert change.delay is not None
                        delays.append((change.attempt, change.delay))
                for attempt, delay in delays:
                    assert 0 <= delay <= FAST.ceiling(attempt - 1)
                await app.publish("room:1", "new", {"n": 2})  # missed while away
                connector.refuse = False
            rejoined = await joins.receive()
            assert (rejoined.rejoin, rejoined.recovered) == (True, True)
            assert room.recovered is True
            message = await next_message(messages)
            assert (message.offset, message.payload) == (3, {"n": 2})
        rejoin = app.sent("phx_join")[-1]
        assert rejoin.payload == {"since": {"offset": 2, "epoch": "e1"}}


async def test_a_replayed_duplicate_is_not_delivered_twice() -> None:
    app = FakePhoenix()
    app.duplicate_replay = True
    async with fake_socket(app) as (socket, connector):
        room = socket.channel("room:1")
        async with room.messages() as messages:
            await room.join()
            await app.publish("room:1", "new", "a")
            await app.publish("room:1", "new", "b")
            assert [(await next_message(messages)).payload for _ in range(2)] == ["a", "b"]
            await connector.drop_all()
            await room.wait_joined()  # the server replays offset 2 (which we have) first
            await wait_until(lambda: room.state is ChannelState.JOINED and len(app.members) == 1)
            await app.publish("room:1", "new", "c")
            message = await next_message(messages)
            assert (message.offset, message.payload) == (3, "c")


async def test_a_new_epoch_is_not_recovered_and_offsets_start_again() -> None:
    app = FakePhoenix()
    async with fake_socket(app) as (socket, connector):
        room = socket.channel("room:1")
        async with room.messages() as messages, room.joins() as joins:
            await room.join()
            await joins.receive()
            for n in range(3):
                await app.publish("room:1", "new", n)
            assert [(await next_message(messages)).offset for _ in range(3)] == [1, 2, 3]
            app.restart(epoch="e2")
            await connector.drop_all()
            rejoined = await joins.receive()
            assert (rejoined.recovered, rejoined.reason) == (False, "epoch_changed")
            assert room.position == (0, "e2")
            await app.publish("room:1", "new", "fresh")  # offset 1 again, in the new epoch
            message = await next_message(messages)
            assert (message.offset, message.payload) == (1, "fresh")


async def test_leave_ends_the_messages_and_a_server_close_closes_the_channel() -> None:
    app = FakePhoenix()
    async with fake_socket(app) as (socket, _):
        room = socket.channel("room:1")
        async with room.messages() as messages:
            await room.join()
            await room.leave()
            assert [m async for m in messages] == []
        assert app.sent("phx_leave")[0].join_ref == app.sent("phx_join")[0].ref
        other = socket.channel("room:2")
        await other.join()
        join_ref = app.sent("phx_join")[-1].ref
        await app.push_all("room:2", Frame(join_ref, join_ref, "room:2", "phx_close", {}))
        await wait_until(lambda: other.state is ChannelState.CLOSED)


async def test_presence_follows_state_and_diffs() -> None:
    app = FakePhoenix()
    app.presence = {"ann": {"metas": [{"phx_ref": "a1"}]}}
    async with fake_socket(app) as (socket, _):
        room = socket.channel("room:1")
        joined: list[str] = []
        room.presence.on_join(lambda key, current, new: joined.append(key))
        await room.join()
        await wait_until(lambda: [e.key for e in room.presence.list()] == ["ann"])
        diff = {
            "joins": {"bob": {"metas": [{"phx_ref": "b1"}]}, "ann": {"metas": [{"phx_ref": "a2"}]}},
            "leaves": {},
        }
        await app.push_all("room:1", Frame(None, None, "room:1", "presence_diff", diff))
        await wait_until(lambda: len(room.presence.list()) == 2)
        ann = dict(room.presence.list())["ann"]
        assert [m["phx_ref"] for m in ann] == ["a1", "a2"]  # one key, two connections
        assert joined == ["ann", "bob", "ann"]


# -- pure parts ------------------------------------------------------------------------


def test_backoff_is_exponential_capped_with_full_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert [backoff.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 3.0  # spread over the whole range


def test_sync_state_and_diff_as_phoenix_js() -> None:
    state = sync_state(
        {}, {"ann": {"metas": [{"phx_ref": "1"}]}, "bob": {"metas": [{"phx_ref": "2"}]}}
    )
    leaves: list[tuple[str, list[str]]] = []
    state = sync_state(
        state,
        {"ann": {"metas": [{"phx_ref": "1"}, {"phx_ref": "3"}]}},
        on_leave=lambda key, rest, left: leaves.append(
            (key, [m["phx_ref"] for m in left["metas"]])
        ),
    )
    assert state == {"ann": {"metas": [{"phx_ref": "1"}, {"phx_ref": "3"}]}}
    assert leaves == [("bob", ["2"])]
    state = sync_diff(state, {"joins": {}, "leaves": {"ann": {"metas": [{"phx_ref": "1"}]}}})
    assert state == {"ann": {"metas": [{"phx_ref": "3"}]}}


def test_presence_holds_diffs_until_the_state_of_the_join() -> None:
    presence = pr.client.Presence()
    presence.handle("presence_diff", {"joins": {"x": {"metas": [{"phx_ref": "9"}]}}}, "5")
    assert presence.list() == []
    presence.handle("presence_state", {"ann": {"metas": [{"phx_ref": "1"}]}}, "5")
    assert [entry.key for entry in presence.list()] == ["ann", "x"]


# -- the real Channels server ------------------------------------------------------------


class Chat(Channels):
    history = MemoryHistory()

    @topic("room:{name}")
    class Room:
        async def join(self, socket: Socket, params: Any) -> dict[str, Any] | None:
            if params.get("nick") == "mallory":
                raise Refuse("unauthorized")
            return {"welcome": params.get("nick")}

        async def on_say(self, socket: Socket, payload: Any) -> Any:
            await socket.broadcast("said", payload)
            return {"ok": True}


def fresh_chat(history: Any = None) -> Chat:
    class Fresh(Chat):
        pass

    Fresh.history = history if history is not None else MemoryHistory()
    return Fresh()


async def test_real_server_join_refuse_push_and_broadcast() -> None:
    async with open_channels_client(fresh_chat()) as socket:
        room = socket.channel("room:lobby", params={"nick": "ann"})
        async with room.messages("said") as messages:
            response = await room.join()
            assert response["welcome"] == "ann"
            assert await room.push("say", {"body": "hi"}) == {"ok": True}
            message = await next_message(messages)
            assert (message.payload, message.offset) == ({"body": "hi"}, 1)
        bad = socket.channel("room:other", params={"nick": "mallory"})
        with pytest.raises(JoinRefused) as caught:
            await bad.join()
        assert caught.value.reason == "unauthorized"


async def serve_until(
    app: Any, port: int, stop: trio.Event, *, task_status: trio.TaskStatus[Any]
) -> None:
    async with open_server(app, port=port) as live:
        task_status.started(live)
        await stop.wait()


@pytest.mark.parametrize("durable", [True, False], ids=["sqlite", "memory"])
async def test_rejoin_after_a_real_server_restart(tmp_path: Any, durable: bool) -> None:
    """The server is stopped and started again on its port; the client rejoins with since."""
    gate = trio.Event()
    port = 0

    async def connect() -> trio.abc.Stream:
        await gate.wait()
        return await trio.open_tcp_stream("127.0.0.1", port)

    def history() -> Any:
        return SQLiteHistory(tmp_path) if durable else MemoryHistory()

    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        live = await nursery.start(serve_until, fresh_chat(history()), 0, stop)
        port = live.port
        gate.set()
        async with open_socket(live.ws_url + "/socket", connect=connect, backoff=FAST) as socket:
            room = socket.channel("room:lobby", params={"nick": "ann"})
            async with room.messages("said") as messages, room.joins() as joins:
                await room.join()
                await joins.receive()
                for n in range(2):
                    await live.app.broadcast("room:lobby", "said", n)
                assert [(await next_message(messages)).payload for _ in range(2)] == [0, 1]
                gate = trio.Event()  # reconnects wait here until the new server has news
                stop.set()  # the server stops: the client's connection drops
                await wait_until(lambda: socket.state is not SocketState.OPEN)
                stop = trio.Event()
                again = await nursery.start(serve_until, fresh_chat(history()), port, stop)
                for n in range(2, 5):
                    await again.app.broadcast("room:lobby", "said", n)
                gate.set()
                rejoined = await joins.receive()
                if durable:
                    assert rejoined.recovered is True
                    got = [(await next_message(messages)).payload for _ in range(3)]
                    assert got == [2, 3, 4]
                else:
                    assert (rejoined.recovered, rejoined.reason) == (False, "epoch_changed")
                await again.app.broadcast("room:lobby", "said", "live")
                message = await next_message(messages)
                assert message.payload == "live"
                assert message.offset == (6 if durable else 4)
        stop.set()


class Lobby(Channels):
    @topic("lobby", presence=True)
    class LobbyTopic:
        async def join(self, socket: Socket, params: Any) -> None:
            socket.assigns["nick"] = params["nick"]

        async def presence_key(self, socket: Socket) -> str:
            return str(socket.assigns["nick"])


async def test_real_server_presence_syncs_across_two_clients() -> None:
    async with open_channels_connector(Lobby) as connector:
        url = TEST_URL + "/socket"
        async with (
            open_socket(url, connect=connector, backoff=FAST) as one,
            open_socket(url, connect=connector, backoff=FAST) as two,
        ):
            ann = one.channel("lobby", params={"nick": "ann"})
            await ann.join()
            await wait_until(lambda: [e.key for e in ann.presence.list()] == ["ann"])
            bob = two.channel("lobby", params={"nick": "bob"})
            await bob.join()
            await wait_until(lambda: sorted(dict(ann.presence.list())) == ["ann", "bob"])
            await wait_until(lambda: sorted(dict(bob.presence.list())) == ["ann", "bob"])
            await bob.leave()
            await wait_until(lambda: [e.key for e in ann.presence.list()] == ["ann"])


async def test_a_phx_error_makes_the_channel_rejoin(autojump_clock: trio.testing.MockClock) -> None:
    app = FakePhoenix()
    async with fake_socket(app, heartbeat=None) as (socket, connector):
        room = socket.channel("room:1")
        async with room.joins() as joins:
            await room.join()
            await joins.receive()
            ref = app.sent("phx_join")[-1].ref
            await app.push_all("room:1", Frame(ref, ref, "room:1", "phx_error", {}))
            rejoined = await joins.receive()
            assert rejoined.rejoin is True
            assert room.state is ChannelState.JOINED
            assert len(app.sent("phx_join")) == 2
            assert connector.connections == 1  # the same connection


class Ordered(pr.Channels):
    """``b:*`` refuses a connection that has not joined ``a`` (as the chat's rooms need a nick)."""

    @pr.topic("a", history=False)
    class A:
        async def join(self, socket: pr.Socket, params: Any) -> None:
            socket.ws.state["a"] = True

    @pr.topic("b:{n}", history=False)
    class B:
        async def join(self, socket: pr.Socket, params: Any) -> None:
            if not socket.ws.state.get("a"):
                raise pr.Refuse("a_first")


async def test_rejoins_reach_the_server_in_the_order_of_the_joins() -> None:
    # trio runs the tasks of a batch in random order: the rejoins must not
    # depend on it (phoenix.js sends them in join order).
    async with open_channels_connector(Ordered()) as connector:
        assert connector is not None
        async with open_socket(TEST_URL + "/socket", connect=connector, backoff=FAST) as socket:
            first = socket.channel("a")
            others = [socket.channel(f"b:{n}") for n in range(5)]
            async with AsyncExitStack() as stack:
                joins = [await stack.enter_async_context(c.joins()) for c in (first, *others)]
                for channel, replies in zip((first, *others), joins, strict=True):
                    await channel.join()
                    await replies.receive()
                for _ in range(8):
                    await connector.drop_all()
                    with trio.fail_after(30):  # a refused rejoin closes its channel: no reply
                        for replies in joins:
                            assert (await replies.receive()).rejoin
                    assert [c.state for c in others] == [ChannelState.JOINED] * 5


class Remembers(pr.Channels):
    """Starts a session at the handshake, as the chat does: ``Set-Cookie`` on the 101."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, str]] = []

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.upgrade is not None:
            self.seen.append(dict(request.cookies))
            if "sid" not in request.cookies:
                response.headers.add("set-cookie", f"sid=s{len(self.seen)}; Path=/; HttpOnly")
            response.headers.add("set-cookie", "flash=; Max-Age=0")  # a removal
        await super().handle(request, response)

    @pr.topic("t", history=False)
    class T:
        pass


async def test_the_cookies_a_handshake_sets_are_sent_on_every_reconnect() -> None:
    app = Remembers()
    async with open_channels_connector(app) as connector:
        assert connector is not None
        given = {"cookie": "theme=dark; flash=hello"}
        async with open_socket(
            TEST_URL + "/socket", connect=connector, backoff=FAST, headers=given
        ) as socket:
            channel = socket.channel("t")
            async with channel.joins() as joins:
                await channel.join()
                await joins.receive()
                assert socket.cookies == {"theme": "dark", "sid": "s1"}
                await connector.drop_all()
                assert (await joins.receive()).rejoin
        # The same person after the reconnect: the session cookie went back.
        assert app.seen == [{"theme": "dark", "flash": "hello"}, {"theme": "dark", "sid": "s1"}]
