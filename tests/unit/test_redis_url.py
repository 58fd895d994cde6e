"""Redis URLs: the Sentinel and Cluster forms, what is refused and why, and how a primary is found.

The sentinels here are fakes (a trio listener answering RESP), so these run
without redis-server; tests/integration/test_redis_failover.py runs real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import trio
from coredis.connection import TCPLocation
from coredis.exceptions import ConnectionError as RedisConnectionError

from peregrine_rt import RedisHistory, RedisHub
from peregrine_rt._redis_url import RedisEndpoint, RedisURL, Topology, parse_redis_url

PARSED = [
    (
        "redis+sentinel://h1:26380,h2/mymaster",
        RedisURL(Topology.SENTINEL, (("h1", 26380), ("h2", 26379)), "mymaster"),
    ),
    (
        "sentinel://:s%40cret@h1:1/svc/3",
        RedisURL(Topology.SENTINEL, (("h1", 1),), "svc", 3, None, "s@cret"),
    ),
    (
        "redis+sentinel://user:pw@[::1]:26379/svc?sentinel_password=sp",
        RedisURL(Topology.SENTINEL, (("::1", 26379),), "svc", 0, "user", "pw", "sp"),
    ),
    (
        "redis+cluster://n1:7000,n2:7001",
        RedisURL(Topology.CLUSTER, (("n1", 7000), ("n2", 7001))),
    ),
    ("redis+cluster://n1/0", RedisURL(Topology.CLUSTER, (("n1", 6379),))),
    ("REDIS://h:1/2", None),
    ("rediss://h:1", None),
    ("unix:///tmp/redis.sock", None),
]


@pytest.mark.parametrize(("url", "expected"), PARSED)
def test_the_forms(url: str, expected: RedisURL | None) -> None:
    assert parse_redis_url(url) == expected


REFUSED = [
    ("http://h:1", "not a Redis URL"),
    ("h:6379", "not a Redis URL"),
    ("redis+sentinel://h1,h2", "names the monitored service"),
    ("redis+sentinel://h1/svc/0/extra", "names the monitored service"),
    ("redis+sentinel://h1/svc/x", "bad database number"),
    ("redis+sentinel://h1:99999/svc", "bad port"),
    ("redis+sentinel://h1:x/svc", "bad host:port"),
    ("redis+sentinel:///svc", "no host"),
    ("redis+sentinel://h1/svc?timeout=1", "unknown option"),
    ("redis+cluster://n1/1", "database 0 only"),
    ("redis+cluster://n1?sentinel_password=x", "unknown option"),
]


@pytest.mark.parametrize(("url", "match"), REFUSED)
def test_malformed_urls_are_refused_when_the_hub_is_built(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RedisHub(url)


def test_the_password_stays_out_of_the_hubs_repr() -> None:
    hub = RedisHub("redis+sentinel://:hunter2@127.0.0.1:26379,127.0.0.1:26380/svc")
    assert "hunter2" not in repr(hub)
    assert "127.0.0.1:26379,127.0.0.1:26380 (service 'svc')" in repr(hub)


def test_a_cluster_serves_the_hub_but_not_a_key_value_client() -> None:
    hub = RedisHub("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    with pytest.raises(ValueError, match="one hash slot"):
        hub.client()
    with pytest.raises(ValueError, match="one hash slot"):
        RedisHistory(hub)  # its script and stream keys too


async def test_a_cluster_url_tries_its_nodes_in_turn() -> None:
    endpoint = RedisEndpoint("redis+cluster://n1:7000,n2:7001", timeout=1.0)
    tried = [await endpoint.locate() for _ in range(3)]
    assert tried == [TCPLocation("n1", 7000), TCPLocation("n2", 7001), TCPLocation("n1", 7000)]


Answer = Callable[[bytes], bytes]


async def fake_sentinel(nursery: trio.Nursery, answer: Answer) -> tuple[int, list[bytes]]:
    """A listener on a free loopback port answering each request with ``answer(request)``."""
    received: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = await stream.receive_some(65536)
            received.append(data)
            await stream.send_all(answer(data))

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], received


def primary_at(port: int) -> Answer:
    text = str(port).encode()
    return lambda _: b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(text), text)


async def closed_port() -> int:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_the_primary_is_asked_of_the_first_sentinel_that_answers() -> None:
    async with trio.open_nursery() as nursery:
        dead = await closed_port()
        unknowing, _ = await fake_sentinel(nursery, lambda _: b"*-1\r\n")
        knowing, received = await fake_sentinel(nursery, primary_at(6390))
        url = f"redis+sentinel://127.0.0.1:{dead},127.0.0.1:{unknowing},127.0.0.1:{knowing}/svc"
        endpoint = RedisEndpoint(url, timeout=1.0)
        assert await endpoint.locate() == TCPLocation("127.0.0.1", 6390)
        assert received == [
            b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$3\r\nsvc\r\n"
        ]
        # The one that answered is asked first next time.
        assert await endpoint.locate() == TCPLocation("127.0.0.1", 6390)
        assert len(received) == 2
        nursery.cancel_scope.cancel()


async def test_sentinels_get_their_own_password() -> None:
    async with trio.open_nursery() as nursery:
        port, received = await fake_sentinel(
            nursery, lambda _: b"+OK\r\n*2\r\n$1\r\nh\r\n$2\r\n77\r\n"
        )
        url = f"redis+sentinel://:primarypw@127.0.0.1:{port}/svc?sentinel_password=spw"
        assert await RedisEndpoint(url, timeout=1.0).locate() == TCPLocation("h", 77)
        assert received[0].startswith(b"*2\r\n$4\r\nAUTH\r\n$3\r\nspw\r\n*3\r\n")
        nursery.cancel_scope.cancel()


async def test_no_sentinel_knowing_the_primary_is_a_connection_error_naming_each() -> None:
    async with trio.open_nursery() as nursery:
        dead = await closed_port()
        refusing, _ = await fake_sentinel(
            nursery, lambda _: b"-NOAUTH Authentication required.\r\n"
        )
        url = f"redis+sentinel://127.0.0.1:{dead},127.0.0.1:{refusing}/svc"
        with pytest.raises(RedisConnectionError) as caught:
            await RedisEndpoint(url, timeout=1.0).locate()
        message = str(caught.value)
        assert f"127.0.0.1:{dead}: " in message
        assert f"127.0.0.1:{refusing}: NOAUTH" in message
        nursery.cancel_scope.cancel()
