"""The C writer (``_speedups.encode_fixed_response``) answers as ``encode_fixed_response_py``.

The Python function is the reference: for any arguments, the C function must
return the same bytes or raise the same error (it builds the common response
itself and hands every other call to the Python one).  The Date value is the
one thing that moves: the outputs are compared with it normalised, and the C
Date is checked against ``date_header_value`` separately.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from peregrine_rt._http import _writer
from peregrine_rt.exceptions import LocalProtocolError

try:
    from peregrine_rt._http import _speedups
except ImportError:  # pragma: no cover - depends on the build
    _speedups = None  # type: ignore[assignment]  # the module is optional

needs_c = pytest.mark.skipif(
    _writer.encode_fixed_response is _writer.encode_fixed_response_py,
    reason="the C accelerator is not built (or turned off)",
)

_DATE = re.compile(rb"\r\ndate: [^\r\n]*\r\n")
PINNED = b"Thu, 26 Nov 2026 08:00:00 GMT"


def _answer(fn: Any, *args: Any) -> Any:
    try:
        return _DATE.sub(b"\r\ndate: <d>\r\n", fn(*args))
    except (LocalProtocolError, TypeError, ValueError) as exc:
        return type(exc), str(exc)


def same(*args: Any) -> Any:
    c = _answer(_writer.encode_fixed_response, *args)
    py = _answer(_writer.encode_fixed_response_py, *args)
    assert c == py, f"C and Python differ on {args!r}"
    return py


tokens = st.text("abcdefghijklmnopqrstuvwxyz-0123456789!#$%&'*+.^_`|~", min_size=1, max_size=12)
values = st.binary(max_size=20).filter(lambda v: b"\r" not in v and b"\n" not in v)
pairs = st.tuples(tokens.map(str.encode), values)


@needs_c
@given(
    status=st.one_of(
        st.sampled_from([100, 101, 199, 200, 201, 204, 205, 206, 304, 404, 500, 999, 1000]),
        st.integers(-5, 1100),
    ),
    headers=st.one_of(st.lists(pairs, max_size=5), st.lists(pairs, max_size=3).map(tuple)),
    body=st.binary(max_size=40),
    method=st.sampled_from(["GET", "HEAD", "POST", "head", "OPTIONS"]),
    version=st.sampled_from(["1.1", "1.0", "2.0", ""]),
    keep_alive=st.one_of(st.booleans(), st.sampled_from([0, 1, None, "", "x"])),
)
@example(status=200, headers=[], body=b"", method="HEAD", version="1.0", keep_alive=True)
@example(status=205, headers=[], body=b"x", method="GET", version="1.1", keep_alive=True)
def test_same_answer_as_python(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    method: str,
    version: str,
    keep_alive: Any,
) -> None:
    same(status, headers, body, method, version, keep_alive)


@needs_c
@pytest.mark.parametrize(
    "args",
    [
        (True, [], b"x", "GET", "1.1", True),  # an int subclass
        (2**70, [], b"x", "GET", "1.1", True),  # does not fit a C long
        ("200", [], b"x", "GET", "1.1", True),
        (200, [[b"a", b"b"]], b"x", "GET", "1.1", True),  # a list, not a tuple
        (200, [(b"a", b"b", b"c")], b"x", "GET", "1.1", True),
        (200, [(b"a", "b")], b"x", "GET", "1.1", True),
        (200, [(bytearray(b"a"), b"b")], b"x", "GET", "1.1", True),
        (200, [], bytearray(b"x"), "GET", "1.1", True),
        (200, [], memoryview(b"x"), "GET", "1.1", True),
        (200, [], b"x", b"GET", "1.1", True),
        (200, [], b"x", "GET", b"1.1", True),
    ],
)
def test_unusual_arguments_get_the_python_answer(args: tuple[Any, ...]) -> None:
    same(*args)


@needs_c
def test_wrong_argument_count_is_the_python_error() -> None:
    encode: Any = _writer.encode_fixed_response
    with pytest.raises(TypeError):
        encode(200, [], b"x", "GET", "1.1")


@needs_c
def test_date_is_the_writers() -> None:
    # Two reads either side of the C call: equal unless a second began between them.
    for _ in range(5):
        before = _writer.date_header_value()
        data = _writer.encode_fixed_response(200, [], b"", "GET", "1.1", True)
        after = _writer.date_header_value()
        if before == after:
            assert b"\r\ndate: " + before + b"\r\n" in data
            return
    pytest.fail("the second changed on every try")


@needs_c
def test_a_replaced_date_function_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # A test pinning the Date by replacing _writer.date_header_value still sees its
    # date: the C cache is used only while the writer's own function is in place.
    monkeypatch.setattr(_writer, "date_header_value", lambda: PINNED)
    data = _writer.encode_fixed_response(200, [(b"a", b"b")], b"x", "GET", "1.1", True)
    assert data == (
        b"HTTP/1.1 200 OK\r\na: b\r\ndate: " + PINNED + b"\r\ncontent-length: 1\r\n\r\nx"
    )


@needs_c
def test_the_server_uses_the_c_writer() -> None:
    from peregrine_rt._http import encode_fixed_response

    assert _speedups is not None
    assert encode_fixed_response is _speedups.encode_fixed_response
