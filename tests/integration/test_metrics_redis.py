"""``/readyz`` and the Redis figures follow a real ``redis-server`` going away and coming back.

A server with ``redis_url``, ``metrics`` and ``health`` on a loopback port;
its Redis is one of the test's own (``OwnRedis``), stopped by PID and
started again, empty, on the same port.  Every wait is on a condition.

Needs ``redis-server``: skipped without it, unless ``CI`` is set (then it
fails), through the ``redis_server`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import peregrine_rt as pr
from peregrine_rt.exceptions import HubUnavailable
from peregrine_rt.testing import Client, open_client, open_server, wait_until

from .conftest import FAST_CONFIG
from .test_metrics import Figures, moved, scrape, value
from .test_redis_hub import OwnRedis

TOPIC = "news"
RECONNECT = 20.0  # seconds for the hub's link to come back (its backoff is at most 5 s)


class App:
    """``/publish`` publishes on the hub and says whether the other nodes got it."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/publish":
            try:
                delivered = await request.hub.publish(TOPIC, "hello")
            except HubUnavailable as exc:
                response.json({"delivered": exc.delivered, "everywhere": False}, status=503)
            else:
                response.json({"delivered": delivered, "everywhere": True})
        else:
            response.text("ok")


@pytest.fixture
def own_redis(redis_server: str, tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis of this test's own (``redis_server``: skip, or fail in CI, without one)."""
    redis = OwnRedis(tmp_path / "redis")
    try:
        yield redis
    finally:
        redis.stop()


async def readiness(client: Client) -> tuple[int, dict[str, object]]:
    response = await client.get("/readyz")
    assert response.headers["cache-control"] == "no-store"
    return response.status, response.json()


def redis_up(figures: Figures) -> float | None:
    """``peregrine_redis_up``, or None when the scrape has no such series."""
    return figures.get(("peregrine_redis_up", ()))


async def test_readiness_and_the_redis_figures_follow_redis(own_redis: OwnRedis) -> None:
    server = pr.Server(
        App, redis_url=own_redis.url, metrics=True, health=True, port=0, **FAST_CONFIG
    )
    hub = server.hub
    assert isinstance(hub, pr.RedisHub)
    async with open_server(server) as live, open_client(live.url) as client:
        await wait_until(lambda: hub.connected, message="linked to Redis")
        assert await readiness(client) == (
            200,
            {"status": "ready", "listening": True, "hub": True, "not_shutting_down": True},
        )
        start = await scrape(client)
        assert redis_up(start) == 1
        assert (await client.get("/publish")).json() == {"delivered": 0, "everywhere": True}

        own_redis.stop()
        await wait_until(lambda: not hub.connected, message="the link lost")
        status, checks = await readiness(client)
        assert (status, checks) == (
            503,
            {"status": "not ready", "listening": True, "hub": False, "not_shutting_down": True},
        )
        down = await scrape(client)
        assert redis_up(down) == 0
        assert moved(start, down, "peregrine_hub_lost_total") == 0
        answer = await client.get("/publish")  # reaches this process only
        assert (answer.status, answer.json()) == (503, {"delivered": 0, "everywhere": False})
        lost = await scrape(client)
        assert moved(down, lost, "peregrine_hub_lost_total") == 1
        assert moved(down, lost, "peregrine_hub_publishes_total") == 1
        assert redis_up(lost) == 0

        own_redis.start()  # empty, on the same port
        await wait_until(lambda: hub.connected, timeout=RECONNECT, message="relinked")
        assert await readiness(client) == (
            200,
            {"status": "ready", "listening": True, "hub": True, "not_shutting_down": True},
        )
        back = await scrape(client)
        assert redis_up(back) == 1
        assert moved(lost, back, "peregrine_hub_lost_total") == 0  # a counter: it stays
        assert value(back, "peregrine_hub_lost_total") == 1
        assert (await client.get("/publish")).json() == {"delivered": 0, "everywhere": True}
        assert value(await scrape(client), "peregrine_hub_lost_total") == 1
