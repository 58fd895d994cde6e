"""The Phoenix V2 JSON codec (peregrine_rt._channels._phoenix): decode, encode, refs."""

from __future__ import annotations

import doctest
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peregrine_rt._channels import _phoenix
from peregrine_rt._channels._phoenix import (
    CLOSE_BAD_FRAME,
    CLOSE_BAD_JSON,
    Frame,
    ProtocolViolation,
    close_frame,
    decode,
    encode,
    error_frame,
    parse_publication_ref,
    publication_ref,
    reply,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
refs = st.none() | st.text()
names = st.text(min_size=1)
frames = st.builds(Frame, refs, refs, names, names, json_values)


def test_doctests() -> None:
    result = doctest.testmod(_phoenix)
    assert result.attempted > 0
    assert result.failed == 0


def test_decode_join() -> None:
    frame = decode('["3","4","room:lobby","phx_join",{"nick":"ann"}]')
    assert frame == Frame("3", "4", "room:lobby", "phx_join", {"nick": "ann"})


def test_decode_bytes_and_null_refs() -> None:
    frame = decode(b'[null,"9","phoenix","heartbeat",{}]')
    assert frame == Frame(None, "9", "phoenix", "heartbeat", {})


@given(frames)
def test_round_trip(frame: Frame) -> None:
    text = encode(frame)
    assert decode(text) == frame
    assert encode(decode(text)) == text


@given(frames)
def test_encoding_is_compact_json_array(frame: Frame) -> None:
    text = encode(frame)
    assert json.loads(text) == [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload]
    expected = [frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload]
    assert text == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


def test_encode_keeps_utf8_and_no_spaces() -> None:
    assert (
        encode(Frame(None, None, "t", "e", {"a": ["é", 1]})) == '[null,null,"t","e",{"a":["é",1]}]'
    )


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[1,", '["a"', "[" * 100 + "]" * 100, b"\xff\xfe\xfd"],
)
def test_not_json_is_1007(text: Any) -> None:
    with pytest.raises(ProtocolViolation) as info:
        decode(text)
    assert info.value.code == CLOSE_BAD_JSON == 1007


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "42",
        '"x"',
        "[]",
        '[null,null,"t","e"]',
        '[null,null,"t","e",{},1]',
        '[1,null,"t","e",{}]',
        '[null,2,"t","e",{}]',
        '[null,null,3,"e",{}]',
        '[null,null,"t",null,{}]',
        '[null,null,"","e",{}]',
        '[null,null,"t","",{}]',
        '[true,null,"t","e",{}]',
    ],
)
def test_wrong_shape_is_1008(text: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        decode(text)
    assert info.value.code == CLOSE_BAD_FRAME == 1008
    assert isinstance(info.value, ValueError)


def test_depth_limit_is_configurable() -> None:
    deep = '[null,null,"t","e",' + "[" * 10 + "]" * 10 + "]"
    assert decode(deep).payload == [[[[[[[[[[]]]]]]]]]]
    with pytest.raises(ProtocolViolation) as info:
        decode(deep, max_depth=5)
    assert info.value.code == 1007


def test_violation_reason_fits_a_close_frame() -> None:
    exc = ProtocolViolation("x" * 500, 1008)
    assert len(exc.reason.encode()) <= 123


def test_reply_and_control_frames() -> None:
    join = Frame("5", "6", "room:a", "phx_join", {})
    assert (
        encode(reply(join, "ok")) == '["5","6","room:a","phx_reply",{"status":"ok","response":{}}]'
    )
    assert reply(join, "error", {"reason": "unauthorized"}).payload == {
        "status": "error",
        "response": {"reason": "unauthorized"},
    }
    assert encode(close_frame("5", "room:a")) == '["5","5","room:a","phx_close",{}]'
    assert encode(error_frame("5", "room:a")) == '["5","5","room:a","phx_error",{}]'


@given(st.integers(min_value=0, max_value=2**63))
def test_publication_ref_round_trip(offset: int) -> None:
    assert parse_publication_ref(publication_ref(offset)) == offset


@pytest.mark.parametrize(
    "ref", [None, "", "1", "12", "p:", "p:x", "p:-1", "p:01", "p:1.5", "p:١٢", "P:1"]
)
def test_other_refs_are_not_publications(ref: str | None) -> None:
    assert parse_publication_ref(ref) is None
