"""Conformance: real Starlette and FastAPI apps answer the same under peregrine_rt and hypercorn.

Each test runs the app of ``starlette_app`` or ``fastapi_app`` under
peregrine_rt (``ASGI(app)`` on a TCP port) and under hypercorn's trio worker,
drives both with the same client (``peregrine_rt.testing.open_client`` over
TCP, HTTP and WebSocket), and compares what the client saw: status, the
framing and content headers, bodies, WebSocket messages and close codes.
Each also asserts what the answer must be, so that two servers wrong in the
same way do not pass.  docs/asgi.rst lists the deliberate differences; the
one tested here is the hub extension (``/where``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from peregrine_rt import ASGI
from peregrine_rt.testing import WebSocketRejected, open_client, open_server, wait_until

from . import fastapi_app, starlette_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from peregrine_rt.testing import Client, ClientResponse

SERVERS = ("peregrine_rt", "hypercorn")
FRAMEWORKS = {"starlette": starlette_app.make_app, "fastapi": fastapi_app.make_app}
framework = pytest.mark.parametrize("name", sorted(FRAMEWORKS))


class Seen(NamedTuple):
    """What the client saw of one response, the parts the servers must agree on."""

    status: int
    content_type: str | None
    framing: str  # "length N", "chunked" or "none" (a body up to the close)
    body: bytes
    allow: str | None = None


def seen(response: ClientResponse) -> Seen:
    headers = response.headers
    if "content-length" in headers:
        framing = "length " + headers["content-length"]
    elif headers.get("transfer-encoding") == "chunked":
        framing = "chunked"
    else:
        framing = "none"
    return Seen(
        response.status,
        headers.get("content-type"),
        framing,
        response.content,
        headers.get("allow"),
    )


@contextlib.asynccontextmanager
async def serving(server: str, app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 with ``server``; yield its base URL."""
    if server == "peregrine_rt":
        async with open_server(ASGI(app)) as live:
            yield live.url
        return
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 2.0
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: hypercorn_serve(
            app, config, shutdown_trigger=stop.wait, task_status=task_status
        ))  # fmt: skip
        try:
            yield binds[0]
        finally:
            stop.set()


async def on_both(name: str, exchange: Callable[[Client], Awaitable[Any]]) -> Any:
    """Run ``exchange`` against a fresh app under each server; they must see the same."""
    results = {}
    for server in SERVERS:
        async with serving(server, FRAMEWORKS[name]()) as url, open_client(url) as client:
            with trio.fail_after(10):
                results[server] = await exchange(client)
    assert results["peregrine_rt"] == results["hypercorn"]
    return results["peregrine_rt"]


@framework
async def test_routing_and_path_parameters(name: str) -> None:
    async def exchange(client: Client) -> list[Seen]:
        return [
            seen(await client.get("/")),
            seen(await client.get("/items/42", params={"q": "blue"})),
            seen(await client.get("/items/forty-two")),
            seen(await client.get("/nowhere")),
            seen(await client.post("/")),
            seen(await client.head("/")),
        ]

    home, item, bad_item, missing, wrong_method, head = await on_both(name, exchange)
    assert home == Seen(200, "text/plain; charset=utf-8", "length 4", b"home")
    assert item.status == 200 and item.content_type == "application/json"
    assert item.body == b'{"item_id":42,"q":"blue"}'
    # Starlette's int convertor does not match; FastAPI validates and refuses.
    assert bad_item.status == (404 if name == "starlette" else 422)
    assert missing.status == 404
    assert wrong_method.status == 405
    assert wrong_method.allow is not None
    assert sorted(wrong_method.allow.split(", ")) == (
        ["GET", "HEAD"] if name == "starlette" else ["GET"]
    )
    if name == "starlette":  # a GET route answers HEAD too; FastAPI's app.get() does not
        assert head == Seen(200, "text/plain; charset=utf-8", "length 4", b"")
    else:
        assert head.status == 405 and head.body == b""


@framework
async def test_json_bodies(name: str) -> None:
    async def exchange(client: Client) -> list[Seen]:
        item = {"name": "pen", "price": 1.5, "tags": ["blue"]}
        answers = [seen(await client.post("/json", json=item))]
        if name == "fastapi":  # validation errors, from Pydantic
            answers.append(seen(await client.post("/json", json={"name": "pen"})))
            answers.append(seen(await client.post("/json", content=b"{not json")))
        return answers

    good, *bad = await on_both(name, exchange)
    assert good.status == 201 and good.content_type == "application/json"
    assert good.body == b'{"got":{"name":"pen","price":1.5,"tags":["blue"]}}'
    assert [answer.status for answer in bad] == ([422, 422] if name == "fastapi" else [])


@framework
async def test_form_and_file_uploads(name: str) -> None:
    upload = b"PNGHEAD!" + bytes(range(256)) * 1200  # ~300 KB: more than one read

    async def exchange(client: Client) -> Seen:
        return seen(
            await client.post(
                "/form",
                data={"name": "café"},
                files={"upload": ("photo.png", upload, "image/png")},
            )
        )

    answer = await on_both(name, exchange)
    assert answer.status == 200
    assert answer.body == (
        b'{"name":"caf\xc3\xa9","filename":"photo.png","content_type":"image/png",'
        b'"size":%d,"head":"PNGHEAD!"}' % len(upload)
    )


@framework
async def test_streaming_responses(name: str) -> None:
    async def exchange(client: Client) -> tuple[Seen, list[bytes]]:
        response = await client.get("/stream")
        return seen(response), response.chunks

    answer, chunks = await on_both(name, exchange)
    assert answer == Seen(
        200, "text/plain; charset=utf-8", "chunked", b"piece 0\npiece 1\npiece 2\n"
    )
    assert chunks == [b"piece 0\n", b"piece 1\n", b"piece 2\n"]  # one chunk per message


def big_file(directory: Path) -> Path:
    """A file over Starlette's 64 KiB chunk: FileResponse would send it in several messages."""
    path = directory / "big.txt"
    path.write_bytes(b"".join(b"line %06d\n" % n for n in range(20_000)))  # 240,000 bytes
    return path


@framework
async def test_file_responses(name: str, tmp_path: Path) -> None:
    """Whole, HEAD and one range; peregrine_rt sends the file itself (http.response.pathsend)."""
    path = big_file(tmp_path)

    async def exchange(client: Client) -> list[Seen]:
        return [
            seen(await client.get("/file")),
            seen(await client.head("/file")),
            seen(await client.get("/file", headers={"range": "bytes=12-22"})),
        ]

    results = {}
    for server in SERVERS:
        async with serving(server, FRAMEWORKS[name](file=path)) as url, open_client(url) as client:
            results[server] = await exchange(client)
    assert results["peregrine_rt"] == results["hypercorn"]
    whole, head, part = results["peregrine_rt"]
    assert whole == Seen(200, "text/plain; charset=utf-8", "length 240000", path.read_bytes())
    if name == "starlette":
        assert head == whole._replace(body=b"")
    else:
        assert head.status == 405  # FastAPI's app.get() route does not take HEAD
    assert part == Seen(206, "text/plain; charset=utf-8", "length 11", b"line 000001")


@framework
async def test_known_difference_a_streamed_body_with_content_length(
    name: str, tmp_path: Path
) -> None:
    """A body in several messages is sent chunked, even when the app gave its length.

    (Starlette's FileResponse for a range over 64 KiB, or several ranges.)
    hypercorn keeps the app's Content-Length; the client gets the same bytes.
    """
    path = big_file(tmp_path)
    answers = {}
    for server in SERVERS:
        async with serving(server, FRAMEWORKS[name](file=path)) as url, open_client(url) as client:
            answers[server] = seen(await client.get("/file", headers={"range": "bytes=0-99999"}))
    assert answers["peregrine_rt"].framing == "chunked"
    assert answers["hypercorn"].framing == "length 100000"
    assert answers["peregrine_rt"]._replace(framing="") == answers["hypercorn"]._replace(framing="")
    assert answers["hypercorn"].body == path.read_bytes()[:100_000]


@framework
async def test_lifespan_state_reaches_requests(name: str) -> None:
    async def exchange(client: Client) -> Seen:
        return seen(await client.get("/state"))

    answer = await on_both(name, exchange)
    assert answer.body == b"hello from lifespan"


@framework
@pytest.mark.parametrize("server", SERVERS)
async def test_background_tasks_run_after_the_response(name: str, server: str) -> None:
    """The client has the response while the task still waits; the task runs when released."""
    done: list[str] = []
    app = FRAMEWORKS[name](done)
    async with serving(server, app) as url, open_client(url) as client:
        with trio.fail_after(5):
            answer = seen(await client.get("/background"))
        assert answer == Seen(202, "text/plain; charset=utf-8", "length 6", b"queued")
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # the task is blocked, and the client has its answer
        assert (await client.get("/release")).text == "released"
        await wait_until(lambda: done == ["work"])


@framework
async def test_websockets(name: str) -> None:
    async def exchange(client: Client) -> list[Any]:
        events: list[Any] = []
        async with client.websocket("/ws", subprotocols=["v2", "v1"]) as ws:
            events.append(ws.subprotocol)
            await ws.send("hello")
            events.append(await ws.receive())
            await ws.send(b"\x01\x02\x03")
            events.append(await ws.receive())
            await ws.send("close")
            events.append(tuple(await ws.receive_close()))
        async with client.websocket("/ws") as ws:
            events.append(ws.subprotocol)
            await ws.send("x")
            events.append(await ws.receive())
            events.append(tuple(await ws.close(4000, "client done")))
        for path in ("/ws/refuse", "/ws/nowhere"):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket(path):
                    pass
            events.append(seen(refused.value.response).status)
        return events

    events = await on_both(name, exchange)
    assert events == [
        "v2",
        "HELLO",
        b"\x03\x02\x01",
        (4001, "asked to"),
        None,
        "X",
        (4000, "client done"),
        403,
        403,
    ]


@framework
async def test_the_hub_extension_only_under_peregrine_rt(name: str) -> None:
    """The deliberate difference: ``hub(request.scope)`` works under peregrine_rt only."""
    answers = {}
    for server in SERVERS:
        async with serving(server, FRAMEWORKS[name]()) as url, open_client(url) as client:
            answers[server] = (await client.get("/where")).text
    assert answers == {"peregrine_rt": "hub with 0 on news", "hypercorn": "no hub"}


@framework
async def test_known_difference_an_encoded_slash_in_the_path_is_refused(name: str) -> None:
    """peregrine_rt refuses ``%2F`` (and NUL) in a path for every handler, ASGI apps included."""
    answers = {}
    for server in SERVERS:
        async with serving(server, FRAMEWORKS[name]()) as url, open_client(url) as client:
            answers[server] = (await client.get("/items/a%2Fb")).status
    assert answers == {"peregrine_rt": 400, "hypercorn": 404}
