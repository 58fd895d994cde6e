"""The C accelerator (``_speedups.scan_head``) reads every head as the pure-Python fast path does.

``_parser._scan_head_py`` is the reference: for any bytes, limits and cache,
the C scanner must return exactly the same thing (or None when it does).  The
parser tests and the differential tests run the whole parser both ways; here
the two scanners are compared directly, on generated requests, mutated ones,
heads built from every byte value, random bytes, truncated heads, limits
around the head's own sizes, and with the keep-alive cache.

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

from peregrine_rt._http import Headers, RequestParser, _parser

from ..differential.strategies import mutated_requests, request_sequences

try:
    from peregrine_rt._http import _speedups
except ImportError:  # pragma: no cover - depends on the build
    _speedups = None  # type: ignore[assignment]  # the module is optional

NOT_BUILT = "the C accelerator (peregrine_rt/_http/_speedups.c) is not built"
needs_c = pytest.mark.skipif(_speedups is None, reason=NOT_BUILT)


@needs_c
@pytest.mark.parametrize(("value", "in_use"), [("", True), ("0", True), ("1", False)])
def test_environment_variable_turns_the_accelerator_off(value: str, in_use: bool) -> None:
    env = {**os.environ, "PEREGRINE_RT_NO_SPEEDUPS": value}
    code = "from peregrine_rt._http import _parser; print(_parser.SPEEDUPS)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(in_use)


@needs_c
def test_interface_version_matches() -> None:
    # _parser ignores a build whose interface differs (one from older source).
    assert _speedups is not None
    assert _speedups.INTERFACE == _parser._SPEEDUPS_INTERFACE


def test_speedups_argument_chooses_the_scanner() -> None:
    assert RequestParser(speedups=False)._scan_head is _parser._scan_head_py
    expected = _parser._scan_head_c if _parser.SPEEDUPS else _parser._scan_head_py
    assert RequestParser()._scan_head is expected


@needs_c
@pytest.mark.parametrize(
    "args",
    [
        (bytearray(b"GET / HTTP/1.1\r\n\r\n"), 100, 10, None, Headers),
        (b"GET / HTTP/1.1\r\n\r\n", "100", 10, None, Headers),
        (b"GET / HTTP/1.1\r\n\r\n", 100, 10, b"", Headers),
        (b"GET / HTTP/1.1\r\n\r\n", 100, 10, (b"", (1, 2)), Headers),
        (b"GET / HTTP/1.1\r\n\r\n", 100, 10, None),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 100, 10, None, lambda: None),
    ],
)
def test_misuse_raises_type_error(args: tuple[Any, ...]) -> None:
    assert _speedups is not None
    with pytest.raises(TypeError):
        _speedups.scan_head(*args)


@needs_c
def test_any_headers_class_is_called() -> None:
    # Only the Headers class is built directly; another class is called as Headers(block=...).
    class Other(Headers):
        pass

    assert _speedups is not None
    result = _speedups.scan_head(GET + b"X: y\r\n\r\n", 100, 10, None, Other)
    assert result is not None and type(result[4]) is Other
    assert result[4].raw == [(b"Host", b"a"), (b"X", b"y")]
    assert type(_speedups.scan_head(GET + b"\r\n", 100, 10, None, Headers)[4]) is Headers


# -- the two scanners side by side ------------------------------------------------


def _plain(result: Any) -> Any:
    """A scanner's result with each Headers replaced by its block (compared exactly)."""
    if isinstance(result, Headers):
        # Every slot: the C code builds Headers without calling __init__.
        return ("Headers", *(getattr(result, name) for name in Headers.__slots__))
    if isinstance(result, tuple):
        return tuple(_plain(item) for item in result)
    return result


def both(buf: bytes, limit: int, max_count: int, cache: Any = None) -> Any:
    """Scan with both scanners; they must agree.  Returns the (plain) result."""
    assert _speedups is not None
    py = _parser._scan_head_py(buf, limit, max_count, cache, Headers)
    c = _speedups.scan_head(buf, limit, max_count, cache, Headers)
    assert _plain(c) == _plain(py), f"C and Python differ on {buf!r}"
    if c is not None:
        assert py is not None
        # The types too: the head carries them (True is not 1 here).
        assert [type(x) for x in c] == [type(x) for x in py]
        if c[11] is not None:
            assert py[11] is not None
            assert [type(x) for x in c[11]] == [type(x) for x in py[11]]
    return _plain(py)


def cache_of(buf: bytes, limit: int = 1 << 16, max_count: int = 100) -> Any:
    """The cache entry the parser would keep after reading ``buf``."""
    result = _parser._scan_head_py(buf, limit, max_count, None, Headers)
    if result is None or result[11] is None:
        return None
    return (result[4]._block, result[11])


GET = b"GET / HTTP/1.1\r\nHost: a\r\n"

# Heads that each touch one rule (the comparison holds; the expectation says
# whether the fast path takes the head at all).
EXAMPLES = [
    (GET + b"\r\n", True),
    (GET + b"X: y\r\n\r\n", True),
    (GET + b"X : y\r\n\r\n", False),  # whitespace before the colon
    (GET + b"X\x00: y\r\n\r\n", False),
    (GET + b"X: a\x00b\r\n\r\n", False),  # NUL in a value
    (GET + b"X: a\x7fb\r\n\r\n", False),  # DEL
    (GET + b"X: a\rb\r\n\r\n", False),  # bare CR
    (GET + b"X: a\nb: c\r\n\r\n", False),  # bare LF inside a line
    (GET + b"X: y\n\r\n", False),  # bare LF line end
    (GET + b"X: y\r\n\n", False),
    (GET + b"X: \tcaf\xe9 \xff\t\r\n\r\n", True),  # OWS, obs-text
    (GET + b" X: y\r\n\r\n", False),  # obs-fold
    (GET + b": y\r\n\r\n", False),  # empty name
    (b"GET / HTTP/1.1\r\nHost: a\r\nhOsT: a\r\n\r\n", False),  # repeated special
    (b"GET / HTTP/1.1\r\nHost: A.Example:80\r\n\r\n", True),  # host lower-cased
    (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: []\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", True),  # empty Host is valid
    (b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\n\r\n", False),  # HTTP/1.1 without Host
    (b"GET / HTTP/1.0\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: ws\r\nExpect: 100-continue\r\n\r\n", True),
    (GET + b"Content-Length: 0\r\n\r\n", True),
    (GET + b"Content-Length:  007 \t\r\n\r\n", True),
    (GET + b"Content-Length: 18446744073709551615\r\n\r\n", True),  # 2**64 - 1
    (GET + b"Content-Length: 18446744073709551616\r\n\r\n", True),  # 2**64: exact int
    (GET + b"Content-Length: 99999999999999999999\r\n\r\n", True),  # 20 digits
    (GET + b"Content-Length: 100000000000000000000\r\n\r\n", False),  # 21 digits
    (GET + b"Content-Length: \r\n\r\n", False),
    (GET + b"Content-Length: 1,1\r\n\r\n", False),  # a list: the general path
    (GET + b"Content-Length: -1\r\n\r\n", False),
    (GET + b"Transfer-Encoding: ChUnKeD \r\n\r\n", True),
    (GET + b"Transfer-Encoding: gzip, chunked\r\n\r\n", False),
    (GET + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", False),  # CL + TE
    (GET + b"Connection: close\r\n\r\n", True),
    (GET + b"Connection: keep-alive , CLOSE\r\n\r\n", True),
    (GET + b"Connection: Upgrade\r\nUpgrade: WebSocket \r\n\r\n", True),  # case kept
    (GET + b"Upgrade: websocket\r\nConnection: keep-alive, upgrade\r\n\r\n", True),
    (GET + b"Upgrade:\r\nConnection: upgrade\r\n\r\n", True),  # empty Upgrade
    (GET + b"Upgrade: websocket\r\n\r\n", True),  # no upgrade token: ignored
    (GET + b"Connection: ,,\r\n\r\n", True),
    (GET + b"Expect: 100-Continue\r\n\r\n", True),
    (GET + b"Expect: foo, 100-continue \r\n\r\n", True),
    (GET + b"Expect: 100-continued\r\n\r\n", True),
    (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", False),  # asterisk-form
    (b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", False),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", False),
    (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", False),  # absolute-form
    (b"GET /a%20b?q=1 HTTP/1.1\r\nHost: a\r\n\r\n", True),
    (b"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", False),
    (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", False),
    (b"GET / HTTP/1.1\nHost: a\r\n\r\n", False),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r", False),  # incomplete
    (b"", False),
]


@needs_c
@pytest.mark.parametrize(("head", "taken"), EXAMPLES)
def test_examples(head: bytes, taken: bool) -> None:
    result = both(head, 8192, 100)
    assert (result is not None) == taken
    # Whatever follows the head is not read.
    both(head + b"\r\n\x00garbage", 8192, 100)


@needs_c
def test_content_length_is_an_exact_int() -> None:
    result = both(GET + b"Content-Length: 18446744073709551616\r\n\r\n", 8192, 100)
    assert result[7] == 2**64


@needs_c
def test_limits_at_the_boundary() -> None:
    head = GET + b"X: y\r\nZ: w\r\n\r\n"
    end = len(head)  # the head fits when the limit reaches its last byte
    for limit in range(end - 4, end + 3):
        assert (both(head, limit, 100) is not None) == (limit >= end)
    for count in range(5):
        assert (both(head, 8192, count) is not None) == (count >= 3)
    # The request line alone past the limit.
    assert both(head, 10, 100) is None


@needs_c
def test_cache_hits_and_misses() -> None:
    head = GET + b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    cache = cache_of(head)
    hit = both(b"POST /other HTTP/1.1\r\n" + head[16:], 8192, 100, cache)
    assert hit is not None and hit[11] is None  # the cached info was used
    assert hit[9] == b"websocket"
    # The same block on HTTP/1.0: the cached info, what 1.0 makes of it.
    assert both(b"GET / HTTP/1.0\r\n" + head[16:], 8192, 100, cache)[9] is None
    # One byte different, or the block followed by more lines: read again.
    assert both(head.replace(b"websocket", b"websocket2"), 8192, 100, cache)[11] is not None
    assert both(head[:-2] + b"X: y\r\n\r\n", 8192, 100, cache)[11] is not None
    # The cached block followed by anything but CRLF: read again (here refused).
    assert both(head[:-2] + b"\n\n", 8192, 100, cache) is None
    assert both(head[:-2] + b"\r\r", 8192, 100, cache) is None
    # The cache does not lift the limit.
    assert both(head, len(head) - 1, 100, cache) is None


# -- hypothesis ----------------------------------------------------------------

ANY_BYTE = st.integers(0, 255)
TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VALUE_BYTES = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
VALUE_TEXT = st.lists(st.sampled_from(VALUE_BYTES), max_size=16).map(bytes)
TOKEN = st.lists(st.sampled_from(TCHARS), min_size=1, max_size=8).map(bytes)
# Each special field: values the fast path takes, then values it leaves to the general path.
SPECIAL: dict[bytes, tuple[list[bytes], list[bytes]]] = {
    b"host": (
        [b"", b"a", b"A.Example:80", b"[::1]", b"[V1.fe]:8", b"a:"],
        [b"x[", b"a:8x", b"a:1:2"],
    ),
    b"connection": (
        [
            b"close",
            b"Keep-Alive",
            b"upgrade",
            b"Upgrade, keep-alive",
            b"x,,close",
            b"keep-alive, Close",
        ],
        [],
    ),
    b"content-length": ([b"0", b"012", b"18446744073709551616", b"9" * 20], [b"1,1", b"9" * 21]),
    b"transfer-encoding": ([b"chunked", b"CHUNKED"], [b"gzip, chunked", b"chunked x"]),
    b"upgrade": ([b"", b"WebSocket", b"h2c, websocket"], []),
    b"expect": ([b"100-continue", b"x, 100-Continue", b"100-continued", b""], []),
}
OWS = st.sampled_from([b"", b"", b" ", b"\t", b"  ", b" \t "])
# True nineteen times out of twenty (and shrinking towards True).
RARELY_BAD = st.sampled_from([True] * 19 + [False])
REQUEST_LINES = st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"POST /p?q=%20 HTTP/1.1\r\n",
        b"HEAD /x HTTP/1.0\r\n",
        b"DELETE / HTTP/1.1\r\n",
        b"PUT /a HTTP/1.0\r\n",
        b"PATCH / HTTP/1.1\r\n",
        b"OPTIONS /o HTTP/1.1\r\n",
    ]
)


@st.composite
def field_lines(draw: st.DrawFn) -> bytes:
    """A well-formed header line (without its line end), special or not."""
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(SPECIAL)))
        good, bad = SPECIAL[name]
        value = draw(
            st.sampled_from(good)
            if draw(RARELY_BAD)
            else st.sampled_from([*bad, b"\x00"]) | VALUE_TEXT
        )
        name = bytes(c ^ 0x20 if 97 <= c <= 122 and draw(st.booleans()) else c for c in name)
    else:
        name, value = draw(TOKEN), draw(VALUE_TEXT)
    return name + b":" + draw(OWS) + value + draw(OWS)


@st.composite
def built_heads(draw: st.DrawFn) -> bytes:
    """A head the fast path takes, or one change away from one: a byte of any
    value inserted or replaced anywhere, a line end other than CRLF, a field
    repeated."""
    lines = draw(st.lists(field_lines(), max_size=6, unique_by=lambda x: x.split(b":")[0].lower()))
    names = {line.split(b":")[0].lower() for line in lines}
    head = draw(REQUEST_LINES)
    if b"host" not in names and (head.endswith(b"1.1\r\n") or draw(st.booleans())):
        lines.insert(draw(st.integers(0, len(lines))), b"Host: a")
    if b"transfer-encoding" in names and (b"content-length" in names or b"1.0" in head):
        lines = [line for line in lines if line.split(b":")[0].lower() != b"transfer-encoding"]
    ends = [b"\r\n"] * len(lines)
    change = draw(st.sampled_from(["none", "none", "byte", "byte", "end", "repeat", "first"]))
    if lines and change == "byte":  # one byte, any value, anywhere in a line
        i = draw(st.integers(0, len(lines) - 1))
        at = draw(st.integers(0, len(lines[i])))
        replace = draw(st.integers(0, 1))
        lines[i] = lines[i][:at] + bytes([draw(ANY_BYTE)]) + lines[i][at + replace :]
    elif lines and change == "end":
        ends[draw(st.integers(0, len(lines) - 1))] = draw(
            st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r", b""])
        )
    elif lines and change == "repeat":
        lines.append(draw(st.sampled_from(lines)))
        ends.append(b"\r\n")
    elif change == "first":  # a byte of the request line
        at = draw(st.integers(0, len(head) - 1))
        head = head[:at] + bytes([draw(ANY_BYTE)]) + head[at + 1 :]
    head += b"".join(line + end for line, end in zip(lines, ends, strict=True))
    return head + draw(st.sampled_from([b"\r\n"] * 16 + [b"\r\nGET", b"\r\n\r\n", b"\n", b""]))


HEADS = (
    built_heads()
    | built_heads()
    | built_heads()
    | request_sequences().map(lambda g: g.data)
    | mutated_requests()
    | st.binary(max_size=80)
    | st.binary(max_size=40).map(lambda b: b"GET / HTTP/1.1\r\n" + b)
)


@needs_c
@settings(max_examples=5 * settings().max_examples)  # cheap: a few ms an example
@given(head=HEADS, data=st.data())
@example(head=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", data=None)
def test_same_answer_as_python(head: bytes, data: Any) -> None:
    both(head, 8192, 100)
    if data is None:
        return
    # Truncated anywhere, and with limits and a line count around the head's own.
    cut = data.draw(st.integers(0, len(head)), label="cut")
    both(head[:cut], 8192, 100)
    end = head.find(b"\r\n\r\n") + 4
    limit = data.draw(st.integers(0, 24) | st.integers(end - 3, end + 3), label="limit")
    count = data.draw(st.integers(0, 12), label="max_count")
    both(head, limit, count)
    # With the cache of this head, of a related one, or arbitrary bytes.
    other = data.draw(HEADS, label="other")
    line_end = head.find(b"\n") + 1
    info = cache_of(GET + b"Connection: upgrade\r\nUpgrade: x\r\n\r\n")[1]
    cache = data.draw(
        st.sampled_from([cache_of(head), cache_of(other)])
        | st.tuples(st.binary(max_size=20), st.just(info))
        # Any part of this head's own block: a prefix that matches, then anything.
        | st.tuples(
            st.integers(line_end, len(head)).map(lambda k: head[line_end:k]), st.just(info)
        ),
        label="cache",
    )
    both(head, 8192, 100, cache)
    both(head, limit, count, cache)
