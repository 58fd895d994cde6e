"""RFC 6455 at the frame level: messages, fragmentation, size limit, UTF-8, violations, deflate.

Malformed frames are built by hand (``ws_helpers.frame``); everything else goes
through a wsproto client.  Most tests run on trio's autojump clock, so the
close timeouts they reach cost no real time.
"""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

import peregrine_rt as pr
from examples.echo import Echo

from .conftest import Harness, open_server
from .ws_helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Recorder,
    WSClient,
    close_payload,
    connect_ws,
    frame,
    handshake,
    masked,
)

# -- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
async def test_echo_text_and_binary_at_length_boundaries(size: int) -> None:
    async with open_server(Echo) as h:
        ws = await connect_ws(h)
        text = ("ab€" * size)[:size]
        await ws.send(text)
        assert await ws.receive_message() == text
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        await ws.send(data)
        reply = await ws.receive_message()
        assert isinstance(reply, bytes)
        assert reply == data
        assert await ws.close() == Close(1000, "")


async def test_fragmented_messages_are_delivered_whole() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await ws.send_raw(
            frame(OP_TEXT, b"Hel", fin=False)
            + frame(OP_CONT, b"lo ", fin=False)
            + frame(OP_PING, b"in between")  # control frames may come between fragments
            + frame(OP_CONT, b"world")
        )
        assert await ws.receive_message() == "Hello world"
        assert ws.pongs == [b"in between"]
        chunks = [bytes([i]) * 1000 for i in range(5)]
        raw = frame(OP_BINARY, chunks[0], fin=False)
        raw += b"".join(frame(OP_CONT, c, fin=False) for c in chunks[1:-1])
        raw += frame(OP_CONT, chunks[-1])
        for piece in (raw[i : i + 7] for i in range(0, len(raw), 7)):  # trickled in
            await ws.send_raw(piece)
        assert await ws.receive_message() == b"".join(chunks)
        # Empty fragments are fine too.
        await ws.send_raw(frame(OP_TEXT, b"", fin=False) + frame(OP_CONT, b"x") + frame(OP_TEXT))
        assert await ws.receive_message() == "x"
        assert await ws.receive_message() == ""
        await ws.close()
        await rec.closed.wait()
        messages = [e[2] for e in rec.events if e[0] == "message"]
        assert messages == ["Hello world", b"".join(chunks), "x", ""]


async def test_utf8_split_anywhere_across_fragments() -> None:
    rec = Recorder()
    text = "aé€😀z"
    data = text.encode()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        for cut in range(1, len(data)):
            await ws.send_raw(frame(OP_TEXT, data[:cut], fin=False) + frame(OP_CONT, data[cut:]))
            assert await ws.receive_message() == text, cut
        await ws.close()


async def test_ping_is_answered_with_the_same_payload() -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await ws.send_raw(frame(OP_PING, b"p" * 125))
        await ws.send_raw(frame(OP_PONG, b"unsolicited"))  # ignored
        await ws.send("after")
        assert await ws.receive_message() == "after"
        assert ws.pongs == [b"p" * 125]
        await ws.close()
        await rec.closed.wait()
        assert rec.names() == ["open", "message", "close"]


# -- the message size limit ----------------------------------------------------------------


async def test_size_limit_boundary_in_bytes_not_characters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    async with open_server(rec, ws_max_message_size=1024) as h:
        ws = await connect_ws(h)
        await ws.send(b"x" * 1024)
        assert await ws.receive_message() == b"x" * 1024
        await ws.send("é" * 512)  # 1024 bytes
        assert await ws.receive_message() == "é" * 512
        await ws.send("é" * 513)  # 513 characters but 1026 bytes
        event = await ws.receive()
        assert isinstance(event, Close)
        assert event.code == 1009
        await ws.expect_eof()
        await rec.closed.wait()
        assert [e[0] for e in rec.events] == ["open", "message", "message", "close"]
        assert rec.closes()[0][0] == 1009
        exc = rec.send_errors[0]
        assert type(exc) is pr.ConnectionClosedError
        assert exc.code == 1009


async def test_size_limit_counts_all_fragments(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    async with open_server(rec, ws_max_message_size=1000) as h:
        ws = await connect_ws(h)
        await ws.send_raw(frame(OP_BINARY, b"a" * 400, fin=False))
        await ws.send_raw(frame(OP_CONT, b"b" * 400, fin=False))
        await ws.send_raw(frame(OP_CONT, b"c" * 400, fin=False))
        event = await ws.receive()  # answers the close between fragments (allowed)
        assert isinstance(event, Close)
        assert event.code == 1009
        # The close handshake completes: the server ends the connection at once.
        start = trio.current_time()
        await ws.expect_eof()
        assert trio.current_time() - start < 1.0
        await rec.closed.wait()
        assert rec.names() == ["open", "close"]
        assert rec.closes()[0][0] == 1009


async def test_huge_frame_is_refused_before_it_is_buffered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    limit = 64 * 1024
    async with open_server(rec, ws_max_message_size=limit, ws_close_timeout=5.0) as h:
        ws = await connect_ws(h)
        declared = 1 << 30  # a 1 GiB frame, of which only a little is sent
        key = b"\x01\x02\x03\x04"
        head = bytes([0x80 | OP_BINARY, 0x80 | 127]) + struct.pack("!Q", declared) + key
        sent = 0
        await ws.send_raw(head)
        event = None
        while event is None and sent < 4 * limit:
            chunk = masked(b"\x00" * 8192, key, sent)
            await ws.send_raw(chunk)
            sent += len(chunk)
            await trio.sleep(0)
            with trio.move_on_after(0.01):
                event = await ws.receive()
        assert isinstance(event, Close), f"no close after {sent} bytes of a {declared}-byte frame"
        assert event.code == 1009
        assert sent <= limit + 2 * 8192, sent
        # The client cannot answer inside its frame; the server drops the
        # connection after the close timeout at most.
        start = trio.current_time()
        await ws.expect_eof()
        assert trio.current_time() - start <= 5.5
        await rec.closed.wait()
        assert rec.names() == ["open", "close"]
        assert rec.closes()[0][0] == 1009


async def test_per_upgrade_limit_and_no_limit() -> None:
    big = b"z" * (3 << 20)
    async with open_server(Echo, ws_max_message_size=1024) as h:
        ws = await connect_ws(h)  # Echo passes max_message_size=16 MiB to upgrade()
        await ws.send(big)
        assert await ws.receive_message() == big
        await ws.close()
    rec = Recorder()
    async with open_server(rec, ws_max_message_size=None) as h:
        ws = await connect_ws(h)
        await ws.send(big)
        assert await ws.receive_message() == big
        await ws.close()
    rec = Recorder(max_message_size=10)
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await ws.send("0123456789")
        assert await ws.receive_message() == "0123456789"
        await ws.send("0123456789a")
        event = await ws.receive()
        assert isinstance(event, Close)
        assert event.code == 1009
        await ws.abort()


# -- invalid input -----------------------------------------------------------------------------

VIOLATIONS = {
    "unmasked": (frame(OP_TEXT, b"hello", mask=False), 1002),
    "reserved-data-opcode": (frame(0x3, b"x"), 1002),
    "reserved-control-opcode": (frame(0xB, b"x"), 1002),
    "rsv1-without-extension": (frame(OP_TEXT, b"x", rsv=4), 1002),
    "rsv2": (frame(OP_TEXT, b"x", rsv=2), 1002),
    "rsv3": (frame(OP_BINARY, b"x", rsv=1), 1002),
    "ping-over-125": (frame(OP_PING, b"p" * 126), 1002),
    "close-over-125": (frame(OP_CLOSE, close_payload(1000, "r" * 124)), 1002),
    "fragmented-ping": (frame(OP_PING, b"p", fin=False), 1002),
    "continuation-first": (frame(OP_CONT, b"x"), 1002),
    "text-inside-fragmented": (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),
    "close-1-byte": (frame(OP_CLOSE, b"\x03"), 1002),
    "close-code-999": (frame(OP_CLOSE, close_payload(999)), 1002),
    "close-code-1005": (frame(OP_CLOSE, close_payload(1005)), 1002),
    "close-code-1006": (frame(OP_CLOSE, close_payload(1006)), 1002),
    "invalid-utf8": (frame(OP_TEXT, b"ok \xff\xfe"), 1007),
    "utf8-surrogate": (frame(OP_TEXT, b"\xed\xa0\x80"), 1007),
    "utf8-truncated-at-end": (frame(OP_TEXT, "€".encode()[:2]), 1007),
    "utf8-invalid-in-fragment": (
        frame(OP_TEXT, b"fine", fin=False) + frame(OP_CONT, b"\xc0\xaf"),
        1007,
    ),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
async def test_invalid_frames_close_with_the_right_code(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    data, code = VIOLATIONS[name]
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await ws.send("before")
        assert await ws.receive_message() == "before"
        await ws.send_raw(data)
        event = await ws.receive()
        assert isinstance(event, Close), event
        assert event.code == code, event
        await ws.abort()
        await rec.closed.wait()
        # No message from the bad frames reached the handler.
        assert [e[0] for e in rec.events] == ["open", "message", "close"]
        assert rec.closes()[0][0] == code
        assert rec.sockets[0].close_code == code


@pytest.mark.parametrize("name", ["unmasked", "reserved-data-opcode", "invalid-utf8"])
async def test_failed_connection_ends_once_the_close_is_answered(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    """RFC 6455 §7.1.7: after failing the connection the server closes it, it does not linger."""
    data, code = VIOLATIONS[name]
    rec = Recorder()
    async with open_server(rec, ws_close_timeout=10.0, ws_ping_interval=None) as h:
        ws = await connect_ws(h)
        await ws.send_raw(data)
        event = await ws.receive()  # answers the close
        assert isinstance(event, Close)
        assert event.code == code
        start = trio.current_time()
        await ws.expect_eof()
        waited = trio.current_time() - start
        assert waited < 1.0, f"the server kept the failed connection open {waited:.1f} s"
        await rec.closed.wait()
        assert rec.closes()[0][0] == code


async def test_protocol_error_over_tcp_delivers_the_close() -> None:
    rec = Recorder()
    async with open_server(rec, transport="tcp", ws_ping_interval=None) as h:
        ws = await connect_ws(h)
        other = await connect_ws(h)
        await ws.send_raw(frame(OP_TEXT, b"x", rsv=4))
        with trio.fail_after(2):
            event = await ws.receive()
        assert isinstance(event, Close)
        assert event.code == 1002
        with trio.fail_after(2):
            await ws.expect_eof()
            await rec.closed.wait()
        await other.send("unaffected")
        assert await other.receive_message() == "unaffected"
        assert await other.close() == Close(1000, "")


async def test_frames_after_the_close_are_ignored(autojump_clock: trio.testing.MockClock) -> None:
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h)
        await ws.send_raw(frame(OP_CLOSE, close_payload(1000, "x")) + frame(OP_TEXT, b"late"))
        assert await ws.expect_close() == Close(1000, "x")
        await rec.closed.wait()
        assert rec.names() == ["open", "close"]


# -- permessage-deflate ----------------------------------------------------------------------


async def _compressed_round_trip(h: Harness) -> None:
    ws = await connect_ws(h, compression=True)
    accepted = ws.response.header("sec-websocket-extensions") or ""
    assert accepted.startswith("permessage-deflate"), accepted
    for i in range(3):  # context takeover across messages
        text = f"message {i} " + "compressible " * 10_000
        before = ws.received_bytes
        await ws.send(text)
        assert await ws.receive_message() == text
        on_wire = ws.received_bytes - before
        assert on_wire < len(text) // 20, f"{on_wire} bytes for {len(text)}: not compressed"
    data = bytes(range(256)) * 100
    await ws.send(data)
    assert await ws.receive_message() == data
    await ws.send("")
    assert await ws.receive_message() == ""
    assert await ws.close() == Close(1000, "")


async def test_compression_negotiated_and_round_trips() -> None:
    async with open_server(Echo, ws_compression=True) as h:
        await _compressed_round_trip(h)


async def test_compression_per_upgrade_override() -> None:
    rec = Recorder(compression=True)
    async with open_server(rec) as h:
        await _compressed_round_trip(h)
    rec = Recorder(compression=False)
    async with open_server(rec, ws_compression=True) as h:
        ws = await connect_ws(h, compression=True)
        assert ws.response.header("sec-websocket-extensions") is None
        await ws.close()


async def test_compression_off_by_default() -> None:
    async with open_server(Echo) as h:
        ws = await connect_ws(h, compression=True)
        assert ws.response.header("sec-websocket-extensions") is None
        text = "compressible " * 1000
        before = ws.received_bytes
        await ws.send(text)
        assert await ws.receive_message() == text
        assert ws.received_bytes - before >= len(text)
        await ws.close()


async def test_compression_on_without_offer() -> None:
    async with open_server(Echo, ws_compression=True) as h:
        ws = await connect_ws(h)
        assert ws.response.header("sec-websocket-extensions") is None
        await ws.send("plain")
        assert await ws.receive_message() == "plain"
        await ws.close()


async def test_compression_with_client_parameters() -> None:
    async with open_server(Echo, ws_compression=True) as h:
        ws = await connect_ws(
            h,
            compression=True,
            extensions="permessage-deflate; client_no_context_takeover; server_max_window_bits=10",
        )
        accepted = ws.response.header("sec-websocket-extensions") or ""
        assert accepted.startswith("permessage-deflate")
        assert "server_max_window_bits=10" in accepted
        for _ in range(2):
            await ws.send("abc" * 5000)
            assert await ws.receive_message() == "abc" * 5000
        await ws.close()


async def test_compressed_size_limit_counts_decompressed_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder(compression=True, max_message_size=10_000)
    async with open_server(rec) as h:
        ws = await connect_ws(h, compression=True)
        await ws.send("a" * 10_000)
        assert await ws.receive_message() == "a" * 10_000
        before = ws.received_bytes
        await ws.send("a" * 10_001)  # compresses to a few dozen bytes
        event = await ws.receive()
        assert isinstance(event, Close)
        assert event.code == 1009
        assert ws.received_bytes > before
        await ws.abort()
        await rec.closed.wait()
        assert rec.closes()[0][0] == 1009


async def test_client_ping_during_server_close(autojump_clock: trio.testing.MockClock) -> None:
    """Once the server has sent its close it sends no pong, and a close answer still ends it."""
    rec = Recorder()
    async with open_server(rec) as h:
        ws = await connect_ws(h, auto_pong=False)
        await ws.send("close 1000 bye")
        assert await ws.receive_close_unanswered() == Close(1000, "bye")
        await ws.send_raw(frame(OP_PING, b"late ping"))
        await ws.send_raw(frame(OP_CLOSE, close_payload(1000, "bye")))
        await ws.expect_eof()
        assert ws.pongs == []
        await rec.closed.wait()
        assert rec.closes() == [(1000, "bye")]


async def test_handshake_request_as_raw_client() -> None:
    """A sanity check of the raw client itself against the Echo example."""
    async with open_server(Echo) as h:
        stream = await h.connect()
        ws = await WSClient.open(stream, handshake("/"))
        await ws.send_raw(frame(OP_TEXT, b"raw"))
        assert await ws.receive_message() == "raw"
        await ws.close()
