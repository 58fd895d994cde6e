"""RedisHub against a real redis-server: the hub's semantics across nodes.

A "node" is a :class:`~peregrine_rt.Server` with its own RedisHub: two of them
in one trio run are two nodes (two Redis link pairs, two node ids), and the
last test runs two real server processes.  Sockets subscribe through
``examples/echo.py``'s ``/bcast`` path (every message to every ``/bcast``
socket of every node, the sender included) or, where exact counts matter, the
hub is driven directly with collecting subscribers.

The redis-server is the plugin's (a free port, a temporary directory); the
tests that stop Redis start their own.  Without redis-server these tests are
skipped, unless ``CI`` is set: there they fail.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio

from examples.echo import BROADCAST_PATH, BROADCAST_TOPIC, Echo
from peregrine_rt import HubUnavailable, RedisHub, Server, _redis_hub
from peregrine_rt.testing import LiveServer, open_client, open_server, wait_until
from peregrine_rt.testing._redis import RedisServer, start_redis_server

from .conftest import FAST_CONFIG, PYTHON, REPO

HUB_LOG = "peregrine_rt.hub"
TIMEOUT = 20  # per test: generous, every wait inside is bounded too


class Collector:
    """A hub subscriber that keeps what it is given (the hub's Subscriber protocol)."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    def deliver(self, message: str | bytes) -> bool:
        self.messages.append(message)
        return True

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[str | bytes]:
        await wait_until(lambda: len(self.messages) >= n, timeout=timeout)
        return self.messages


async def until(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    await wait_until(predicate, timeout=timeout)


@asynccontextmanager
async def running(hub: RedisHub) -> AsyncIterator[RedisHub]:
    """Run ``hub.serve`` for the block (as a server does)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve)
        yield hub
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def node(url: str, **config: Any) -> AsyncIterator[LiveServer]:
    """Echo served on a free port with a RedisHub on ``url``."""
    async with open_server(Echo, **{**FAST_CONFIG, "redis_url": url, **config}) as live:
        hub_of(live)  # a RedisHub, since redis_url is set
        yield live


def hub_of(live: LiveServer) -> RedisHub:
    hub = live.server.hub
    assert isinstance(hub, RedisHub)
    return hub


async def subscribed(*lives: LiveServer, each: int) -> None:
    """Until every node has ``each`` sockets on /bcast (they subscribe in on_open)."""
    await until(lambda: all(lv.server.hub.count(BROADCAST_TOPIC) == each for lv in lives))


class OwnRedis:
    """A redis-server of one test's own, to stop and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.server: RedisServer = start_redis_server(directory)
        self.port = self.server.port
        self.url = self.server.url

    def stop(self) -> None:
        """Stop it by PID (SIGTERM)."""
        self.server.stop()

    def start(self) -> None:
        """Start a new one, empty, on the same port."""
        self.server = start_redis_server(self.server.directory, port=self.port)


@pytest.fixture
def own_redis(redis_server: str, tmp_path: Path) -> Iterator[OwnRedis]:
    """Stopped at the end of the test (``redis_server`` skips or fails without redis-server)."""
    redis = OwnRedis(tmp_path / "redis")
    try:
        yield redis
    finally:
        redis.stop()


# -- the package and the server ---------------------------------------------------------


def test_importing_peregrine_rt_does_not_import_coredis() -> None:
    code = (
        "import sys, peregrine_rt\n"
        "assert 'coredis' not in sys.modules, 'coredis imported with peregrine_rt'\n"
        "assert peregrine_rt.RedisHub.__module__ == 'peregrine_rt._redis_hub'\n"
        "assert 'coredis' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_server_with_redis_url_has_a_redis_hub() -> None:
    server = Server(Echo, redis_url="redis://127.0.0.1:6379/0")
    assert isinstance(server.hub, RedisHub)
    assert not server.hub.connected  # nothing connects before serving
    with pytest.raises(ValueError, match="not a Redis URL"):
        Server(Echo, redis_url="http://127.0.0.1:6379")


# -- one node ---------------------------------------------------------------------------


async def test_fan_out_to_every_socket_on_one_server(redis_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            node(redis_url) as live,
            open_client(live.url) as client,
            client.websocket(BROADCAST_PATH) as a,
            client.websocket(BROADCAST_PATH) as b,
            client.websocket(BROADCAST_PATH) as c,
        ):
            await subscribed(live, each=3)
            await a.send("hello")
            await b.send(b"\x00\xffbytes")
            for ws in (a, b, c):
                assert [await ws.receive(), await ws.receive()] == ["hello", b"\x00\xffbytes"]
            # Exactly once: the message did not come back from Redis a second time.
            await c.send("end")
            for ws in (a, b, c):
                assert await ws.receive() == "end"
                await ws.assert_no_message(within=0.1)
            assert hub_of(live).lost == 0


async def test_closing_a_socket_unsubscribes_it(redis_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(redis_url) as live, open_client(live.url) as client:
            hub = live.server.hub
            async with client.websocket(BROADCAST_PATH) as stays:
                async with client.websocket(BROADCAST_PATH):
                    await subscribed(live, each=2)
                await subscribed(live, each=1)
                assert hub.topics() == [BROADCAST_TOPIC]
                await stays.send("still here")
                assert await stays.receive() == "still here"
            await subscribed(live, each=0)
            assert hub.topics() == []


async def test_a_publish_returns_the_local_deliveries(redis_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(RedisHub(redis_url)) as hub:
            first, second = Collector(), Collector()
            hub.subscribe(first, "t")
            hub.subscribe(second, "t")
            assert await hub.publish("t", "x") == 2
            assert await hub.publish("nobody", "x") == 0
            with pytest.raises(TypeError):
                await hub.publish("t", 42)  # type: ignore[arg-type]  # the point of the test


# -- two nodes in one trio run ----------------------------------------------------------


async def test_messages_cross_nodes_both_ways_exactly_once(redis_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            node(redis_url) as node_a,
            node(redis_url) as node_b,
            open_client(node_a.url) as client_a,
            open_client(node_b.url) as client_b,
            client_a.websocket(BROADCAST_PATH) as a,
            client_b.websocket(BROADCAST_PATH) as b,
        ):
            await subscribed(node_a, node_b, each=1)
            await a.send("from a")
            assert await a.receive() == "from a"  # the sender included
            assert await b.receive() == "from a"
            await b.send(b"from b")
            assert await b.receive() == b"from b"
            assert await a.receive() == b"from b"
            for ws in (a, b):
                await ws.assert_no_message(within=0.2)


async def test_order_per_publisher_over_hundreds_of_messages(redis_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(RedisHub(redis_url)) as hub_a, running(RedisHub(redis_url)) as hub_b:
            here, there = Collector(), Collector()
            hub_a.subscribe(here, "t")
            hub_b.subscribe(there, "t")
            # Ten tasks publish at once on node A: each task's messages must keep
            # their order, and everything must arrive exactly once, on both nodes.
            tasks, each = 10, 50

            async def publisher(k: int) -> None:
                for i in range(each):
                    await hub_a.publish("t", f"{k}:{i}")

            async with trio.open_nursery() as nursery:
                for k in range(tasks):
                    nursery.start_soon(publisher, k)
            sent = tasks * each
            for got in (await here.wait_for(sent), await there.wait_for(sent)):
                assert len(got) == sent
                for k in range(tasks):
                    assert [m for m in got if str(m).startswith(f"{k}:")] == [
                        f"{k}:{i}" for i in range(each)
                    ]
            # Node B sees node A's publishes in the order A made them (the wire order).
            assert there.messages == here.messages


async def test_order_per_sender_between_servers(redis_url: str) -> None:
    n = 300
    with trio.fail_after(TIMEOUT):
        async with (
            node(redis_url) as node_a,
            node(redis_url) as node_b,
            open_client(node_a.url) as client_a,
            open_client(node_b.url) as client_b,
            client_a.websocket(BROADCAST_PATH) as a,
            client_b.websocket(BROADCAST_PATH) as b,
        ):
            await subscribed(node_a, node_b, each=1)
            for i in range(n):
                await a.send(f"m{i}")
            expected = [f"m{i}" for i in range(n)]
            assert [await b.receive() for _ in range(n)] == expected
            assert [await a.receive() for _ in range(n)] == expected


async def test_a_prefix_separates_apps_on_one_redis(redis_url: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            running(RedisHub(redis_url)) as app1,
            running(RedisHub(redis_url, prefix="other[app]*:")) as app2_a,
            running(RedisHub(redis_url, prefix="other[app]*:")) as app2_b,
        ):
            in_app1, in_app2 = Collector(), Collector()
            app1.subscribe(in_app1, "t")
            app2_b.subscribe(in_app2, "t")
            await app1.publish("t", "app1")
            await app2_a.publish("t", "app2")
            assert await in_app2.wait_for(1) == ["app2"]
            assert await in_app1.wait_for(1) == ["app1"]
            await trio.sleep(0.1)
            assert (in_app1.messages, in_app2.messages) == (["app1"], ["app2"])


async def test_foreign_messages_in_the_namespace_are_dropped_and_logged(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running(RedisHub(redis_url)) as hub, coredis.Redis.from_url(redis_url) as r:
            got = Collector()
            hub.subscribe(got, "t")
            await r.publish("peregrine:t", b"too short")
            await r.publish("peregrine:t", b"0123456789abcdef" + b"t\xff\xfe")  # not UTF-8
            await r.publish("peregrine:t", b"0123456789abcdef" + b"b" + b"\x00ok")
            assert await got.wait_for(1) == [b"\x00ok"]
            await r.publish("peregrine:t", b"0123456789abcdef" + b"t" + "é".encode())
            assert await got.wait_for(2) == [b"\x00ok", "é"]
    dropped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(dropped) == 2
    assert all(r.name == HUB_LOG and r.levelno == logging.WARNING for r in dropped)


# -- Redis unreachable ------------------------------------------------------------------


async def test_unreachable_redis_at_startup_does_not_stop_the_server(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    own_redis.stop()  # nothing listens on its port now
    with trio.fail_after(TIMEOUT):
        hub = RedisHub(own_redis.url, timeout=0.5)
        started = trio.current_time()
        async with running(hub):
            assert trio.current_time() - started < 2  # started after `timeout`, not blocked
            assert not hub.connected
            local = Collector()
            hub.subscribe(local, "t")
            with pytest.raises(HubUnavailable) as caught:
                await hub.publish("t", "only here")
            assert (caught.value.topic, caught.value.delivered, hub.lost) == ("t", 1, 1)
            assert local.messages == ["only here"]
            own_redis.start()
            await until(lambda: hub.connected)
            assert await hub.publish("t", "now everywhere") == 1
    messages = [r.getMessage() for r in caplog.records if r.name == HUB_LOG]
    assert any("unreachable: serving anyway" in m for m in messages), messages
    assert any("cannot connect to Redis" in m for m in messages), messages
    assert any("reconnected to Redis" in m and "1 message(s)" in m for m in messages), messages


async def test_redis_restart_during_traffic(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Stop Redis by PID while node A publishes, start it again: traffic resumes, no server restart.

    While Redis is down A's publishes reach A's subscribers only, are counted in
    ``hub.lost`` and logged; B gets an in-order subset of A's messages, never a
    duplicate; afterwards messages cross both ways again, exactly once.
    """
    caplog.set_level(logging.INFO, logger=HUB_LOG)
    url = own_redis.url
    with trio.fail_after(TIMEOUT):
        async with (
            running(RedisHub(url, timeout=1.0)) as hub_a,
            running(RedisHub(url, timeout=1.0)) as hub_b,
        ):
            at_a, at_b = Collector(), Collector()
            hub_a.subscribe(at_a, "t")
            hub_b.subscribe(at_b, "t")
            sent = 0
            raised = 0
            stop_sending = trio.Event()

            async def traffic() -> None:
                nonlocal sent, raised
                while not stop_sending.is_set():
                    try:
                        await hub_a.publish("t", f"{sent}")
                    except HubUnavailable:
                        raised += 1
                    sent += 1
                    await trio.sleep(0.002)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(traffic)
                await until(lambda: len(at_b.messages) >= 50)
                own_redis.stop()  # SIGTERM by PID
                await until(lambda: not hub_a.connected and not hub_b.connected)
                await until(lambda: raised >= 20)  # publishing on while Redis is down
                own_redis.start()
                await until(lambda: hub_a.connected and hub_b.connected)
                # From the next call on, both nodes are linked when A publishes.
                resumed_from = sent + 1
                await until(lambda: sent >= resumed_from + 50)  # flowing again
                stop_sending.set()
            # Both ways, exactly once, after the restart.
            await hub_b.publish("t", "b after restart")
            await until(lambda: "b after restart" in at_a.messages)
            await hub_a.publish("t", "a after restart")
            await until(lambda: "a after restart" in at_b.messages)
            # Order per publisher: a late duplicate of anything either node sent
            # would arrive before that node's last word.
            await hub_b.publish("t", "b's last word")
            await hub_a.publish("t", "a's last word")
            await until(lambda: "b's last word" in at_a.messages)
            await until(lambda: "a's last word" in at_b.messages)

    # A's own subscriber got every message once, in order (local delivery never fails).
    numbers_a = [int(m) for m in at_a.messages if str(m).isdigit()]
    assert numbers_a == list(range(sent))
    assert at_a.messages.count("b after restart") == 1
    # B: an in-order subset (what was published while both links were up), no
    # duplicates, and everything published after both reconnected.
    numbers_b = [int(m) for m in at_b.messages if str(m).isdigit()]
    assert numbers_b == sorted(set(numbers_b))
    assert set(range(resumed_from, sent)) <= set(numbers_b)
    assert len(numbers_b) < sent
    assert raised == hub_a.lost > 0
    assert at_b.messages.count("a after restart") == 1
    assert hub_b.lost == 0

    messages = [r.getMessage() for r in caplog.records if r.name == HUB_LOG]
    assert sum("lost the connection to Redis" in m for m in messages) == 2, messages
    assert sum("reconnected to Redis" in m for m in messages) == 2, messages
    assert any("reached this process only" in m and "hub.lost" in m for m in messages), messages


# -- two server processes ---------------------------------------------------------------


A_SENT = {f"a{i}": None for i in range(50)}  # dicts: ordered, with fast lookup
B_SENT = {f"b{i}": None for i in range(50)}


NODE_OPTIONS = ("--port", "0", "--shutdown-grace", "1", "--redis")


class Node:
    """``python -m peregrine_rt examples.echo:Echo --port 0 --redis URL`` as a child process.

    Its log goes to a file, read until the ``serving ... on http://127.0.0.1:PORT``
    line (logged once the hub is subscribed, or gave up waiting for Redis).
    """

    def __init__(self, redis_url: str, log: Path) -> None:
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "peregrine_rt", "examples.echo:Echo", *NODE_OPTIONS, redis_url],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def port(self, timeout: float = 15.0) -> int:
        with trio.fail_after(timeout):
            while not (found := re.search(r"serving \S+ on http://127\.0\.0\.1:(\d+)", self.log)):
                assert self.proc.poll() is None, f"exited with {self.proc.returncode}: {self.log}"
                await trio.sleep(0.02)
        return int(found.group(1))

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def test_two_server_processes_share_one_redis(redis_url: str, tmp_path: Path) -> None:
    """The issue's test: ``peregrine-rt examples.echo:Echo --redis URL`` twice, a client on each."""
    procs = [Node(redis_url, tmp_path / "a.log"), Node(redis_url, tmp_path / "b.log")]
    try:
        ports = [await proc.port() for proc in procs]
        for proc in procs:
            assert "connected to Redis" in proc.log, proc.log
        with trio.fail_after(TIMEOUT):
            async with (
                open_client(f"http://127.0.0.1:{ports[0]}") as client_a,
                open_client(f"http://127.0.0.1:{ports[1]}") as client_b,
                client_a.websocket(BROADCAST_PATH) as a,
                client_b.websocket(BROADCAST_PATH) as b,
            ):
                # A socket subscribes in on_open: once its own message is back, it
                # is subscribed.  b may or may not have been when "a ready" went out,
                # so b gets it once or not at all, before any of a's later messages.
                await a.send("a ready")
                assert await a.receive() == "a ready"
                await b.send("b ready")
                assert await a.receive() == "b ready"
                n = 50
                for i in range(n):
                    await a.send(f"a{i}")
                    await b.send(f"b{i}")
                got_a = [await a.receive() for _ in range(2 * n)]
                got_b = [await b.receive() for _ in range(2 * n + 1)]
                if "a ready" in got_b:
                    got_b.remove("a ready")
                    got_b.append(await b.receive())
                assert got_b[0] == "b ready"
                del got_b[0]
                for got in (got_a, got_b):
                    # Everything from both sides, once each, each side's in order.
                    assert [m for m in got if m in A_SENT] == list(A_SENT)
                    assert [m for m in got if m in B_SENT] == list(B_SENT)
                    assert len(got) == 2 * n
                await a.assert_no_message(within=0.3)
                await b.assert_no_message(within=0.1)
    finally:
        for proc in procs:
            proc.stop()


# -- the keepalive ----------------------------------------------------------------------


async def test_the_keepalive_ping_keeps_a_quiet_link_up(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_redis_hub, "PING_INTERVAL", 0.02)
    with trio.fail_after(TIMEOUT):
        async with running(RedisHub(redis_url)) as hub_a, running(RedisHub(redis_url)) as hub_b:
            got = Collector()
            hub_b.subscribe(got, "t")
            await trio.sleep(0.5)  # some 25 pings on each connection of each hub
            assert hub_a.connected and hub_b.connected
            await hub_a.publish("t", "still linked")
            assert await got.wait_for(1) == ["still linked"]
    assert not [r for r in caplog.records if r.name == HUB_LOG and r.levelno >= logging.WARNING]


async def test_a_redis_that_stops_answering_is_dropped_and_rejoined(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP: the TCP connections stay open but nothing answers; the pings notice."""
    monkeypatch.setattr(_redis_hub, "PING_INTERVAL", 0.1)
    with trio.fail_after(TIMEOUT):
        async with (
            running(RedisHub(own_redis.url, timeout=0.3)) as hub_a,
            running(RedisHub(own_redis.url, timeout=0.3)) as hub_b,
        ):
            got = Collector()
            hub_b.subscribe(got, "t")
            os.kill(own_redis.server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(HubUnavailable, match=r"no answer within 0\.3 s"):
                    await hub_a.publish("t", "unanswered")
                await until(lambda: not hub_a.connected and not hub_b.connected, timeout=5)
            finally:
                os.kill(own_redis.server.pid, signal.SIGCONT)
            await until(lambda: hub_a.connected and hub_b.connected)
            await hub_a.publish("t", "answered")
            await until(lambda: "answered" in got.messages)
            assert hub_a.lost == 1
    messages = [r.getMessage() for r in caplog.records if r.name == HUB_LOG]
    assert sum("lost the connection to Redis" in m for m in messages) == 2, messages
