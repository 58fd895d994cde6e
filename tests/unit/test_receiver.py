"""The receive path's split between the loop's fast take() and the backlog (feed())."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from peregrine_rt._receiver import NO_BACKLOG, TOO_BIG, Receiver
from peregrine_rt._wsconn import LazyConnection


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(s: str) -> bytes:
    return frame(0x1, s.encode())


def receiver(max_size: int | None = 1 << 20, *, fast: bool = True) -> Receiver:
    return Receiver(LazyConnection(), fast=fast, max_size=max_size)


def test_whole_simple_frames_come_back_without_a_backlog() -> None:
    r = receiver()
    assert r.take(text("a") + frame(0x2, b"b") + text("c")) == ["a", b"b", "c"]
    assert r.backlog is NO_BACKLOG  # no deque was made for them
    assert not r.ws.held  # wsproto was never needed


def test_a_control_frame_sends_everything_to_the_backlog_in_order() -> None:
    r = receiver()
    assert r.take(text("a") + frame(0x9, b"p") + text("b")) is None
    events = list(r.backlog)
    assert events[0] == "a"
    assert isinstance(events[1], Ping) and events[1].payload == b"p"
    assert events[2] == "b"


def drain(r: Receiver) -> list[object]:
    """What the receive loop makes of the backlog: messages (wsproto's joined), others."""
    out: list[object] = []
    for event in r.backlog:
        if isinstance(event, (TextMessage, BytesMessage)):
            whole = r.assemble(event, closing=False)
            if whole is not None:
                out.append(whole)
        else:
            out.append(event)
    r.backlog.clear()
    r.wait()
    return out


def test_a_frame_cut_short_waits_and_the_next_take_reads_through_the_backlog() -> None:
    r = receiver()
    data = text("first") + text("second")
    cut = len(data) - 3
    assert r.take(data[:cut]) is None
    assert drain(r) == ["first"]  # and the start of "second", held back
    assert not r.simple  # wsproto holds the partial frame: take() must not read
    assert r.take(data[cut:]) is None
    assert drain(r) == ["second"]
    assert r.simple  # idle again: the next whole frames are taken directly
    assert r.take(text("third")) == ["third"]
    assert not r.ws.held  # wsproto's Connection was let go


def test_nothing_is_taken_past_a_waiting_backlog() -> None:
    r = receiver()
    r.feed(frame(0x9, b"p"))  # unread: the loop has not handled it yet
    assert r.take(text("later")) is None
    assert [type(e) for e in r.backlog] == [Ping, str]


def test_a_fragmented_message_is_not_taken_directly() -> None:
    r = receiver()
    assert r.take(frame(0x1, b"he", fin=False) + frame(0x0, b"llo")) is None
    assert list(r.backlog) == ["hello"]


def test_a_socket_with_an_extension_always_feeds() -> None:
    r = receiver(fast=False)
    assert r.take(text("a")) is None
    assert [e.data for e in r.backlog] == ["a"]


def test_a_closing_socket_reads_through_wsproto() -> None:
    r = receiver()
    r.ws.send(CloseConnection(code=1000))  # our close: wsproto's state moves on
    assert r.take(text("late")) is None
    assert [e.data for e in r.backlog if isinstance(e, TextMessage)] == ["late"]


def test_a_message_over_the_limit_marks_the_backlog() -> None:
    r = receiver(max_size=10)
    assert r.take(text("ok") + text("x" * 11)) is None
    assert list(r.backlog)[:2] == ["ok", TOO_BIG]


@given(
    st.lists(
        st.one_of(
            st.text(max_size=40).map(lambda s: ("t", s)),
            st.binary(max_size=200).map(lambda b: ("b", b)),
            st.binary(max_size=10).map(lambda b: ("p", b)),
        ),
        max_size=12,
    ),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8),
)
def test_take_and_feed_give_the_same_messages_however_the_bytes_are_cut(
    items: list[tuple[str, object]], cuts: list[int]
) -> None:
    data = b"".join(
        text(v) if k == "t" else frame(0x2 if k == "b" else 0x9, v)  # type: ignore[arg-type]
        for k, v in items
    )
    expected = [v for k, v in items if k != "p"]
    r = receiver()
    got: list[object] = []
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        i += 1
        taken = r.take(data[pos : pos + step])
        pos += step
        if taken is not None:
            got.extend(taken)
        got.extend(drain(r))
    assert [e for e in got if not isinstance(e, Ping)] == expected


# -- assemble(): what wsproto reads -------------------------------------------------


def test_assemble_joins_fragments_and_counts_bytes_not_characters() -> None:
    r = receiver(max_size=10)
    assert r.assemble(TextMessage(data="é", message_finished=False), closing=False) is None
    assert r.assemble(TextMessage(data="abc", message_finished=True), closing=False) == "éabc"
    assert r.assemble(BytesMessage(data=b"12345", message_finished=False), closing=False) is None
    assert r.assemble(BytesMessage(data=b"678", message_finished=True), closing=False) == (
        b"12345678"
    )
    assert r.assemble(TextMessage(data="é" * 6, message_finished=True), closing=False) is TOO_BIG
    # The limit is per message: the next one starts from nothing.
    assert r.assemble(TextMessage(data="x" * 10, message_finished=True), closing=False) == "x" * 10


def test_assemble_drops_messages_while_closing() -> None:
    r = receiver()
    assert r.assemble(TextMessage(data="late", message_finished=True), closing=True) is None


@pytest.mark.parametrize("over_in", ["first", "last"])
def test_a_fragmented_message_over_the_limit_is_dropped_whole(over_in: str) -> None:
    r = receiver(max_size=8)
    first = b"x" * (9 if over_in == "first" else 5)
    got = r.assemble(BytesMessage(data=first, message_finished=False), closing=False)
    if over_in == "last":
        assert got is None
        got = r.assemble(BytesMessage(data=b"y" * 5, message_finished=True), closing=False)
    assert got is TOO_BIG
    assert r.assembled is None
    assert r.assemble(BytesMessage(data=b"ok", message_finished=True), closing=False) == b"ok"
