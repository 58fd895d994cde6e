"""The per-request Python cost of the HTTP connection loop, without sockets or wrk.

Run: ``.venv/bin/python bench/http_path.py [--requests N] [--tree DIR]``

One :class:`~peregrine_rt._connection.HTTPConnection` serves the hello-world
handler over a fake socket whose ``recv`` always returns the next keep-alive
``GET`` (and whose ``send`` takes everything), through the real
``SocketTransport`` and ``WriteBatch``: the parser, ``Request``/``Response``,
the handler call, the response writer, the keep-alive bookkeeping and the
batching, but no system call and no wait for the socket (``receive_some``
returns at once, so trio's I/O wait is not in the figure).  The figure is the
best of seven runs, in µs per request.

Why: wrk's req/s and server CPU per request (``bench/http.sh``) move by a few
per cent from run to run on a shared 2-core machine, so a change worth 2 % of
the request cannot be told from noise there.  This loop has no I/O and runs
in one process: its spread is about 1 %.  It measures the Python path only;
``bench/http.sh`` stays the judge of the whole.

``--tree DIR`` imports ``peregrine_rt`` from another checkout (a worktree of
the commit before a change, with its C accelerator built): run it once per
tree for a before/after.  Pin it (``taskset -c 0``) for steadier figures.
"""

from __future__ import annotations

import argparse
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"
RUNS = 7


class FakeSocket:
    """``recv`` gives the next request ``left`` times, then EOF; ``send`` takes all."""

    def __init__(self, requests: int) -> None:
        self.left = requests
        self.sent = 0

    def recv(self, size: int) -> bytes:
        if self.left == 0:
            return b""
        self.left -= 1
        return REQUEST

    def send(self, data: bytes, flags: int = 0) -> int:
        self.sent += len(data)
        return len(data)

    def fileno(self) -> int:
        return -1  # "closed": aclose() has nothing to do

    def close(self) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000, help="per run (200000)")
    ap.add_argument("--tree", help="a checkout to import peregrine_rt from")
    args = ap.parse_args()
    if args.tree:
        sys.path.insert(0, args.tree)

    import trio  # after --tree is on the path

    import peregrine_rt as pr
    from peregrine_rt._batch import WriteBatch
    from peregrine_rt._connection import HTTPConnection
    from peregrine_rt._transport import SocketTransport

    class Hello:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.text("Hello, World!")

    class ReadyTransport(SocketTransport):
        """Never waits for the socket: the next request is always there."""

        async def receive_some(self, wait_first: bool = False) -> bytes:
            return self.sock.recv(65536)  # type: ignore[no-any-return]  # the fake socket

    async def run() -> list[float]:
        server = pr.Server(Hello, pr.Config(port=0))
        server.dispatch = Hello().handle  # what serve() sets once the handler has started
        batch = WriteBatch()
        times = []
        async with trio.open_nursery() as nursery:
            await nursery.start(batch.run, nursery)
            for _ in range(RUNS):
                sock = FakeSocket(args.requests)
                conn = HTTPConnection(server, ReadyTransport(sock, ("127.0.0.1", 1), batch))  # type: ignore[arg-type]
                began = time.perf_counter()
                await conn.run()
                times.append(time.perf_counter() - began)
                assert conn.handled == args.requests and sock.sent > 0, "not every request served"
            nursery.cancel_scope.cancel()
        return times

    times = trio.run(run)
    per = [1e6 * t / args.requests for t in times]
    print(f"peregrine_rt from {pr.__file__}")
    print(f"runs (us/request): {' '.join(f'{p:.3f}' for p in per)}")
    print(f"best {min(per):.3f} us per request")


if __name__ == "__main__":
    main()
