"""What the router costs: dispatch to the last of 100 routes, against a whole request.

Run: ``.venv/bin/python bench/routing.py [--quick]``  (about 10 s; ``--quick``: 2 s)

The router holds 100 routes, added in this order: 50 static ones
(``/s{i}/page``) and 50 with parameters (``/d{i}/{id:int}/items/{name}``);
the requests go to the last one added of each kind.

* dispatch: ``await router.handle(request, response)`` on one parsed request,
  minus ``await endpoint(request, response)`` on the same request (the
  endpoint sets a short text body), both driven without an event loop (the
  coroutine never suspends).  That difference is the router's own work:
  matching, converting the parameters, ``request.path_params``.
* whole request: the same GET, keep-alive, through the server's parser,
  handler call and response writer, over a trio memory stream (one request
  at a time, client and server in one process: the client only sends bytes
  and counts the answer's), to a server whose handler is the router, and to
  one whose handler calls the endpoint directly.

Every figure is the best of five rounds (fixed iteration counts; the two
servers' rounds alternate).  The last
line is ``routing dispatch_us=<d> whole_us=<w> ratio=<d/w>`` for the dynamic
route.
"""

from __future__ import annotations

import argparse
import gc
import logging
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

import peregrine_rt as pr
from peregrine_rt._http import RequestParser
from peregrine_rt._routing import Router

ROUNDS = 5
STATIC_PATH = "/s49/page"
DYNAMIC_PATH = "/d49/42/items/abc"


async def endpoint(request: pr.Request, response: pr.Response) -> None:
    response.text("ok")


class Bare:
    """The endpoint as the whole handler: no router."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await endpoint(request, response)


def build_router() -> Router:
    router = Router()
    for i in range(50):
        router.route(f"/s{i}/page", endpoint, name=f"s{i}")
    for i in range(50):
        router.route(f"/d{i}/{{id:int}}/items/{{name}}", endpoint, name=f"d{i}")
    return router


def parse(path: str) -> pr.Request:
    parser = RequestParser(head_class=pr.Request)
    parser.feed(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    request = parser.next_event()
    assert isinstance(request, pr.Request)
    return request


def drive(call: Callable[[pr.Request, pr.Response], Awaitable[None]], path: str, n: int) -> float:
    """Seconds per call of ``call`` on one parsed request (the coroutine must not suspend)."""
    request, response = parse(path), pr.Response()
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            coro = call(request, response)
            try:
                coro.send(None)  # type: ignore[attr-defined]  # a coroutine: runs to the end
            except StopIteration:
                pass
            else:  # pragma: no cover - it suspended: not what this measures
                raise RuntimeError(f"{call!r} suspended")
        best = min(best, (time.perf_counter() - start) / n)
    return best


async def whole(apps: list[Any], path: str, n: int) -> list[float]:
    """Seconds per keep-alive request over a memory stream, through a server for each app.

    The apps' rounds alternate, so that a busy moment of the machine falls on
    both alike.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    best = [float("inf")] * len(apps)
    async with trio.open_nursery() as nursery:
        servers, clients, sizes = [], [], []
        for app in apps:
            server = pr.Server(app, access_log=False)
            await nursery.start(server.serve_listeners, [])
            client, ours = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, ours)
            await client.send_all(request)
            answer = b""
            while not answer.endswith(b"ok"):
                answer += await client.receive_some()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            servers.append(server)
            clients.append(client)
            sizes.append(len(answer))
        for _ in range(ROUNDS):
            for index, (client, size) in enumerate(zip(clients, sizes, strict=True)):
                gc.collect()
                start = time.perf_counter()
                for _ in range(n):
                    await client.send_all(request)
                    got = 0
                    while got < size:
                        got += len(await client.receive_some())
                best[index] = min(best[index], (time.perf_counter() - start) / n)
        for client, server in zip(clients, servers, strict=True):
            await client.aclose()
            await server.aclose()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    # gc.collect() between rounds blocks the event loop on purpose: not a stall to report
    logging.getLogger("peregrine_rt.server").setLevel(logging.ERROR)
    calls, requests = (4_000, 500) if args.quick else (40_000, 4_000)
    router = build_router()
    print(f"python {sys.version.split()[0]} on {platform.machine()}, 100 routes, best of {ROUNDS}")
    print(f"{'path':22} {'endpoint':>9} {'router':>9} {'dispatch':>9} {'whole':>9} {'ratio':>7}")
    for path in (STATIC_PATH, DYNAMIC_PATH):
        bare_call = drive(endpoint, path, calls)
        routed_call = drive(router.handle, path, calls)
        dispatch = routed_call - bare_call
        whole_bare, whole_routed = trio.run(whole, [Bare, router], path, requests)
        print(
            f"{path:22} {bare_call * 1e6:8.2f}µ {routed_call * 1e6:8.2f}µ "
            f"{dispatch * 1e6:8.2f}µ {whole_routed * 1e6:8.2f}µ {dispatch / whole_routed:7.1%}"
            f"   (whole request without the router: {whole_bare * 1e6:.2f}µ)"
        )
    print(
        f"routing dispatch_us={dispatch * 1e6:.2f} whole_us={whole_routed * 1e6:.2f} "
        f"ratio={dispatch / whole_routed:.3f}"
    )


if __name__ == "__main__":
    main()
