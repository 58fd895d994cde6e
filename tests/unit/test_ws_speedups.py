"""The frame reader's C accelerator (``_ws_speedups``) reads every buffer as the Python one does.

``_frames.parse_simple_frames_py`` is the reference: for any bytes, size
limit and start offset, ``_ws_speedups.parse_simple_frames`` must return the
same messages (same values, same types) and stop at the same offset.  They are
compared on random bytes and on generated streams of frames of every shape the
reader meets: masked text and binary with random keys, lengths around the 7-,
16- and 64-bit boundaries, non-minimal lengths, unmasked, reserved bits,
control and continuation frames, invalid UTF-8, size limits around each
frame's length, every truncation, every start offset.  ``unmask`` is compared
with a byte loop.  test_frames.py holds the fast path (whichever is in use)
to wsproto.

Under CI (``CI`` set) the extension must have been built; elsewhere the
comparisons are skipped when it is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from peregrine_rt import _frames
from peregrine_rt._frames import encode_frame_py, parse_simple_frames_py, unmask_py

try:
    from peregrine_rt import _ws_speedups
except ImportError:  # pragma: no cover - depends on the build
    _ws_speedups = None  # type: ignore[assignment]  # the module is optional

NOT_BUILT = "the C accelerator (peregrine_rt/_ws_speedups.c) is not built"
needs_c = pytest.mark.skipif(_ws_speedups is None, reason=NOT_BUILT)


@needs_c
def test_interface_version_matches() -> None:
    # _frames ignores a build whose interface differs (one from older source).
    assert _ws_speedups is not None
    assert _ws_speedups.INTERFACE == _frames.FRAME_SPEEDUPS_INTERFACE


@needs_c
@pytest.mark.parametrize(("value", "in_use"), [("", True), ("0", True), ("1", False)])
def test_environment_variable_turns_the_accelerator_off(value: str, in_use: bool) -> None:
    env = {**os.environ, "PEREGRINE_RT_NO_SPEEDUPS": value}
    code = (
        "from peregrine_rt import _frames as f; "
        "print(f.FRAME_SPEEDUPS, f.parse_simple_frames is f.parse_simple_frames_py, "
        "f.unmask is f.unmask_py, f.encode_frame is f.encode_frame_py)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == [str(in_use), *[str(not in_use)] * 3]


def test_the_module_uses_the_accelerator_when_in_use() -> None:
    if _frames.FRAME_SPEEDUPS:
        assert _ws_speedups is not None
        assert _frames.parse_simple_frames is _ws_speedups.parse_simple_frames
        assert _frames.unmask is _ws_speedups.unmask
        assert _frames.encode_frame is _ws_speedups.encode_frame
    else:
        assert _frames.parse_simple_frames is parse_simple_frames_py
        assert _frames.unmask is unmask_py
        assert _frames.encode_frame is encode_frame_py


# --- building frames -------------------------------------------------------

SIZES = [0, 1, 7, 8, 9, 125, 126, 127, 200, 65535]


def frame(
    opcode: int,
    payload: bytes,
    key: bytes | None,
    encoding: str = "minimal",
) -> bytes:
    """One client frame: ``opcode`` is the whole first byte; ``key`` None leaves it unmasked.

    ``encoding``: "minimal" (RFC 6455), "16" (a 16-bit length even when 7
    bits would do) or "64" (a 64-bit length).
    """
    n = len(payload)
    mask_bit = 0x80 if key is not None else 0
    if encoding == "64" or (encoding == "minimal" and n > 65535):
        head = bytes([opcode, mask_bit | 127]) + n.to_bytes(8, "big")
    elif encoding == "16" or n > 125:
        head = bytes([opcode, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([opcode, mask_bit | n])
    if key is None:
        return head + payload
    return head + key + unmask_py(payload, key)


INVALID_UTF8 = [b"\xff", b"\xc3", b"a\xed\xa0\x80b", b"\xf4\x90\x80\x80", b"ok\xc3\x28", b"\x80"]


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bool, bytes]:
    """(text, payload): valid UTF-8, invalid UTF-8, or any bytes; sizes near the boundaries."""
    kind = draw(st.sampled_from(["text", "binary", "invalid", "sized", "sized"]))
    if kind == "text":
        return True, draw(st.text(max_size=40)).encode()
    if kind == "invalid":
        prefix = draw(st.text(max_size=10)).encode()
        return True, prefix + draw(st.sampled_from(INVALID_UTF8))
    if kind == "binary":
        return False, draw(st.binary(max_size=40))
    size = draw(st.sampled_from(SIZES))
    fill = draw(st.sampled_from([b"a", b"\xc3\xa9", b"\x00", b"\xff"]))
    body = (fill * size)[:size]
    return draw(st.booleans()), body


@st.composite
def frames(draw: st.DrawFn, big: bool = True) -> bytes:
    """A client frame: mostly the fast shape, sometimes any other."""
    text, payload = draw(payloads())
    if not big and len(payload) > 300:
        payload = payload[:300]
    opcode = 0x81 if text else 0x82
    key: bytes | None = draw(st.binary(min_size=4, max_size=4))
    encoding = "minimal"
    shape = draw(st.sampled_from(["simple"] * 6 + ["opcode", "unmasked", "16", "64", "rsv", "raw"]))
    if shape == "opcode":  # continuation, fragment, control, reserved opcodes
        opcode = draw(st.sampled_from([0x00, 0x01, 0x02, 0x80, 0x83, 0x88, 0x89, 0x8A, 0x8F]))
    elif shape == "unmasked":
        key = None
    elif shape in ("16", "64"):
        encoding = shape
    elif shape == "rsv":
        opcode |= draw(st.sampled_from([0x10, 0x20, 0x40]))
    elif shape == "raw":
        return draw(st.binary(max_size=12))
    return frame(opcode, payload, key, encoding)


def same_answer(data: Any, max_size: int | None, pos: int) -> tuple[list[str | bytes], int]:
    """Both readers' answer, asserted identical (values and types); returns it."""
    assert _ws_speedups is not None
    expected = parse_simple_frames_py(bytes(data), max_size, pos)
    got = _ws_speedups.parse_simple_frames(data, max_size, pos)
    assert type(got) is tuple and type(got[0]) is list and type(got[1]) is int
    assert got == expected
    assert [type(m) for m in got[0]] == [type(m) for m in expected[0]]
    return got


def limits(lengths: list[int]) -> st.SearchStrategy[int | None]:
    """Size limits around the payload lengths in play (and none, and any)."""
    near = sorted({max(0, n + d) for n in lengths for d in (-1, 0, 1)})
    options: list[st.SearchStrategy[int | None]] = [st.none(), st.integers(-2, 70000)]
    if near:
        options.append(st.sampled_from(near))
    return st.one_of(options)


# --- the cross-checks ------------------------------------------------------


@needs_c
@settings(max_examples=5 * settings().max_examples)  # cheap: microseconds an example
@given(
    st.binary(max_size=64),
    st.one_of(st.none(), st.integers(-1, 80)),
    st.one_of(st.just(0), st.integers(0, 70)),
)
@example(b"", None, 0)
@example(b"\x81\x80\x00\x00\x00\x00", 0, 0)
@example(b"\x82\xfe\x00\x7e" + b"\x00" * 130, None, 0)
@example(b"\x82\xfe\x00\x7d" + b"\x00" * 129, None, 0)
def test_random_bytes(data: bytes, max_size: int | None, pos: int) -> None:
    same_answer(data, max_size, pos)


@needs_c
@given(st.lists(frames(), max_size=6), st.data())
def test_streams_of_frames(parts: list[bytes], choose: Any) -> None:
    wire = b"".join(parts)
    lengths = [len(p) for p in parts]
    max_size = choose.draw(limits(lengths), label="max_size")
    boundaries = [sum(lengths[:i]) for i in range(len(parts) + 1)]
    pos = choose.draw(
        st.one_of(st.sampled_from(boundaries), st.integers(0, len(wire))), label="pos"
    )
    cut = choose.draw(st.integers(pos, len(wire)), label="cut")
    same_answer(wire, max_size, pos)
    same_answer(wire[:cut], max_size, pos)


@needs_c
@given(st.lists(frames(big=False), min_size=1, max_size=4), st.data())
def test_every_truncation(parts: list[bytes], choose: Any) -> None:
    wire = b"".join(parts)
    max_size = choose.draw(limits([len(p) for p in parts]), label="max_size")
    for cut in range(len(wire) + 1):
        same_answer(wire[:cut], max_size, 0)


@needs_c
@given(st.lists(frames(), min_size=1, max_size=3), st.data())
def test_other_buffers_read_as_their_bytes(parts: list[bytes], choose: Any) -> None:
    wire = b"".join(parts)
    pos = choose.draw(st.integers(0, len(wire)), label="pos")
    same_answer(bytearray(wire), None, pos)
    same_answer(memoryview(b"\x00" + wire)[1:], None, pos)  # an odd address


@needs_c
@settings(max_examples=3 * settings().max_examples)
@given(st.binary(max_size=100), st.binary(min_size=4, max_size=4), st.integers(0, 7))
def test_unmask_matches_python_and_a_byte_loop(payload: bytes, key: bytes, skew: int) -> None:
    assert _ws_speedups is not None
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert unmask_py(payload, key) == expected
    got = _ws_speedups.unmask(payload, key)
    assert type(got) is bytes and got == expected
    # Any start address: the 8-byte XOR must not rely on alignment.
    shifted = memoryview(b"\x00" * skew + payload)[skew:]
    assert _ws_speedups.unmask(shifted, key) == expected


# Lengths at the edges of the 7-, 16- and 64-bit length forms.
EDGE_SIZES = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 65537])


@needs_c
@settings(max_examples=3 * settings().max_examples)
@given(
    st.one_of(
        st.text(),
        st.binary(),
        EDGE_SIZES.map(lambda n: "a" * n),
        EDGE_SIZES.map(lambda n: "é" * (n // 2)),  # two UTF-8 bytes each
        EDGE_SIZES.map(lambda n: b"\x00" * n),
    ),
    st.sampled_from(["as is", "bytearray", "memoryview", "strided"]),
)
def test_encode_frame_matches_python(message: str | bytes, form: str) -> None:
    assert _ws_speedups is not None
    given_: Any = message
    if isinstance(message, bytes) and form == "bytearray":
        given_ = bytearray(message)
    elif isinstance(message, bytes) and form == "memoryview":
        given_ = memoryview(b"\x00" + message)[1:]  # an odd address
    elif isinstance(message, bytes) and form == "strided":  # not contiguous
        given_ = memoryview(bytes(b for b in message for _ in (0, 1)))[::2]
    expected = encode_frame_py(given_)
    got = _ws_speedups.encode_frame(given_)
    assert type(got) is bytes and got == expected


class Indexable:
    def __index__(self) -> int:
        return 5


class HasBytes:
    def __bytes__(self) -> bytes:
        return b"mine"


class OddBytes(bytes):
    def __bytes__(self) -> bytes:
        return b"not the buffer"


class OddStr(str):
    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"not the characters"


@needs_c
@pytest.mark.parametrize("message", [OddBytes(b"raw"), OddStr("text"), OddStr("t\u00e9xt")])
def test_subclasses_are_framed_by_their_contents_not_their_methods(message: Any) -> None:
    assert _ws_speedups is not None
    expected = bytes(memoryview(message)) if isinstance(message, bytes) else str.encode(message)
    assert encode_frame_py(message)[2:] == expected
    assert _ws_speedups.encode_frame(message) == encode_frame_py(message)


@needs_c
@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("\ud800", UnicodeEncodeError),
        (5, TypeError),
        (True, TypeError),
        (None, TypeError),
        ([104, 105], TypeError),  # bytes() would take an iterable of ints
        (Indexable(), TypeError),  # and __index__
        (HasBytes(), TypeError),  # and __bytes__
    ],
)
def test_encode_frame_refuses_what_python_refuses(message: Any, error: type[Exception]) -> None:
    assert _ws_speedups is not None
    with pytest.raises(error):
        encode_frame_py(message)
    with pytest.raises(error):
        _ws_speedups.encode_frame(message)


# --- edges and misuse ------------------------------------------------------


@needs_c
@pytest.mark.parametrize("max_size", [None, 0, 5, 2**62, 2**80, -1, -(2**80)])
def test_limits_beyond_a_machine_word(max_size: int | None) -> None:
    wire = frame(0x81, b"hello", b"abcd") + frame(0x82, b"", b"wxyz")
    messages, _ = same_answer(wire, max_size, 0)
    assert messages == (["hello", b""] if max_size is None or max_size >= 5 else [])


@needs_c
@pytest.mark.parametrize("pos", [0, 1, 11, 12, 13, 1000])
def test_any_offset_up_to_and_past_the_end(pos: int) -> None:
    wire = frame(0x81, b"hello", b"abcd")  # 11 bytes
    assert same_answer(wire, None, pos) == ((["hello"], 11) if pos == 0 else ([], pos))


@needs_c
def test_negative_offset_is_refused() -> None:
    # A deliberate difference: Python would index from the end of the buffer.
    assert _ws_speedups is not None
    with pytest.raises(ValueError, match="negative"):
        _ws_speedups.parse_simple_frames(b"\x81\x80abcd", None, -1)


@needs_c
@pytest.mark.parametrize(
    "args",
    [
        (),
        (b"",),
        (b"", None, 0, 0),
        ("\x81\x80abcd", None),
        (None, None),
        (b"", 1.5),
        (b"", "10"),
        (b"", None, 1.0),
        (b"", None, "0"),
    ],
)
def test_misuse_raises_type_error(args: tuple[Any, ...]) -> None:
    assert _ws_speedups is not None
    with pytest.raises(TypeError):
        _ws_speedups.parse_simple_frames(*args)


@needs_c
def test_offset_beyond_a_machine_word_raises_overflow_error() -> None:
    assert _ws_speedups is not None
    with pytest.raises(OverflowError):
        _ws_speedups.parse_simple_frames(b"", None, 2**80)


@needs_c
@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_unmask_wants_a_four_byte_key(key: bytes) -> None:
    assert _ws_speedups is not None
    with pytest.raises(ValueError, match="4 bytes"):
        _ws_speedups.unmask(b"payload", key)
    with pytest.raises(TypeError):
        _ws_speedups.unmask("payload", b"abcd")  # type: ignore[arg-type]  # misuse on purpose


@needs_c
def test_arguments_by_name_as_in_python() -> None:
    assert _ws_speedups is not None
    wire = frame(0x81, b"hi", b"abcd") + frame(0x82, b"there", b"efgh")
    expected = parse_simple_frames_py(data=wire, max_size=4, pos=0)
    assert _ws_speedups.parse_simple_frames(data=wire, max_size=4, pos=0) == expected
    assert _ws_speedups.parse_simple_frames(wire, max_size=4) == expected
    assert _ws_speedups.parse_simple_frames(wire, None, pos=8) == ([b"there"], len(wire))
    with pytest.raises(TypeError, match="unexpected keyword"):
        _ws_speedups.parse_simple_frames(wire, None, offset=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        _ws_speedups.parse_simple_frames(wire, None, max_size=4)  # type: ignore[misc]
    with pytest.raises(TypeError, match="missing"):
        _ws_speedups.parse_simple_frames(wire, pos=0)  # type: ignore[call-arg]
