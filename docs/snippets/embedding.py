"""Running a Server inside your own trio program (docs/quickstart.rst)."""

from __future__ import annotations

import trio

import peregrine_rt as pr
from examples.echo import Echo


# [embed]
async def main() -> None:
    server = pr.Server(Echo, port=0)  # 0: the system picks a free port
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)  # listening now; server.port is the port
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"GET /hi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := await stream.receive_some():
                reply += chunk
        print(reply.split(b"\r\n\r\n", 1)[1].decode())  # method=GET target=/hi body_len=0
        await server.aclose()  # graceful shutdown; serve() returns


# [/embed]


async def test_embedded_server_serves_and_stops(capsys) -> None:
    with trio.fail_after(10):
        await main()
    assert capsys.readouterr().out == "method=GET target=/hi body_len=0\n"
