"""Build-time checks of Channels apps, and the limits of the layer."""

from __future__ import annotations

from typing import Any

import pytest

from peregrine_rt._channels._limits import Limits, TokenBucket
from peregrine_rt._channels._server import Channels, Socket
from peregrine_rt._channels._topics import compile_pattern, topic
from peregrine_rt._server import Server
from peregrine_rt.exceptions import HandlerError
from peregrine_rt.testing import open_client

from .conftest import Phx


def build(cls: type) -> None:
    Server(cls)  # the handler contract, and the instance it will make
    cls()


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("", "non-empty"),
        ("phoenix", "reserved"),
        ("room:{name", "unbalanced"),
        ("room:name}", "unbalanced"),
        ("room:{}", "identifier"),
        ("room:{1a}", "identifier"),
        ("a:{x}:{x}", "twice"),
        ("a:{x}{y}", "nothing between"),
        ("a*:b", "only at its end"),
    ],
)
def test_malformed_patterns(pattern: str, why: str) -> None:
    with pytest.raises(HandlerError, match=why):
        compile_pattern(pattern, "App.T")


def test_patterns_match() -> None:
    assert compile_pattern("room:{name}", "x").match("room:lobby") == {"name": "lobby"}
    assert compile_pattern("room:{name}", "x").match("room:") is None
    assert compile_pattern("user:*", "x").match("user:1:2") == {}
    assert compile_pattern("a.b", "x").match("aXb") is None  # literal, not a regex


def test_clashing_patterns() -> None:
    with pytest.raises(HandlerError, match="clash"):

        class App(Channels):
            @topic("room:{name}")
            class A:
                pass

            @topic("room:{other}")
            class B:
                pass


def test_literal_topic_wins_over_pattern() -> None:
    class App(Channels):
        @topic("room:{name}")
        class A:
            pass

        @topic("room:lobby")
        class B:
            pass

    app = App()
    found = app.spec_of("room:lobby")
    assert found is not None
    assert found[0].name.endswith(".B")
    found = app.spec_of("room:x")
    assert found is not None
    assert found[0].name.endswith(".A")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("def join(self, socket, params): pass", "async def join"),
        ("async def join(self, socket): pass", "async def join\\(self, socket, params\\)"),
        ("async def on_msg(self, socket): pass", "on_msg must be async def on_msg"),
        ("async def joinn(self, socket, params): pass", "did you mean join"),
        ("async def on_join(self, socket, payload): pass", "protocol event"),
        ("async def on_phx_leave(self, socket, payload): pass", "protocol event"),
        ("async def leave(self, socket, extra): pass", "async def leave"),
    ],
)
def test_bad_callbacks_named(body: str, match: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"class Room:\n    {body}\n", namespace)
    room = topic("room:{name}")(namespace["Room"])

    with pytest.raises(HandlerError, match=match) as info:

        class App(Channels):
            Room = room

    assert "App.Room" in str(info.value)


def test_helpers_pass() -> None:
    class App(Channels):
        @topic("t")
        class T:
            def format_nick(self, nick: str) -> str:
                return nick

            async def _helper(self) -> None:
                pass

    build(App)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_joins"):
        Limits(max_joins=0)
    with pytest.raises(ValueError, match="publish_rate"):
        Limits(publish_rate=0)


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after half a second at 2/s
    assert not bucket.take(0.5)


def test_a_token_bucket_refilled_for_exactly_a_second_gives_its_rate() -> None:
    # (0.4 + 1.0) - 0.4 == 0.9999999999999999: the refill must not lose the last token
    # (tests/hostile/test_chat_limits.py failed so once on the autojump clock).
    start = 0.4
    bucket = TokenBucket(rate=5, burst=10)
    assert all(bucket.take(start) for _ in range(10))
    assert not bucket.take(start)
    assert [bucket.take(start + 1.0) for _ in range(6)] == [True] * 5 + [False]


class Limited(Channels):
    limits = Limits(
        max_joins=3, publish_rate=0.001, publish_burst=2, max_violations=5, max_message_size=100
    )

    @topic("t:{n}")
    class T:
        async def on_ping(self, socket: Socket, payload: Any) -> str:
            return "pong"


async def test_too_many_joins_then_abuse_closes_1008() -> None:
    async with open_client(Limited) as client, client.websocket("/") as ws:
        phx = Phx(ws)
        for n in range(3):
            _, frame = await phx.join(f"t:{n}")
            assert frame[4]["status"] == "ok"
        for n in range(3, 8):
            _, frame = await phx.join(f"t:{n}")
            assert frame[4] == {"status": "error", "response": {"reason": "too_many_joins"}}
        await phx.send(None, "t:9", "phx_join", {})
        assert (await ws.receive_close()).code == 1008


async def test_rate_limited_and_too_large() -> None:
    async with open_client(Limited) as client, client.websocket("/") as ws:
        phx = Phx(ws)
        jr, _ = await phx.join("t:1")
        replies = []
        for _ in range(3):
            await phx.send(jr, "t:1", "ping", {})
            replies.append((await phx.receive())[4])
        assert replies[:2] == [{"status": "ok", "response": "pong"}] * 2
        assert replies[2] == {"status": "error", "response": {"reason": "rate_limited"}}
        await phx.send(jr, "t:1", "ping", {"pad": "x" * 200})
        assert (await phx.receive())[4]["response"]["reason"] == "too_large"


async def test_publishing_to_many_unjoined_topics_closes() -> None:
    async with open_client(Limited) as client, client.websocket("/") as ws:
        phx = Phx(ws)
        for n in range(5):
            await phx.send(None, f"t:{n}", "ping", {})
            assert (await phx.receive())[4]["response"]["reason"] == "unmatched topic"
        await phx.send(None, "t:x", "ping", {})
        assert (await ws.receive_close()).code == 1008
