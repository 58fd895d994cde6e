"""peregrine_rt.asgi over HTTP: the scope, more_body both ways, disconnects, HEAD, errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.asgi import ASGI
from peregrine_rt.testing import open_client, open_server, wait_until

Scope = dict[str, Any]


async def _read_body(receive: Any) -> tuple[bytes, list[Any]]:
    body, messages = b"", []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return body, messages
        body += message["body"]
        if not message["more_body"]:
            return body, messages


async def _send_text(send: Any, status: int, text: bytes, headers: Any = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": text})


class Recorder:
    """An ASGI app that answers with a summary of its scope and the messages it received."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.messages: list[list[Any]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        self.scopes.append(scope)
        body, messages = await _read_body(receive)
        self.messages.append(messages)
        await _send_text(send, 200, b"got " + body)


async def test_the_http_scope() -> None:
    app = Recorder()
    async with open_client(ASGI(app)) as client:
        response = await client.get("/caf%C3%A9/x?a=1&b=%20", headers={"X-Thing": "Yes"})
    assert response.status == 200
    assert response.text == "got "
    scope = app.scopes[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    assert scope["query_string"] == b"a=1&b=%20"
    assert scope["root_path"] == ""
    assert (b"x-thing", b"Yes") in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"] == ("127.0.0.1", 50000)
    assert scope["server"] is None  # memory streams: no listening socket
    assert scope["state"] == {}


async def test_client_and_server_over_tcp() -> None:
    app = Recorder()
    async with open_server(ASGI(app), host="127.0.0.1") as live, open_client(live.url) as client:
        await client.get("/")
        port = live.server.port
    scope = app.scopes[0]
    assert scope["server"] == ("127.0.0.1", port)
    host, client_port = scope["client"]
    assert host == "127.0.0.1" and client_port != port


async def test_a_body_in_one_piece_is_one_message() -> None:
    app = Recorder()
    async with open_client(ASGI(app)) as client:
        response = await client.post("/", content=b"hello")
    assert response.text == "got hello"
    assert app.messages[0] == [{"type": "http.request", "body": b"hello", "more_body": False}]


async def test_a_chunked_body_comes_in_several_messages() -> None:
    app = Recorder()

    async def pieces() -> Any:
        for piece in (b"one ", b"two ", b"three"):
            yield piece

    async with open_server(ASGI(app)) as live:
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        async with stream:
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\none \r\n"
            )
            await wait_until(lambda: len(app.scopes) == 1)
            await stream.send_all(b"4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n")
            reply = b""
            while b"got one two three" not in reply:
                data = await stream.receive_some()
                assert data
                reply += data
    messages = app.messages[0]
    assert b"".join(m["body"] for m in messages) == b"one two three"
    assert len(messages) >= 2
    assert all(m["more_body"] for m in messages[:-1])
    assert messages[-1]["more_body"] is False


async def test_a_body_in_several_messages_is_streamed() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-a", b"1")]})
        for piece in (b"alpha", b"", b"beta"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})

    async with (
        open_client(ASGI(app, lifespan="off")) as client,
        client.stream("GET", "/") as response,
    ):
        assert response.status == 201
        assert response.headers["x-a"] == "1"
        assert response.headers["transfer-encoding"] == "chunked"
        assert await response.next_chunk() == b"alpha"
        assert await response.next_chunk() == b"beta"
        assert await response.next_chunk() == b"!"
        assert await response.next_chunk() is None


async def test_a_whole_body_gets_content_length_and_framing_headers_are_the_servers() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await _send_text(
            send,
            200,
            b"hello",
            [(b"Content-Length", b"999"), (b"Transfer-Encoding", b"chunked"), (b"X-Up", b"A")],
        )

    async with open_client(ASGI(app, lifespan="off")) as client:
        response = await client.get("/")
    assert response.content == b"hello"
    assert response.headers["content-length"] == "5"
    assert "transfer-encoding" not in response.headers
    assert response.headers["x-up"] == "A"


async def test_connection_close_from_the_app_closes() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await _send_text(send, 200, b"bye", [(b"connection", b"close")])

    async with open_client(ASGI(app, lifespan="off")) as client:
        response = await client.get("/")
    assert response.headers["connection"] == "close"


async def test_head_drops_the_body_and_keeps_the_length() -> None:
    sent: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        sent.append(scope["method"])
        if scope["path"] == "/file":  # Starlette's FileResponse: no body for HEAD
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1234")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
        else:
            await _send_text(send, 200, b"twelve bytes")

    async with open_client(ASGI(app, lifespan="off")) as client:
        plain = await client.head("/")
        file = await client.head("/file")
    assert sent == ["HEAD", "HEAD"]
    assert plain.content == b"" and plain.headers["content-length"] == "12"
    assert file.content == b"" and file.headers["content-length"] == "1234"


class Background:
    """Answers at once, then works (as a Starlette background task) until ``release`` is set."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.release = trio.Event()
        self.done: list[str] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/plain":
            await _send_text(send, 200, b"plain")
            return
        await _send_text(send, 202, b"queued")
        await self.release.wait()
        if self.fail:
            raise ValueError("the background task failed")
        self.done.append(scope["path"])


async def test_the_client_has_the_response_while_the_app_works_on() -> None:
    app = Background()
    async with open_client(ASGI(app, lifespan="off")) as client, client.connection() as conn:
        with trio.fail_after(5):
            response = await conn.get("/later")
        assert (response.status, response.text) == (202, "queued")
        assert response.headers["content-length"] == "6"
        assert app.done == []  # the app is still at work
        answers: list[str] = []
        async with trio.open_nursery() as nursery:

            async def next_request() -> None:
                answers.append((await conn.get("/plain")).text)

            nursery.start_soon(next_request)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # the next request on the connection waits for the app
            app.release.set()
        assert answers == ["plain"]
        assert app.done == ["/later"]


async def test_an_error_after_the_response_was_sent_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Background(fail=True)
    async with open_server(ASGI(app, lifespan="off")) as live:
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        async with stream:
            await stream.send_all(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"queued"):
                data = await stream.receive_some()
                assert data
                reply += data
            assert reply.startswith(b"HTTP/1.1 202 ")
            app.release.set()
            assert await stream.receive_some() == b""  # closed, nothing more sent
    assert "ValueError: the background task failed" in caplog.text


async def test_disconnect_after_the_response() -> None:
    after: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await _read_body(receive)
        await _send_text(send, 200, b"done")
        after.append(await receive())

    async with open_client(ASGI(app, lifespan="off")) as client:
        assert (await client.get("/")).text == "done"
    assert after == [{"type": "http.disconnect"}]


async def test_a_waiting_receive_is_woken_by_the_end_of_the_response() -> None:
    """Starlette's StreamingResponse listens for a disconnect while it streams."""
    heard: list[Any] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await _read_body(receive)

        async def listen() -> None:
            heard.append(await receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.testing.wait_all_tasks_blocked()
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"a", "more_body": True})
            await send({"type": "http.response.body", "body": b"b"})

    async with open_client(ASGI(app, lifespan="off")) as client, client.connection() as conn:
        assert (await conn.get("/")).content == b"ab"
        assert (await conn.get("/")).content == b"ab"  # the connection goes on
    assert heard == [{"type": "http.disconnect"}] * 2


async def test_a_client_leaving_while_the_app_waits_is_a_disconnect() -> None:
    heard: list[Any] = []
    send_error: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await _read_body(receive)
        heard.append(await receive())  # waits until the client leaves
        try:
            await send({"type": "http.response.start", "status": 200})
        except OSError as exc:
            send_error.append(exc)

    async with open_server(ASGI(app, lifespan="off")) as live:
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
        await wait_until(lambda: send_error)
    assert heard == [{"type": "http.disconnect"}]
    assert isinstance(send_error[0], pr.ClientDisconnected)


async def test_a_client_leaving_mid_body_is_a_disconnect() -> None:
    heard: list[list[Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        heard.append((await _read_body(receive))[1])

    async with open_server(ASGI(app, lifespan="off")) as live:
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        await wait_until(lambda: live.server.connections)
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
        await wait_until(lambda: heard)
    assert heard[0][-1] == {"type": "http.disconnect"}
    assert b"".join(m.get("body", b"") for m in heard[0]) == b"abc"


async def test_a_body_over_the_limit_is_a_disconnect_then_413() -> None:
    heard: list[list[Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        heard.append((await _read_body(receive))[1])

    async with open_server(ASGI(app, lifespan="off"), max_body_size=4) as live:
        # With Content-Length the head alone says it is too long: the app never runs.
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        async with stream:
            await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
            assert (await stream.receive_some()).startswith(b"HTTP/1.1 413 ")
        assert heard == []
        # A chunked body goes over it while the app reads.
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        async with stream:
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
            )
            reply = b""
            while data := await stream.receive_some():
                reply += data
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert heard[0][-1] == {"type": "http.disconnect"}


async def test_trailers_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})

    async with open_client(ASGI(app, lifespan="off")) as client:
        response = await client.get("/")
    assert response.status == 500
    assert "http.response.trailers is not supported" in caplog.text


async def test_an_exception_before_the_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        raise ValueError("boom")

    with caplog.at_level(logging.ERROR, "peregrine_rt.error"):
        async with open_client(ASGI(app, lifespan="off")) as client:
            response = await client.get("/")
    assert response.status == 500
    assert "boom" not in response.text
    assert "ValueError: boom" in caplog.text


async def test_an_exception_after_the_response_started_closes() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("boom")

    async with open_server(ASGI(app, lifespan="off")) as live:
        stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while data := await stream.receive_some():
                reply += data
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"4\r\npart\r\n")  # no last chunk: the client sees it incomplete


@pytest.mark.parametrize("sent", [[], [{"type": "http.response.start", "status": 204}]])
async def test_returning_without_a_response_is_a_500(
    sent: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        for message in sent:
            await send(message)

    async with open_client(ASGI(app, lifespan="off")) as client:
        response = await client.get("/")
    assert response.status == 500
    assert "returned without sending a response" in caplog.text


async def test_misuse_of_send_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/body-first":
            await send({"type": "http.response.body", "body": b"x"})
        else:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.start", "status": 200})

    async with open_client(ASGI(app, lifespan="off")) as client:
        assert (await client.get("/body-first")).status == 500
        assert (await client.get("/twice")).status == 500
    assert "before http.response.start" in caplog.text
    assert "sent twice" in caplog.text


async def test_root_path_under_a_router_mount() -> None:
    app = Recorder()
    router = pr.Router()
    router.mount("/api", ASGI(app))
    async with open_client(router) as client:
        for path in ("/api/items/3?x=1", "/api", "/api/"):
            assert (await client.get(path)).status == 200
        assert (await client.get("/other")).status == 404
    paths = [(s["root_path"], s["path"], s["raw_path"]) for s in app.scopes]
    assert paths == [
        ("/api", "/api/items/3", b"/api/items/3"),
        ("/api", "/api", b"/api"),
        ("/api", "/api/", b"/api/"),
    ]
    assert app.scopes[0]["query_string"] == b"x=1"


def test_the_app_must_be_callable() -> None:
    with pytest.raises(TypeError, match="ASGI callable"):
        ASGI("app")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'auto', 'on' or 'off'"):
        ASGI(Recorder(), lifespan="yes")  # type: ignore[arg-type]


async def test_pathsend_sends_the_file_with_its_length(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 400)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        if scope["path"] == "/early":
            await send({"type": "http.response.pathsend", "path": str(path)})
            return
        start = {"type": "http.response.start", "status": 200, "headers": [(b"etag", b'"v1"')]}
        await send(start)
        name = str(path) if scope["path"] == "/file" else str(tmp_path / "missing")
        await send({"type": "http.response.pathsend", "path": name})

    async with open_client(ASGI(app, lifespan="off")) as client:
        response = await client.get("/file")
        assert response.status == 200
        assert response.content == path.read_bytes()
        assert response.headers["content-length"] == str(102_400)
        assert response.headers["etag"] == '"v1"'
        assert (await client.get("/missing")).status == 500
        assert (await client.get("/early")).status == 500
    assert "FileNotFoundError" in caplog.text
    assert "http.response.pathsend before http.response.start" in caplog.text


def test_header_lists_seen_before_are_reused_checked_and_fresh() -> None:
    from peregrine_rt._asgi._http import response_headers
    from peregrine_rt.exceptions import LocalProtocolError

    message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"Content-Type", b"text/plain"), (b"content-length", b"5")],
    }
    first = response_headers(message)
    first.headers.append((b"x-added", b"by a middleware"))  # its own list
    second = response_headers({**message, "status": 201})
    assert (second.status, second.headers, second.content_length) == (
        201,
        [(b"content-type", b"text/plain")],
        5,
    )
    # A bad value is refused every time, in a list seen or not.
    bad = {**message, "headers": [(b"x-bad", b"a\r\nb")]}
    for _ in range(2):
        with pytest.raises(LocalProtocolError):
            response_headers(bad)
    # Pairs as lists (unhashable) are checked each time, not kept.
    listed = response_headers({**message, "headers": [[b"x-a", b"1"], [b"connection", b"close"]]})
    assert (listed.headers, listed.close) == ([(b"x-a", b"1")], True)
    with pytest.raises(LocalProtocolError):
        response_headers({**message, "headers": [[b"x-a", b"\x00"]]})
