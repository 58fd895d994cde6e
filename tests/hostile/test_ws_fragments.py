"""Fragmented WebSocket messages: memory bounded by the limit however the message is cut.

Reported: a 4 MiB text message sent as 2.1 million 2-byte fragments raised the
server's RSS by 147 MiB (one object per fragment, only payload bytes counted),
and 2.5 million *empty* continuation frames grew it linearly without ever
tripping ``ws_max_message_size``.  Now fragments go into one buffer and every
fragment after a message's first counts ``FRAME_COST`` (16) bytes toward the
limit.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import peregrine_rt as pr
from peregrine_rt._frames import FRAME_COST
from tests.integration.conftest import ServerProcess, open_server
from tests.integration.ws_helpers import WSClient, close_payload, connect_ws, frame

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING = 0x0, 0x1, 0x2, 0x8, 0x9

REPO = Path(__file__).resolve().parents[2]


class Echo:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


def fragments(opcode: int, payload: bytes, sizes: list[int]) -> list[bytes]:
    """``payload`` as a fragmented message: pieces of the given sizes, the rest last."""
    pieces = []
    pos = 0
    for size in sizes:
        if pos >= len(payload):
            break
        pieces.append(payload[pos : pos + size])
        pos += size
    pieces.append(payload[pos:])
    frames = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        frames.append(frame(opcode if i == 0 else OP_CONT, piece, fin=last))
    return frames


# -- the fast path reads fragments as wsproto would ------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    message=st.one_of(st.text(max_size=300), st.binary(max_size=300)),
    sizes=st.lists(st.integers(0, 40), max_size=12),
    pings=st.lists(st.booleans(), max_size=13),
    cut=st.integers(1, 50),
)
async def test_any_fragmentation_echoes_the_message(
    message: str | bytes, sizes: list[int], pings: list[bool], cut: int
) -> None:
    opcode = OP_TEXT if isinstance(message, str) else OP_BINARY
    payload = message.encode() if isinstance(message, str) else message
    frames = fragments(opcode, payload, sizes)
    wire = b""
    sent_pings = []
    for i, f in enumerate(frames):
        wire += f
        if i < len(pings) and pings[i] and i < len(frames) - 1:
            token = b"p%d" % i
            sent_pings.append(token)
            wire += frame(OP_PING, token)
    async with open_server(Echo) as h:
        ws = await connect_ws(h)
        for start in range(0, len(wire), cut):  # in arbitrary pieces
            await ws.stream.send_all(wire[start : start + cut])
        assert await ws.receive() == message
        assert ws.pongs == sent_pings


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(
            [frame(OP_TEXT, b"ab", fin=False), frame(OP_CONT, b"cd", rsv=4)], 1002, id="rsv"
        ),
        pytest.param(
            [frame(OP_TEXT, b"ab", fin=False), frame(OP_TEXT, b"cd")], 1002, id="new-message"
        ),
        pytest.param(
            [frame(OP_TEXT, b"ab", fin=False), frame(OP_CONT, b"cd", mask=False)],
            1002,
            id="unmasked",
        ),
        pytest.param(
            [frame(OP_BINARY, b"ab", fin=False), frame(0x3, b"cd")], 1002, id="reserved-opcode"
        ),
        pytest.param(
            [
                frame(OP_BINARY, b"ab", fin=False),
                b"\x80\xfe\x00\x05\x00\x00\x00\x00hello",  # 126-form length of 5
            ],
            1002,
            id="non-minimal-length",
        ),
        pytest.param([frame(OP_CONT, b"cd")], 1002, id="continuation-first"),
        pytest.param(
            [frame(OP_TEXT, b"ab", fin=False), frame(OP_CONT, b"\xff")], 1007, id="bad-utf8"
        ),
        pytest.param(
            [frame(OP_TEXT, b"ab", fin=False), frame(OP_CONT, b"\xe2\x82")],  # cut short
            1007,
            id="utf8-cut-at-the-end",
        ),
    ],
)
async def test_protocol_errors_between_fragments(frames: list[bytes], code: int) -> None:
    async with open_server(Echo) as h:
        ws = await connect_ws(h)
        await ws.stream.send_all(b"".join(frames))
        close = await ws.expect_close()
        assert close.code == code


async def test_invalid_utf8_fails_fast_before_the_message_ends() -> None:
    """1007 comes after the bad fragment, while the message is still unfinished."""
    async with open_server(Echo) as h:
        ws = await connect_ws(h)
        await ws.stream.send_all(frame(OP_TEXT, b"fine", fin=False) + frame(OP_CONT, b"\xc0\xaf"))
        assert (await ws.expect_close()).code == 1007


async def test_a_close_between_fragments_is_answered() -> None:
    async with open_server(Echo) as h:
        ws = await connect_ws(h)
        await ws.stream.send_all(
            frame(OP_TEXT, b"ab", fin=False) + frame(OP_CLOSE, close_payload(1000, "bye"))
        )
        assert (await ws.expect_close()).code == 1000


# -- the limit counts fragments -------------------------------------------------------


@pytest.mark.parametrize("empties", [100, 101])
async def test_every_fragment_counts_toward_the_limit(empties: int) -> None:
    """Limit 1600: a 0-byte first frame and 100 empty continuations cost exactly 1600."""
    limit = 100 * FRAME_COST
    async with open_server(Echo, ws_max_message_size=limit) as h:
        ws = await connect_ws(h)
        wire = frame(OP_BINARY, b"", fin=False) + frame(OP_CONT, b"", fin=False) * (empties - 1)
        await ws.stream.send_all(wire + frame(OP_CONT, b""))
        if empties == 100:
            assert await ws.receive() == b""
        else:
            close = await ws.expect_close()
            assert close.code == 1009


async def test_a_message_over_the_limit_fails_the_connection() -> None:
    """After the 1009 the rest of the message is not read: the server closes the TCP stream."""
    async with open_server(Echo, ws_max_message_size=1000) as h:
        ws = await connect_ws(h)
        await ws.stream.send_all(frame(OP_TEXT, b"x" * 600, fin=False))
        await ws.stream.send_all(frame(OP_CONT, b"x" * 600, fin=False))
        close = await ws.expect_close()
        assert (close.code, close.reason) == (1009, "message over 1000 bytes")
        assert ws.eof


# -- memory, measured on a real server process ------------------------------------------


def _vm(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _upgrade(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _first_frame(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data[0] & 0x0F, data[2 : 2 + (data[1] & 0x7F)]


MASK = b"\0\0\0\0"


@pytest.fixture
def sink_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """``tests.hostile.apps:<param>`` in a process of its own."""
    proc = ServerProcess(
        f"tests.hostile.apps:{request.param}", "--port", "0", "--log-level", "info", cwd=REPO
    )
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.parametrize("sink_server", ["FragmentSink"], indirect=True)
def test_a_4_mib_message_in_2_byte_fragments_costs_about_twice_its_size(
    sink_server: ServerProcess,
) -> None:
    """Peak RSS growth <= 2x the message: the buffer it is assembled in, then the message.

    Plus 1 MiB for the receive buffers and an allocator arena or two.  Measured:
    8.08 MiB for the 4 MiB message on a quiet run, 8.47-8.88 MiB under coverage
    (a slower server reads more per receive), on this code and on c9f4643 alike;
    it was 147 MiB before the fix.  A 512 KiB allowance failed one CI run.
    """
    port = sink_server.port
    pid = sink_server.proc.pid
    size = 4 << 20
    sock = _upgrade(port)
    before = _vm(pid)["VmRSS"]
    started = time.monotonic()
    sock.sendall(b"\x01\x82" + MASK + b"ab")
    batch = (b"\x00\x82" + MASK + b"ab") * 8192
    for _ in range(size // 2 // 8192 - 1):
        sock.sendall(batch)
    sock.sendall((b"\x00\x82" + MASK + b"ab") * 8190 + b"\x80\x82" + MASK + b"ab")
    opcode, reply = _first_frame(sock)
    elapsed = time.monotonic() - started
    peak = _vm(pid)["VmHWM"]
    sock.close()
    assert (opcode, reply) == (OP_TEXT, f"got str {size}".encode())
    growth = peak - before
    assert growth <= 2 * size + (1 << 20), (growth / size, elapsed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.parametrize("sink_server", ["SmallSink"], indirect=True)
def test_endless_empty_continuations_are_cut_with_rss_flat(
    sink_server: ServerProcess,
) -> None:
    port = sink_server.port
    pid = sink_server.proc.pid
    sock = _upgrade(port)
    before = _vm(pid)["VmRSS"]
    sock.sendall(b"\x01\x80" + MASK)
    empty = (b"\x00\x80" + MASK) * 65536
    sent = 0
    try:
        for _ in range(40):  # up to 2.6 million frames, 15 MiB
            sock.sendall(empty)
            sent += 65536
    except OSError:
        pass  # the server closed the connection
    opcode, payload = _first_frame(sock)
    sock.close()
    limit = pr.Config().ws_max_message_size
    assert limit is not None
    assert opcode == OP_CLOSE and payload[:2] == (1009).to_bytes(2, "big")
    # The exact bound (limit // FRAME_COST frames) is checked in memory above; here:
    # the server closed before the client could write all 2.6 million frames.
    assert sent < 40 * 65536
    assert _vm(pid)["VmHWM"] - before < 8 << 20


def test_the_sink_app_is_importable() -> None:
    """The subprocess tests' app (a typo there would only show as a timeout)."""
    from tests.hostile.apps import FragmentSink

    assert pr.Server(FragmentSink).spec.has_websocket
    assert os.path.exists(REPO / "tests" / "hostile" / "apps.py")


async def test_wsclient_sees_eof() -> None:
    """Sanity of the helper used above: ``eof`` is set when the server drops the stream."""
    async with open_server(Echo, ws_max_message_size=10) as h:
        ws: WSClient = await connect_ws(h)
        await ws.stream.send_all(frame(OP_BINARY, b"x" * 11))
        assert (await ws.expect_close()).code == 1009
        with trio.fail_after(5):
            assert ws.eof
