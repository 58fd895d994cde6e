"""The WebSocket fast path (peregrine_rt._frames) against wsproto, byte for byte."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Message, Ping, TextMessage

from peregrine_rt._frames import encode_frame, parse_simple_frames, unmask

messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.sampled_from(["", b"", "x" * 125, "x" * 126, b"y" * 65535, b"y" * 65536, "é" * 70]),
)


def client_frame_list(items: list[str | bytes]) -> list[bytes]:
    """What a wsproto client sends for these messages (masked, one frame each)."""
    client = Connection(ConnectionType.CLIENT)
    out = []
    for item in items:
        event: Message[str] | Message[bytes] = (
            TextMessage(data=item) if isinstance(item, str) else BytesMessage(data=item)
        )
        out.append(client.send(event))
    return out


def client_frames(items: list[str | bytes]) -> bytes:
    return b"".join(client_frame_list(items))


def wsproto_messages(data: bytes) -> list[str | bytes]:
    server = Connection(ConnectionType.SERVER)
    server.receive_data(data)
    out: list[str | bytes] = []
    parts: list[Any] = []
    for event in server.events():  # whole messages only: a cut one is left out
        assert isinstance(event, (TextMessage, BytesMessage)), event
        parts.append(event.data)
        if event.message_finished:
            if isinstance(event, TextMessage):
                out.append("".join(parts))
            else:
                out.append(b"".join(bytes(p) for p in parts))
            parts = []
    return out


@given(messages)
def test_encode_frame_is_what_wsproto_writes(message: str | bytes) -> None:
    server = Connection(ConnectionType.SERVER)
    event: Message[str] | Message[bytes] = (
        TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
    )
    assert encode_frame(message) == server.send(event)


@given(st.lists(messages, max_size=6), st.data())
def test_parse_reads_what_wsproto_reads_and_leaves_the_rest(
    items: list[str | bytes], data: st.DataObject
) -> None:
    frames = client_frame_list(items)
    wire = b"".join(frames)
    cut = data.draw(st.integers(0, len(wire)), label="cut")
    got, offset = parse_simple_frames(wire[:cut], None)
    # Everything read is a prefix of the messages, and stops at a frame boundary...
    assert got == items[: len(got)]
    assert offset == sum(len(f) for f in frames[: len(got)])
    # ...and the frames it left are the ones that were not complete, or did not fit
    # the fast shape (64-bit lengths): wsproto reads the rest.
    rest = wsproto_messages(wire[offset:cut])
    assert got + rest == items[: len(got) + len(rest)]
    if offset < cut:
        assert len(items) > len(got)


def test_parse_stops_at_every_other_shape() -> None:
    text = client_frames(["hi"])
    client = Connection(ConnectionType.CLIENT)
    ping = client.send(Ping(payload=b"p"))
    fragment = client.send(TextMessage(data="par", message_finished=False))
    big = client_frames([b"z" * 70000])  # 64-bit length
    unmasked = b"\x81\x02hi"
    rsv = bytes([text[0] | 0x40]) + text[1:]
    for other in (ping, fragment, big, unmasked, rsv):
        got, offset = parse_simple_frames(text + other + text, None)
        assert got == ["hi"]
        assert offset == len(text)


def test_parse_leaves_invalid_utf8_and_oversized_frames_to_wsproto() -> None:
    good = client_frames(["ok"])
    key = os.urandom(4)
    bad_text = bytes([0x81, 0x80 | 2]) + key + unmask(b"\xff\xfe", key)
    got, offset = parse_simple_frames(good + bad_text, None)
    assert (got, offset) == (["ok"], len(good))
    big = client_frames([b"q" * 200])
    got, offset = parse_simple_frames(good + big, max_size=100)
    assert (got, offset) == (["ok"], len(good))
    assert parse_simple_frames(good + big, max_size=200)[0] == ["ok", b"q" * 200]


def test_parse_refuses_a_non_minimal_16_bit_length() -> None:
    key = os.urandom(4)
    frame = bytes([0x82, 0x80 | 126, 0, 5]) + key + unmask(b"hello", key)
    assert parse_simple_frames(frame, None) == ([], 0)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 126, 1000])
def test_unmask_is_its_own_inverse_and_matches_a_byte_loop(n: int) -> None:
    payload = os.urandom(n)
    key = os.urandom(4)
    masked = unmask(payload, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask(masked, key) == payload
