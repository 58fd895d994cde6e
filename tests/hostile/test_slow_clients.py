"""Slow clients cannot hold slots: a minimum transfer rate, and a per-IP connection cap.

Reported: a request body sent at 1 byte per second was never timed out
(``body_timeout`` counts only silence, and each byte resets it); 250 such
clients against ``max_connections=200`` left 0 of 814 normal requests served
over 45 s.  Now a body must keep ``Config.min_rate`` bytes per second after
``min_rate_grace`` (as Apache's mod_reqtimeout MinRate), and so must a client
reading a response; ``max_connections_per_ip`` caps one address's connections.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt.testing import wait_until
from tests.integration.conftest import Reader, get, open_server
from tests.integration.ws_helpers import lockstep_connection


class Upload:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/big":
            response.text("x" * 200_000)
            return
        body = await request.body()
        response.text(f"got {len(body)}")


def post_head(length: int) -> bytes:
    return get("POST /up", f"Content-Length: {length}")


# raw bytes: a body trickled one byte a second
async def test_a_trickled_body_gets_408_after_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(
        Upload, min_rate=500, min_rate_grace=10, body_timeout=30, guard=300
    ) as h:
        stream = await h.connect()
        await stream.send_all(post_head(1000))
        start = trio.current_time()

        async def trickle() -> None:
            try:
                for _ in range(1000):
                    await stream.send_all(b"x")
                    await trio.sleep(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            resp = await Reader(stream).response()
            nursery.cancel_scope.cancel()
        assert resp.status == 408
        # 10 s of grace, plus the few bytes' worth (each buys 1/500 s), plus a reaper tick
        assert 10 <= trio.current_time() - start <= 12


# raw bytes: a body sent slowly but above the minimum rate
async def test_a_body_above_the_minimum_rate_is_read_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_server(Upload, min_rate=500, min_rate_grace=10, guard=300) as h:
        stream = await h.connect()
        await stream.send_all(post_head(30_000))
        for _ in range(30):  # 1000 B/s for 30 s: longer than the grace, faster than 500 B/s
            await stream.send_all(b"y" * 1000)
            await trio.sleep(1)
        resp = await Reader(stream).response()
        assert (resp.status, resp.body) == (200, b"got 30000")


# raw bytes: the same trickle with the minimum turned off
async def test_min_rate_none_turns_it_off(autojump_clock: trio.testing.MockClock) -> None:
    async with open_server(
        Upload, min_rate=None, min_rate_grace=10, body_timeout=30, guard=300
    ) as h:
        stream = await h.connect()
        await stream.send_all(post_head(40))
        for _ in range(40):  # 40 s at 1 B/s, never silent for body_timeout
            await stream.send_all(b"z")
            await trio.sleep(1)
        assert (await Reader(stream).response()).status == 200


async def test_a_response_read_too_slowly_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client reading 100 B/s of a 200 kB response is dropped after the grace."""
    async with open_server(
        Upload, min_rate=500, min_rate_grace=10, send_timeout=300, guard=300
    ) as h:
        stream = await lockstep_connection(h)  # sends complete only as the client reads
        await stream.send_all(get("/big"))
        await h.wait_connections(1)
        start = trio.current_time()
        received = 0
        while h.server.connections:  # until the server drops it
            received += len(await stream.receive_some(100))
            await trio.sleep(1)
        # The server gave up on it (what the stream still holds is not the point).
        assert received < 200_000
        assert 10 <= trio.current_time() - start <= 10 + received / 500 + 3


async def test_a_connection_cap_per_ip() -> None:
    async with open_server(Upload, transport="tcp", max_connections_per_ip=2) as h:
        port = h.server.port
        kept = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await h.wait_connections(2)
        third = await trio.open_tcp_stream("127.0.0.1", port)
        assert (await Reader(third).response()).status == 503
        await third.aclose()
        other = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
        await other.send_all(get("/big"))
        assert (await Reader(other).response()).status == 200
        for stream in [*kept, other]:
            await stream.aclose()
        await h.wait_connections(0)
        again = await trio.open_tcp_stream("127.0.0.1", port)
        await again.send_all(get("/big"))
        assert (await Reader(again).response()).status == 200  # the count went back down
        await again.aclose()


@pytest.mark.parametrize("tricklers", [250])
async def test_tricklers_from_one_address_do_not_starve_a_normal_client(
    tricklers: int,
) -> None:
    """The issue's scenario, scaled in time: grace 1 s, 250 tricklers on 127.0.0.2.

    max_connections=300 and a per-IP cap of 100: the tricklers keep coming back
    (each connection trickles its body at 1 B/s until it is cut), and a normal
    client on 127.0.0.1 must get at least 99% of its requests served.  Every
    trickler is closed within the grace plus one rate window (plus a reaper tick).
    """
    grace = 1.0
    async with open_server(
        Upload,
        transport="tcp",
        guard=60,
        max_connections=300,
        max_connections_per_ip=100,
        min_rate=500,
        min_rate_grace=grace,
    ) as h:
        port = h.server.port
        held: list[float] = []  # how long each accepted trickler connection lasted
        refused = 0
        served = failed = 0
        stop = trio.Event()

        async def trickler() -> None:
            nonlocal refused
            while not stop.is_set():
                stream = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                start = trio.current_time()
                try:
                    await stream.send_all(post_head(10_000))
                    with trio.move_on_after(0.05):
                        head = await stream.receive_some(12)
                        if head.startswith(b"HTTP/1.1 503"):
                            refused += 1
                            with trio.move_on_after(0.2):  # and come back, unless stopped
                                await stop.wait()
                            continue
                    while True:  # 1 B/s until the server cuts it
                        await stream.send_all(b"x")
                        with trio.move_on_after(1):
                            if not await stream.receive_some(65536):
                                break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    held.append(trio.current_time() - start)
                    await trio.aclose_forcefully(stream)

        async def normal_client() -> None:
            nonlocal served, failed
            for _ in range(200):
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                    await stream.send_all(get("/big", "Connection: close"))
                    resp = await Reader(stream).response()
                    served += resp.status == 200
                    failed += resp.status != 200
                    await stream.aclose()
                except (OSError, trio.BrokenResourceError):
                    failed += 1

        async with trio.open_nursery() as nursery:
            for _ in range(tricklers):
                nursery.start_soon(trickler)
            # The attack is under way: the per-IP cap is full of tricklers.
            await wait_until(lambda: len(h.server.connections) >= 100, timeout=30)
            await normal_client()
            stop.set()
            nursery.cancel_scope.cancel()
        assert served >= 0.99 * (served + failed), (served, failed)
        assert refused > 0  # the per-IP cap did its part
        cut = [t for t in held if t > 0.05]
        assert cut and max(cut) <= grace + 1 + 1, max(cut)
