"""Publishing without a socket: the signed POST endpoint, and emit() through a real Redis."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from peregrine_rt._channels._emit import SIGNATURE_HEADER, emit, sign
from peregrine_rt._channels._server import Channels
from peregrine_rt._channels._topics import topic
from peregrine_rt._routing import Router
from peregrine_rt.testing import open_client

from .conftest import Phx

SECRET = b"0123456789abcdef-secret"


class News(Channels):
    @topic("news")
    class NewsTopic:
        pass


def app() -> tuple[Router, News]:
    news = News()
    router = Router()
    router.websocket("/socket/websocket", news)
    router.route("/publish", news.publish_endpoint(SECRET), methods=("POST",))
    return router, news


def body(**fields: Any) -> bytes:
    return json.dumps(
        {"topic": "news", "event": "headline", "payload": {"t": 1}, **fields}
    ).encode()


async def test_signed_post_broadcasts() -> None:
    router, _ = app()
    async with open_client(router) as client, client.websocket("/socket/websocket") as ws:
        phx = Phx(ws)
        await phx.join("news")
        data = body()
        response = await client.post(
            "/publish", content=data, headers={SIGNATURE_HEADER: sign(SECRET, data)}
        )
        assert response.status == 202
        assert await phx.receive() == [None, None, "news", "headline", {"t": 1}]


@pytest.mark.parametrize(
    ("make_header", "status"),
    [
        (lambda data: None, 401),
        (lambda data: "t=abc,v1=00", 401),
        (lambda data: sign(b"another-secret-of-16+", data), 401),
        (lambda data: sign(SECRET, data, timestamp=1), 401),  # outside the window
        (lambda data: sign(SECRET, data + b" "), 401),  # body changed
    ],
)
async def test_bad_signatures_refused(make_header: Any, status: int) -> None:
    router, _ = app()
    async with open_client(router) as client:
        data = body()
        header = make_header(data)
        headers = {} if header is None else {SIGNATURE_HEADER: header}
        response = await client.post("/publish", content=data, headers=headers)
        assert response.status == status


async def test_replay_bad_body_and_too_large() -> None:
    router, _ = app()
    async with open_client(router) as client:
        data = body()
        headers = {SIGNATURE_HEADER: sign(SECRET, data)}
        assert (await client.post("/publish", content=data, headers=headers)).status == 202
        assert (await client.post("/publish", content=data, headers=headers)).status == 401
        bad = b'{"topic": 1}'
        response = await client.post(
            "/publish", content=bad, headers={SIGNATURE_HEADER: sign(SECRET, bad)}
        )
        assert response.status == 400
        big = body(payload="x" * 70_000)
        response = await client.post(
            "/publish", content=big, headers={SIGNATURE_HEADER: sign(SECRET, big)}
        )
        assert response.status == 413


@pytest.mark.skipif(
    not os.environ.get("CI") and not os.path.exists("/usr/bin/redis-server"),
    reason="no redis-server here (CI unset); CI runs it",
)
async def test_emit_reaches_a_redis_node(redis_url: str) -> None:
    async with open_client(News, redis_url=redis_url) as client, client.websocket("/") as ws:
        phx = Phx(ws)
        await phx.join("news")
        await emit(redis_url, "news", "headline", {"from": "cron"})
        assert await phx.receive() == [None, None, "news", "headline", {"from": "cron"}]
