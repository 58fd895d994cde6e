"""The raw-trio ceiling: ``trio.serve_tcp``, a naive parse, a fixed response.

No HTTP library, no validation, no bodies: read until ``\\r\\n\\r\\n``, check the
request line has three parts, answer the same bytes, keep the connection alive
(pipelined requests are answered in one send).  Whatever a real server on trio
does costs at least this much, so it is the ceiling for peregrine_rt.

Run: ``python -m bench.servers.hello_rawtrio --port N``
"""

from __future__ import annotations

import argparse

import trio

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 13\r\n"
    b"\r\n"
    b"Hello, World!"
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
MAX_HEAD = 65_536


async def handle(stream: trio.SocketStream) -> None:
    buf = b""
    try:
        while True:
            data = await stream.receive_some(65_536)
            if not data:
                return
            buf += data
            replies = 0
            while (end := buf.find(b"\r\n\r\n")) >= 0:
                line = buf[: buf.find(b"\r\n")]
                buf = buf[end + 4 :]
                if len(line.split(b" ")) != 3:
                    await stream.send_all(RESPONSE * replies + BAD_REQUEST)
                    return
                replies += 1
            if replies:
                await stream.send_all(RESPONSE if replies == 1 else RESPONSE * replies)
            elif len(buf) > MAX_HEAD:
                await stream.send_all(BAD_REQUEST)
                return
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    try:
        trio.run(lambda: trio.serve_tcp(handle, args.port, host=args.host))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
