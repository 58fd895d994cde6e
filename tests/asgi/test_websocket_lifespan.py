"""peregrine_rt.asgi: the websocket scope (accept, denial, messages, closes) and lifespan."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

import peregrine_rt as pr
import peregrine_rt.exceptions
from peregrine_rt.asgi import ASGI, LifespanFailure
from peregrine_rt.testing import WebSocketRejected, open_client, wait_until

Scope = dict[str, Any]


class EchoApp:
    """Accepts with the first subprotocol offered, echoes, closes on "bye"; records events."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.events: list[Any] = []
        self.done = trio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # no lifespan support: returns at once
        self.scopes.append(scope)
        assert await receive() == {"type": "websocket.connect"}
        offered = scope["subprotocols"]
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": offered[0] if offered else None,
                "headers": [(b"x-accepted", b"yes")],
            }
        )
        try:
            while True:
                event = await receive()
                self.events.append(event)
                if event["type"] == "websocket.disconnect":
                    return
                if event.get("text") == "bye":
                    await send({"type": "websocket.close", "code": 4001, "reason": "bye to you"})
                elif "text" in event:
                    await send({"type": "websocket.send", "text": event["text"].upper()})
                else:
                    await send({"type": "websocket.send", "bytes": event["bytes"][::-1]})
        finally:
            self.done.set()


async def test_accept_with_a_subprotocol_and_messages_both_ways() -> None:
    app = EchoApp()
    async with (
        open_client(ASGI(app)) as client,
        client.websocket("/ws?room=1", subprotocols=["v2", "v1"]) as ws,
    ):
        assert ws.subprotocol == "v2"
        await ws.send("hello")
        assert await ws.receive() == "HELLO"
        await ws.send(b"\x01\x02")
        assert await ws.receive() == b"\x02\x01"
        close = await ws.close(4000, "done")
    await app.done.wait()
    assert close.code == 4000
    scope = app.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/ws" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["v2", "v1"]
    assert scope["extensions"]["websocket.http.response"] == {}
    assert set(scope["extensions"]) == {"websocket.http.response", "peregrine_rt"}
    assert app.events[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": "done"}
    assert app.events[0] == {"type": "websocket.receive", "text": "hello"}
    assert app.events[1] == {"type": "websocket.receive", "bytes": b"\x01\x02"}


async def test_the_apps_close_reaches_the_client() -> None:
    app = EchoApp()
    async with open_client(ASGI(app)) as client, client.websocket("/ws") as ws:
        await ws.send("bye")
        close = await ws.receive_close()
    assert (close.code, close.reason) == (4001, "bye to you")
    await app.done.wait()
    assert app.events[-1]["type"] == "websocket.disconnect"
    assert app.events[-1]["code"] == 4001


async def test_close_before_accept_is_403() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})

    async with open_client(ASGI(app, lifespan="off")) as client:
        with pytest.raises(WebSocketRejected) as caught:
            async with client.websocket("/ws"):
                pass
    assert caught.value.status == 403


async def test_a_denial_response() -> None:
    after: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"3")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry"})
        after.append(await receive())

    async with open_client(ASGI(app, lifespan="off")) as client:
        with pytest.raises(WebSocketRejected) as caught:
            async with client.websocket("/ws"):
                pass
        await wait_until(lambda: after)
    response = caught.value.response
    assert response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.content == b"no entry"
    assert after[0]["type"] == "websocket.disconnect"


async def test_an_app_failing_before_accept_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        raise ValueError("no socket for you")

    with caplog.at_level(logging.ERROR, "peregrine_rt.error"):
        async with open_client(ASGI(app, lifespan="off")) as client:
            with pytest.raises(WebSocketRejected) as caught:
                async with client.websocket("/ws"):
                    pass
    assert caught.value.status == 500
    assert "ValueError: no socket for you" in caplog.text


async def test_an_app_failing_after_accept_closes_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("broken")

    async with open_client(ASGI(app, lifespan="off")) as client, client.websocket("/") as ws:
        await ws.send("x")
        close = await ws.receive_close()
    assert close.code == 1011
    assert "ValueError: broken" in caplog.text


async def test_an_app_returning_after_accept_closes_1000() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "only this"})

    async with open_client(ASGI(app, lifespan="off")) as client, client.websocket("/") as ws:
        assert await ws.receive() == "only this"
        assert (await ws.receive_close()).code == 1000


async def test_a_slow_app_holds_the_reader_back(autojump_clock: trio.abc.Clock) -> None:
    """With ws_queue_size=2, a third message waits in on_message: nothing more is read."""
    release = trio.Event()
    got: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while (event := await receive())["type"] == "websocket.receive":
            got.append(event["text"])
            await send({"type": "websocket.send", "text": "ack " + event["text"]})

    async with (
        open_client(ASGI(app, lifespan="off", ws_queue_size=2)) as client,
        client.websocket("/") as ws,
    ):
        for n in range(5):
            await ws.send(str(n))
        with trio.move_on_after(3) as waited:
            await ws.ping()  # not read, so not answered, while the app is behind
        assert waited.cancelled_caught
        assert got == []
        release.set()
        await ws.ping()
        for n in range(5):
            assert await ws.receive() == f"ack {n}"
    assert got == ["0", "1", "2", "3", "4"]


async def test_send_after_the_client_left_raises_oserror() -> None:
    errors: list[BaseException] = []
    disconnected = trio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        disconnected.set()
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            errors.append(exc)

    async with open_client(ASGI(app, lifespan="off")) as client:
        async with client.websocket("/") as ws:
            await ws.close()
        await disconnected.wait()
        await wait_until(lambda: errors)
    assert isinstance(errors[0], pr.ClientDisconnected)


async def test_root_path_of_a_websocket_under_a_mount() -> None:
    app = EchoApp()
    router = pr.Router()
    router.mount("/live", ASGI(app))
    async with open_client(router) as client, client.websocket("/live/feed") as ws:
        await ws.send("hi")
        assert await ws.receive() == "HI"
    assert (app.scopes[0]["root_path"], app.scopes[0]["path"]) == ("/live", "/live/feed")


# -- lifespan ---------------------------------------------------------------------------


class LifespanApp:
    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.events: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if self.fail:
                        await send({"type": "lifespan.startup.failed", "message": self.fail})
                        return
                    scope["state"]["pool"] = "the pool"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            scope["state"]["mine"] = True  # a copy per request: the next one does not see it
            body = repr(sorted(scope["state"].items())).encode()
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": body})


async def test_lifespan_state_reaches_every_request() -> None:
    app = LifespanApp()
    handler = ASGI(app)
    async with open_client(handler) as client:
        assert app.events == ["lifespan.startup"]
        first = await client.get("/")
        second = await client.get("/")
    assert first.text == second.text == "[('mine', True), ('pool', 'the pool')]"
    assert handler.state == {"pool": "the pool"}
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_a_failed_startup_stops_the_server_with_the_message() -> None:
    message = "ASGI lifespan startup failed: no database"
    with pytest.raises(LifespanFailure, match=message) as caught:
        async with open_client(ASGI(LifespanApp(fail="no database"))):
            pass
    # One class, in the exception tree, importable from both places.
    assert LifespanFailure is pr.LifespanFailure is pr.exceptions.LifespanFailure
    assert isinstance(caught.value, pr.PeregrineError)
    assert isinstance(caught.value, RuntimeError)
    assert pr.ASGI is ASGI


async def test_lifespan_unsupported(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"unsupported scope {scope['type']}")
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    with caplog.at_level(logging.INFO, "peregrine_rt.server"):
        async with open_client(ASGI(app)) as client:
            assert (await client.get("/")).status == 204
    assert "does not support lifespan" in caplog.text
    with pytest.raises(LifespanFailure, match="raised RuntimeError"):
        async with open_client(ASGI(app, lifespan="on")):
            pass


async def test_lifespan_off_never_calls_the_app() -> None:
    app = LifespanApp(fail="must not run")
    async with open_client(ASGI(app, lifespan="off")) as client:
        assert (await client.get("/")).text == "[('mine', True)]"
    assert app.events == []
