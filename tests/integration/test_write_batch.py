"""Config.batch_writes through a real server: batched under load, every answer right, in order."""

from __future__ import annotations

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.testing import Client, open_client, open_server

CLIENTS = 20
ROUNDS = 15


class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text(request.path)


async def read_response(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    """One response's body (Content-Length framing); ``buffer`` keeps what follows it."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        buffer += data
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end]).lower()
    assert head.startswith(b"http/1.1 200 ")
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buffer) < end + length:
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        buffer += data
    body = bytes(buffer[end : end + length])
    del buffer[: end + length]
    return body


async def client(port: int, number: int, answers: dict[int, list[bytes]]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buffer = bytearray()
    async with stream:
        for round_ in range(ROUNDS):
            # two pipelined requests, then one alone
            paths = [f"/c{number}/r{round_}/{k}" for k in range(3)]
            await stream.send_all(
                b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths[:2])
            )
            got = [await read_response(stream, buffer) for _ in range(2)]
            await stream.send_all(f"GET {paths[2]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got.append(await read_response(stream, buffer))
            answers[number].extend(got)


async def load(port: int) -> dict[int, list[bytes]]:
    answers: dict[int, list[bytes]] = {n: [] for n in range(CLIENTS)}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for number in range(CLIENTS):
                nursery.start_soon(client, port, number, answers)
    return answers


def expected(number: int) -> list[bytes]:
    return [f"/c{number}/r{r}/{k}".encode() for r in range(ROUNDS) for k in range(3)]


def count_flushes(server: pr.Server) -> list[int]:
    """The number of responses each flush of ``server``'s batch wrote (filled as it runs)."""
    batch = server.write_batch
    assert batch is not None  # Config.batch_writes is on by default
    flushed: list[int] = []
    flush = batch.flush

    def counting_flush() -> None:
        flushed.append(len(batch.queued))
        flush()

    batch.flush = counting_flush  # type: ignore[method-assign]
    return flushed


async def test_concurrent_clients_share_flushes_and_each_gets_its_answers_in_order() -> None:
    server = pr.Server(Echo)
    flushed = count_flushes(server)
    async with open_server(server):
        answers = await load(server.port)
    assert all(answers[n] == expected(n) for n in range(CLIENTS))
    # Under load, passes write several connections' responses at once.
    assert max(flushed) >= 2, flushed
    assert server.write_batch is not None and server.write_batch.queued == []


@pytest.mark.parametrize("option", [False, True])
async def test_batch_writes_off_writes_each_response_at_once(option: bool) -> None:
    server = pr.Server(Echo, batch_writes=option)
    assert (server.write_batch is not None) is option
    async with open_server(server):
        answers = await load(server.port)
    assert all(answers[n] == expected(n) for n in range(CLIENTS))


async def test_pipelined_requests_of_a_lone_client_are_answered_in_one_flush() -> None:
    server = pr.Server(Echo)
    batch = server.write_batch
    assert batch is not None
    flushed: list[tuple[int, int]] = []
    flush = batch.flush

    def counting_flush() -> None:
        transports = list(batch.queued)
        before = [t.bytes_sent for t in transports]
        flush()
        for transport, sent in zip(transports, before, strict=True):
            flushed.append((id(transport), transport.bytes_sent - sent))

    batch.flush = counting_flush  # type: ignore[method-assign]
    paths = [f"/p{k}" for k in range(10)]
    async with open_server(server):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
            )
            buffer = bytearray()
            with trio.fail_after(10):
                bodies = [await read_response(stream, buffer) for _ in paths]
    assert bodies == [p.encode() for p in paths]
    # The server was quiet (a lone response would go out at once), but these ten
    # had their next request in: all ten went out in one flush of one connection.
    assert len(flushed) == 1, flushed
    assert flushed[0][1] > 10 * len(b"HTTP/1.1 200 OK\r\n")


class WSEcho:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


async def test_websocket_echoes_share_flushes_and_each_socket_gets_its_own_in_order() -> None:
    server = pr.Server(WSEcho)
    flushed = count_flushes(server)
    echoed: dict[int, list[str | bytes]] = {n: [] for n in range(CLIENTS)}

    async def talker(client: Client, number: int) -> None:
        async with client.websocket("/") as ws:
            for i in range(ROUNDS):
                await ws.send(f"{number}:{i}")
                echoed[number].append(await ws.receive())

    async with open_server(server) as live, open_client(live.url) as client:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for number in range(CLIENTS):
                    nursery.start_soon(talker, client, number)
    assert all(echoed[n] == [f"{n}:{i}" for i in range(ROUNDS)] for n in range(CLIENTS))
    assert max(flushed) >= 2, flushed  # several sockets' frames in one flush
