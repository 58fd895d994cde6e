"""The sans-IO request parser, case by case, each case fed three ways (see tests/helpers.py).

Expectations come from RFC 9112 (message syntax) and RFC 9110 (semantics);
the section is named next to the cases that depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from peregrine_rt._http import (
    CLOSED,
    MAX_CHUNK_COUNT,
    MAX_HEADER_COUNT,
    MAX_HEADERS_SIZE,
    MAX_REQUEST_LINE,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    Headers,
    RequestHead,
    RequestParser,
)
from peregrine_rt._http._parser import SPEEDUPS
from peregrine_rt.exceptions import LimitExceeded, LocalProtocolError, RemoteProtocolError

from ..helpers import (
    MODES,
    TRAILING,
    Feeder,
    Mode,
    get_all_events,
    head_summary,
    parse_error,
    parse_request,
    parse_stream,
)


def _py_fast_path_parser(**limits: Any) -> RequestParser:
    return RequestParser(speedups=False, **limits)


def _general_path_parser(**limits: Any) -> RequestParser:
    return RequestParser(fast_path=False, **limits)


# Every case runs on each way of reading a head: the fast path with the C
# accelerator (the default where it is built), the same fast path in pure
# Python, and the general path.  They must agree.
PARSER_FACTORIES = (
    pytest.param(
        RequestParser,
        id="c-fast-path",
        marks=pytest.mark.skipif(not SPEEDUPS, reason="the C accelerator is not built or is off"),
    ),
    pytest.param(_py_fast_path_parser, id="py-fast-path"),
    pytest.param(_general_path_parser, id="general-path"),
)

HOST = b"Host: a\r\n"
GET = b"GET / HTTP/1.1\r\n" + HOST  # a valid head, still open for more header lines


def post(headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A POST request; ``headers`` are complete header lines (CRLF included)."""
    host = HOST if version == b"1.1" else b""
    return b"POST /upload HTTP/" + version + b"\r\n" + host + headers + b"\r\n" + body


def chunked(body: bytes) -> bytes:
    """A chunked POST whose (raw, already framed) body is ``body``."""
    return post(b"Transfer-Encoding: chunked\r\n", body)


# -- accepted requests -------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """What one request must look like: head attributes (a subset), body, trailers."""

    head: dict[str, Any]
    body: bytes = b""
    trailers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class Case:
    data: bytes
    requests: tuple[Req, ...]
    limits: dict[str, Any] = field(default_factory=dict)
    eof: bool = False
    """Signal EOF after the data (the stream must then end in CLOSED)."""
    modes: tuple[Mode, ...] = MODES


def case(
    id: str,
    data: bytes,
    *requests: Req | dict[str, Any],
    limits: dict[str, Any] | None = None,
    eof: bool = False,
    modes: tuple[Mode, ...] = MODES,
) -> Any:
    reqs = tuple(r if isinstance(r, Req) else Req(r) for r in requests)
    return pytest.param(Case(data, reqs, limits or {}, eof, modes), id=id)


# Small limits for the boundary cases: every limit can be reached with a few bytes.
SMALL = {
    "max_request_line": 40,
    "max_header_line": 40,
    "max_headers_size": 128,
    "max_header_count": 4,
    "max_body_size": 16,
}

CASES = [
    # -- basics --
    case(
        "get-with-headers",
        b"GET /index.html HTTP/1.1\r\nHost: Example.COM\r\nUser-Agent: test/1.0\r\n"
        b"Accept: */*\r\n\r\n",
        {
            "method": "GET",
            "target": b"/index.html",
            "http_version": "1.1",
            "host": b"example.com",  # RequestHead.host is documented as lower-cased
            "keep_alive": True,  # RFC 9112 §9.3: persistent by default in HTTP/1.1
            "content_length": None,
            "chunked": False,
            "has_body": False,
            "upgrade": None,
            "expect_continue": False,
            "path": "/index.html",
            "raw_path": b"/index.html",
            "raw_query": b"",
            "query": [],
            "authority": None,
            "headers": [
                (b"Host", b"Example.COM"),
                (b"User-Agent", b"test/1.0"),
                (b"Accept", b"*/*"),
            ],
        },
    ),
    case("head-method", b"HEAD /x HTTP/1.1\r\n" + HOST + b"\r\n", {"method": "HEAD"}),
    # RFC 9110 §9.1: any token is a method, and methods are case-sensitive.
    case("extension-method", b"PURGE /x HTTP/1.1\r\n" + HOST + b"\r\n", {"method": "PURGE"}),
    case(
        "lowercase-method-is-another-method",
        b"get / HTTP/1.1\r\n" + HOST + b"\r\n",
        {"method": "get"},
    ),
    case(
        "header-values-trimmed-inner-space-kept",
        GET + b"X-A:  a \t b \t \r\nX-Empty:\r\nX-Blank:   \r\n\r\n",
        {"headers": [(b"Host", b"a"), (b"X-A", b"a \t b"), (b"X-Empty", b""), (b"X-Blank", b"")]},
    ),
    # RFC 9110 §5.5: obs-text (0x80-0xff) is allowed in field values, kept as bytes.
    case(
        "header-value-obs-text",
        GET + b"X-Name: caf\xe9 \xff\r\n\r\n",
        {"headers": [(b"Host", b"a"), (b"X-Name", b"caf\xe9 \xff")]},
    ),
    # RFC 9110 §7.2: an empty Host is valid (the target URI has no authority).
    case("host-empty", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", {"host": b""}),
    case("host-ip-literal", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", {"host": b"[::1]:8080"}),
    # -- HTTP/1.0 and keep-alive (RFC 9112 §9.3) --
    case(
        "http10-closes-by-default",
        b"GET / HTTP/1.0\r\n\r\n",
        {"http_version": "1.0", "host": None, "keep_alive": False, "headers": []},
    ),
    case(
        "http10-keep-alive-when-asked",
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        {"http_version": "1.0", "keep_alive": True},
    ),
    case(
        "http10-keep-alive-and-close",
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        {"keep_alive": False},
    ),
    case(
        "http10-with-host-and-body",
        b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        Req({"http_version": "1.0", "host": b"a", "content_length": 3}, b"abc"),
    ),
    case("http11-close", GET + b"Connection: close\r\n\r\n", {"keep_alive": False}),
    case(
        "http11-explicit-keep-alive", GET + b"Connection: keep-alive\r\n\r\n", {"keep_alive": True}
    ),
    case(
        "http11-close-upgrade-list",
        GET + b"Connection: close, upgrade\r\nUpgrade: websocket\r\n\r\n",
        {"keep_alive": False, "upgrade": b"websocket"},
    ),
    case(
        "connection-tokens-case-insensitive-with-ows",
        GET + b"Connection: Upgrade ,\tCLOSE \r\n\r\n",
        {"keep_alive": False, "upgrade": None},
    ),
    case(
        "connection-repeated-close-wins",
        GET + b"Connection: keep-alive\r\nConnection: close\r\n\r\n",
        {"keep_alive": False},
    ),
    case(
        "connection-repeated-upgrade",
        GET + b"Connection: keep-alive\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        {"keep_alive": True, "upgrade": b"websocket"},
    ),
    # Connection options are tokens, not substrings.
    case(
        "connection-closed-is-not-close",
        GET + b"Connection: closed, x-close\r\n\r\n",
        {"keep_alive": True},
    ),
    case(
        "http10-keep-alived-is-not-keep-alive",
        b"GET / HTTP/1.0\r\nConnection: keep-alived\r\n\r\n",
        {"keep_alive": False},
    ),
    # -- pipelining (RFC 9112 §9.3.2) --
    case(
        "pipelined-two",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n",
        {"path": "/a", "host": b"a"},
        {"path": "/b", "host": b"b"},
    ),
    case(
        "pipelined-three-with-bodies",
        post(b"Content-Length: 5\r\n", b"hello")
        + chunked(b"3\r\nabc\r\n0\r\n\r\n")
        + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Req({"method": "POST", "content_length": 5, "chunked": False}, b"hello"),
        Req({"method": "POST", "content_length": None, "chunked": True}, b"abc"),
        Req({"method": "GET", "path": "/last", "keep_alive": False}),
    ),
    case(
        "pipelined-identical-heads",
        (b"GET /same HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n") * 3,
        {"path": "/same"},
        {"path": "/same"},
        {"path": "/same"},
    ),
    case(
        "pipelined-http10-then-http11",
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        {"http_version": "1.0", "keep_alive": True},
        {"http_version": "1.1", "keep_alive": True},
    ),
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a
    # request-line (clients send one after a POST body).
    case(
        "pipelined-with-empty-lines-between",
        post(b"Content-Length: 2\r\n", b"hi") + b"\r\n\r\n" + GET + b"\r\n",
        Req({"method": "POST"}, b"hi"),
        {"method": "GET"},
    ),
    # -- Content-Length bodies (RFC 9112 §6.2, RFC 9110 §8.6) --
    case(
        "content-length-body",
        post(b"Content-Length: 11\r\n", b"hello world"),
        Req(
            {"method": "POST", "content_length": 11, "chunked": False, "has_body": True},
            b"hello world",
        ),
    ),
    case(
        "content-length-zero",
        post(b"Content-Length: 0\r\n"),
        Req({"content_length": 0, "has_body": False}),
    ),
    case(
        "content-length-leading-zeros-and-ows",
        post(b"Content-Length:  005 \r\n", b"12345"),
        Req({"content_length": 5}, b"12345"),
    ),
    # RFC 9110 §8.6: the same value repeated may be taken as that one value.
    case(
        "content-length-repeated-same-value",
        post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
        Req({"content_length": 3}, b"abc"),
    ),
    case(
        "content-length-list-same-value",
        post(b"Content-Length: 3, 3\r\n", b"abc"),
        Req({"content_length": 3}, b"abc"),
    ),
    case(
        "content-length-body-is-opaque",
        post(b"Content-Length: 12\r\n", b"\r\n\r\nGET /\x00\xff\n"),
        Req({"content_length": 12}, b"\r\n\r\nGET /\x00\xff\n"),
    ),
    # -- chunked bodies (RFC 9112 §7.1) --
    case(
        "chunked-body",
        chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        Req({"chunked": True, "content_length": None, "has_body": True}, b"hello world"),
    ),
    case(
        "chunked-extensions",
        chunked(b'5;name=value\r\nhello\r\n6 ; q="a b;c" ;x\r\n world\r\n0;last=1\r\n\r\n'),
        Req({"chunked": True}, b"hello world"),
    ),
    case(
        "chunked-trailers",
        chunked(b"3\r\nabc\r\n0\r\nX-Checksum: 900150983\r\nX-Other:  d \r\n\r\n"),
        Req({"chunked": True}, b"abc", ((b"x-checksum", b"900150983"), (b"x-other", b"d"))),
    ),
    case(
        "chunked-hex-sizes-both-cases",
        chunked(
            b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n1F\r\n"
            + b"F" * 31
            + b"\r\n1f\r\n"
            + b"f" * 31
            + b"\r\n0\r\n\r\n"
        ),
        Req({"chunked": True}, b"0123456789abcdefghij" + b"F" * 31 + b"f" * 31),
    ),
    case(
        "chunked-size-leading-zeros",
        chunked(b"0005\r\nhello\r\n000\r\n\r\n"),
        Req({"chunked": True}, b"hello"),
    ),
    case(
        "chunked-data-is-opaque",
        chunked(b"6\r\n\r\n0\r\n\r\r\n0\r\n\r\n"),
        Req({"chunked": True}, b"\r\n0\r\n\r"),
    ),
    case("chunked-empty-body", chunked(b"0\r\n\r\n"), Req({"chunked": True, "has_body": True})),
    # RFC 9112 §7: transfer-coding names are case-insensitive.
    case(
        "transfer-encoding-case-insensitive",
        post(b"Transfer-Encoding: Chunked\r\n", b"2\r\nok\r\n0\r\n\r\n"),
        Req({"chunked": True}, b"ok"),
    ),
    # -- Expect (RFC 9110 §10.1.1) --
    case(
        "expect-100-continue",
        post(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"ok"),
        Req({"expect_continue": True}, b"ok"),
    ),
    case(
        "expect-100-continue-case-insensitive",
        post(b"Expect: 100-Continue\r\nContent-Length: 2\r\n", b"ok"),
        Req({"expect_continue": True}, b"ok"),
    ),
    case(
        "expect-ignored-for-http10",
        post(b"Expect: 100-continue\r\nContent-Length: 2\r\n", b"ok", version=b"1.0"),
        Req({"http_version": "1.0", "expect_continue": False}, b"ok"),
    ),
    case(
        "expect-other-expectation",
        post(b"Expect: 200-ok\r\nContent-Length: 2\r\n", b"ok"),
        Req({"expect_continue": False}, b"ok"),
    ),
    # -- Upgrade (RFC 9110 §7.8) --
    case(
        "upgrade-with-connection-upgrade",
        GET + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        {"upgrade": b"websocket", "keep_alive": True},
    ),
    case(
        "upgrade-without-connection-token",
        GET + b"Upgrade: websocket\r\n\r\n",
        {"upgrade": None},
    ),
    case(
        "upgrade-with-connection-keep-alive-only",
        GET + b"Connection: keep-alive\r\nUpgrade: websocket\r\n\r\n",
        {"upgrade": None},
    ),
    # RFC 9110 §7.8: "A server MUST ignore an Upgrade header field that is
    # received in an HTTP/1.0 request."
    case(
        "upgrade-ignored-for-http10",
        b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        {"http_version": "1.0", "upgrade": None},
    ),
    # -- line ends (RFC 9112 §2.2) --
    case("leading-crlf-lines", b"\r\n\r\n" + GET + b"\r\n", {"path": "/"}),
    case("leading-bare-lf-lines", b"\n\n" + GET + b"\r\n", {"path": "/"}),
    case(
        "bare-lf-head",
        b"GET /lf HTTP/1.1\nHost: a\nX: y\n\n",
        {"path": "/lf", "headers": [(b"Host", b"a"), (b"X", b"y")]},
    ),
    case(
        "mixed-line-ends-head",
        b"POST /m HTTP/1.1\r\nHost: a\nContent-Length: 2\r\n\nok",
        Req({"path": "/m", "content_length": 2}, b"ok"),
    ),
    # -- request targets (RFC 9112 §3.2) --
    case(
        "origin-form-with-query",
        b"GET /search?q=a+b&x=%41&empty=&flag HTTP/1.1\r\n" + HOST + b"\r\n",
        {
            "target": b"/search?q=a+b&x=%41&empty=&flag",
            "path": "/search",
            "raw_path": b"/search",
            "raw_query": b"q=a+b&x=%41&empty=&flag",
            "query": [("q", "a b"), ("x", "A"), ("empty", ""), ("flag", "")],
            "authority": None,
        },
    ),
    case(
        "origin-form-empty-query",
        b"GET /p? HTTP/1.1\r\n" + HOST + b"\r\n",
        {"path": "/p", "raw_path": b"/p", "raw_query": b"", "query": []},
    ),
    case(
        "absolute-form",
        b"GET http://example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        {
            "target": b"http://example.com:8080/a/b?x=1",
            "authority": b"example.com:8080",
            "raw_path": b"/a/b",
            "path": "/a/b",
            "raw_query": b"x=1",
            "query": [("x", "1")],
        },
    ),
    case(
        "absolute-form-without-path",
        b"GET http://example.com HTTP/1.1\r\n" + HOST + b"\r\n",
        {"authority": b"example.com", "raw_path": b"/", "path": "/", "raw_query": b""},
    ),
    case(
        "absolute-form-query-without-path",
        b"GET https://example.com?x=1 HTTP/1.1\r\n" + HOST + b"\r\n",
        {"authority": b"example.com", "path": "/", "raw_query": b"x=1"},
    ),
    case(
        "absolute-form-dot-segments",
        b"GET http://example.com/a%20b/../c HTTP/1.1\r\n" + HOST + b"\r\n",
        {"authority": b"example.com", "raw_path": b"/a%20b/../c", "path": "/c"},
    ),
    case(
        "asterisk-form",
        b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n",
        {"method": "OPTIONS", "target": b"*", "authority": None, "raw_query": b""},
    ),
    case(
        "authority-form",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        {"method": "CONNECT", "target": b"example.com:443", "authority": b"example.com:443"},
    ),
    # -- path decoding (see _target.decode_path; RFC 3986 §5.2.4) --
    case(
        "path-encoded-dot-dot-resolved",
        b"GET /a/b/%2e%2e/c HTTP/1.1\r\n" + HOST + b"\r\n",
        {"raw_path": b"/a/b/%2e%2e/c", "path": "/a/c"},
    ),
    case(
        "path-plain-dot-segments",
        b"GET /a/./b/../c?x HTTP/1.1\r\n" + HOST + b"\r\n",
        {"raw_path": b"/a/./b/../c", "path": "/a/c", "raw_query": b"x"},
    ),
    case(
        "path-cannot-climb-above-root",
        b"GET /../%2E%2E/.%2e/etc/passwd HTTP/1.1\r\n" + HOST + b"\r\n",
        {"path": "/etc/passwd"},
    ),
    case(
        "path-utf8",
        b"GET /caf%C3%A9/%e2%82%ac HTTP/1.1\r\n" + HOST + b"\r\n",
        {"path": "/caf\u00e9/\u20ac", "raw_path": b"/caf%C3%A9/%e2%82%ac"},
    ),
    # -- EOF (end of input) --
    case("eof-between-requests", GET + b"\r\n", {"path": "/"}, eof=True),
    case("eof-before-any-request", b"", eof=True, modes=("whole", "bytewise")),
    # -- limits, exactly reached: still accepted --
    case(
        "request-line-at-limit",
        b"GET /" + b"a" * (40 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        {"raw_path": b"/" + b"a" * 26},
        limits=SMALL,
    ),
    case(
        "header-line-at-limit",
        GET + b"X: " + b"b" * 37 + b"\r\n\r\n",
        {"headers": [(b"Host", b"a"), (b"X", b"b" * 37)]},
        limits=SMALL,
    ),
    case(
        "header-count-at-limit",
        GET + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        {"path": "/"},
        limits=SMALL,
    ),
    case(
        "content-length-body-at-limit",
        post(b"Content-Length: 16\r\n", b"x" * 16),
        Req({"content_length": 16}, b"x" * 16),
        limits=SMALL,
    ),
    case(
        "chunked-body-at-limit",
        chunked(b"8\r\n" + b"x" * 8 + b"\r\n8\r\n" + b"y" * 8 + b"\r\n0\r\n\r\n"),
        Req({"chunked": True}, b"x" * 8 + b"y" * 8),
        limits=SMALL,
    ),
    case(
        "chunk-count-at-limit",
        chunked(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"),
        Req({"chunked": True}, b"abc"),
        limits={"max_chunk_count": 3},
    ),
    case(
        # The extension bytes are what follows the size: ";ab" and " ;c=d".
        "chunk-extensions-at-limit",
        chunked(b"1;ab\r\na\r\n1 ;c=d\r\nb\r\n0\r\n\r\n"),
        Req({"chunked": True}, b"ab"),
        limits={"max_chunk_extensions": 8},
    ),
    case(
        # Two 32-byte trailer lines (CRLF included): the section is 64 bytes.
        "trailer-section-at-limit",
        chunked(b"0\r\nA: " + b"1" * 27 + b"\r\nB: " + b"2" * 27 + b"\r\n\r\n"),
        Req({"chunked": True}, b"", ((b"a", b"1" * 27), (b"b", b"2" * 27))),
        limits={"max_headers_size": 64},
    ),
    case(
        "request-line-at-default-limit",
        b"GET /"
        + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1"))
        + b" HTTP/1.1\r\n"
        + HOST
        + b"\r\n",
        {"method": "GET"},
    ),
    case(
        "header-count-at-default-limit",
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADER_COUNT - 1))
        + HOST
        + b"\r\n",
        {"host": b"a"},
    ),
]


def _check_expected(result_requests: list[Any], expected: tuple[Req, ...]) -> None:
    assert len(result_requests) == len(expected)
    for (head, body, trailers), want in zip(result_requests, expected, strict=True):
        summary = head_summary(head)
        got = {key: summary[key] for key in want.head}
        assert got == want.head
        assert body == want.body
        # Field names are case-insensitive (RFC 9110 §5.1).
        assert [(name.lower(), value) for name, value in trailers] == list(want.trailers)


def _runs(cases: list[Any]) -> list[Any]:
    """Each case once per feeding mode that means something for it."""
    return [
        pytest.param(param.values[0], mode, id=f"{param.id}-{mode}")
        for param in cases
        for mode in MODES
        if mode in param.values[0].modes
    ]


@pytest.mark.parametrize("make_parser", PARSER_FACTORIES)
@pytest.mark.parametrize(("case", "mode"), _runs(CASES))
def test_accepted(case: Case, mode: Mode, make_parser: Any) -> None:
    result = parse_stream(make_parser(**case.limits), case.data, mode, eof=case.eof)
    _check_expected(result.requests, case.requests)
    if mode == "trailing":
        assert result.end is PAUSED
        assert result.leftover == TRAILING
    else:
        assert result.end is (CLOSED if case.eof else NEED_DATA)
        assert result.leftover == b""
    # However the bytes arrived, the result is the same.
    reference = parse_stream(make_parser(**case.limits), case.data, "whole", eof=case.eof)
    assert result.summary() == reference.summary()


@pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])
@pytest.mark.parametrize("case", CASES)
def test_fast_and_general_paths_agree(case: Case, speedups: bool) -> None:
    fast = parse_stream(
        RequestParser(speedups=speedups, **case.limits), case.data, "whole", eof=case.eof
    )
    general = parse_stream(
        RequestParser(fast_path=False, **case.limits), case.data, "whole", eof=case.eof
    )
    assert fast.summary() == general.summary()
    assert (fast.end, fast.leftover) == (general.end, general.leftover)


# -- rejected requests -----------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    data: bytes
    status: int
    limits: dict[str, Any] = field(default_factory=dict)
    eof: bool = False
    modes: tuple[Mode, ...] = MODES
    error_by: int | None = None
    """Fed one byte at a time, the error must come after at most this many bytes."""


def bad(
    id: str,
    data: bytes,
    status: int = 400,
    *,
    limits: dict[str, Any] | None = None,
    eof: bool = False,
    error_by: int | None = None,
) -> Any:
    # Trailing bytes after an EOF are meaningless: such cases are fed two ways.
    modes: tuple[Mode, ...] = ("whole", "bytewise") if eof else MODES
    return pytest.param(Bad(data, status, limits or {}, eof, modes, error_by), id=id)


def with_value(value: bytes) -> bytes:
    return GET + b"X-Test: " + value + b"\r\n\r\n"


def with_target(target: bytes, method: bytes = b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n"


R1 = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 20 + b"\r\n\r\n"  # a 52-byte head
LONG_LINE = b"GET /" + b"z" * 40 + b" HTTP/1.1\r\n"

REJECTED = [
    # -- field syntax (RFC 9112 §5) --
    bad("obs-fold-space", GET + b"X: a\r\n b\r\n\r\n"),  # §5.2
    bad("obs-fold-tab", GET + b"X: a\r\n\tb\r\n\r\n"),
    bad("whitespace-before-first-field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),  # §2.2
    bad("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),  # §5.1
    bad("tab-before-colon", GET + b"X\t: a\r\n\r\n"),
    bad("field-without-colon", GET + b"X-No-Colon\r\n\r\n"),
    bad("field-empty-name", GET + b": v\r\n\r\n"),
    bad("field-name-with-space", GET + b"X Y: v\r\n\r\n"),
    bad("field-name-not-token", GET + b"X(Y): v\r\n\r\n"),
    # -- framing (RFC 9112 §6) --
    bad(
        "content-length-and-transfer-encoding",
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ),
    bad(
        "transfer-encoding-and-content-length",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    ),
    bad("content-length-differing", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")),
    bad("content-length-differing-list", post(b"Content-Length: 5, 6\r\n", b"hello!")),
    bad("content-length-hex-digit", post(b"Content-Length: 1a\r\n", b"x" * 26)),
    bad("content-length-negative", post(b"Content-Length: -1\r\n")),
    bad("content-length-plus-sign", post(b"Content-Length: +1\r\n", b"x")),
    bad("content-length-empty", post(b"Content-Length:\r\n")),
    bad("content-length-blank", post(b"Content-Length:   \r\n")),
    bad("content-length-hex-prefix", post(b"Content-Length: 0x5\r\n", b"hello")),
    bad("content-length-decimal-point", post(b"Content-Length: 1.0\r\n", b"x")),
    bad("content-length-two-numbers", post(b"Content-Length: 1 1\r\n", b"x")),
    bad("transfer-encoding-gzip-only", post(b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n")),
    bad(
        "transfer-encoding-chunked-then-gzip",
        post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    ),
    bad("transfer-encoding-identity", post(b"Transfer-Encoding: identity\r\n", b"")),
    # RFC 9112 §6.1: an unknown transfer coding gets 501.
    bad(
        "transfer-encoding-gzip-chunked",
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        501,
    ),
    bad(
        "transfer-encoding-gzip-chunked-two-lines",
        post(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        501,
    ),
    bad(
        "transfer-encoding-chunked-twice",
        post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
    ),
    bad(
        "transfer-encoding-chunked-twice-two-lines",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ),
    bad(
        "transfer-encoding-in-http10",
        post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"1.0"),
    ),
    # -- chunked framing (RFC 9112 §7.1) --
    bad("chunk-size-not-hex", chunked(b"g\r\nx\r\n0\r\n\r\n")),
    bad("chunk-size-empty", chunked(b"\r\nx\r\n0\r\n\r\n")),
    bad("chunk-size-negative", chunked(b"-1\r\nx\r\n0\r\n\r\n")),
    bad("chunk-size-hex-prefix", chunked(b"0x1\r\nx\r\n0\r\n\r\n")),
    bad("chunk-size-leading-space", chunked(b" 1\r\nx\r\n0\r\n\r\n")),
    bad("chunk-size-over-20-digits", chunked(b"0" * 20 + b"1\r\nx\r\n0\r\n\r\n")),
    bad(
        "chunk-size-overflow",
        chunked(b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        limits={"max_body_size": None},
    ),
    bad("chunk-size-line-too-long", chunked(b"1;" + b"e" * 5000 + b"\r\nx\r\n0\r\n\r\n")),
    bad("chunk-extension-control-byte", chunked(b"1;a\x01b\r\nx\r\n0\r\n\r\n")),
    bad("chunk-data-not-followed-by-crlf", chunked(b"5\r\nhelloXY0\r\n\r\n")),
    bad("chunk-data-longer-than-size", chunked(b"5\r\nhello!\r\n0\r\n\r\n")),
    bad("chunk-data-followed-by-cr-only", chunked(b"5\r\nhello\r0\r\n\r\n")),
    bad("chunk-size-line-bare-lf", chunked(b"5\nhello\r\n0\r\n\r\n")),
    bad("chunk-data-followed-by-bare-lf", chunked(b"5\r\nhello\n0\r\n\r\n")),
    bad("last-chunk-line-bare-lf", chunked(b"5\r\nhello\r\n0\n\r\n")),
    bad("trailer-obs-fold", chunked(b"0\r\nX: a\r\n b\r\n\r\n")),
    bad("trailer-space-before-colon", chunked(b"0\r\nX : a\r\n\r\n")),
    bad("trailer-nul", chunked(b"0\r\nX: a\x00\r\n\r\n")),
    # -- Host (RFC 9112 §3.2, RFC 9110 §7.2) --
    bad("http11-without-host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    bad("two-host-headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    bad("two-identical-host-headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
    bad("host-with-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    bad("host-with-slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    bad("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
    # -- versions (RFC 9112 §2.3, RFC 9110 §15.6.6) --
    bad("version-2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    bad("version-0.9", b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    bad("version-1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    bad("version-lowercase-name", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
    bad("version-without-minor", b"GET / HTTP/1\r\nHost: a\r\n\r\n"),
    # -- request line syntax (RFC 9112 §3) --
    bad("request-line-double-space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    bad("request-line-trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    bad("request-line-leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    bad("request-line-without-version", b"GET /\r\nHost: a\r\n\r\n"),
    bad("request-line-without-target", b"GET HTTP/1.1\r\nHost: a\r\n\r\n"),
    bad("method-not-token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    bad("too-many-leading-empty-lines", b"\r\n" * 17 + GET + b"\r\n"),
    bad("bare-cr-before-request-line", b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    # -- control bytes (RFC 9110 §5.5, RFC 9112 §2.2) --
    bad("nul-in-value", with_value(b"a\x00b")),
    bad("del-in-value", with_value(b"a\x7fb")),
    bad("bare-cr-in-value", with_value(b"a\rb")),
    bad("cr-at-end-of-value", with_value(b"ab\r")),
    bad("soh-in-value", with_value(b"a\x01b")),
    bad("esc-in-value", with_value(b"\x1b[31m")),
    bad("vertical-tab-in-value", with_value(b"a\x0bb")),
    bad("form-feed-in-value", with_value(b"a\x0cb")),
    bad("nul-in-name", GET + b"X\x00Y: v\r\n\r\n"),
    bad("del-in-name", GET + b"X\x7fY: v\r\n\r\n"),
    bad("soh-in-name", GET + b"X\x01Y: v\r\n\r\n"),
    bad("bare-cr-in-name", GET + b"X\rY: v\r\n\r\n"),
    bad("nul-in-target", with_target(b"/a\x00b")),
    bad("del-in-target", with_target(b"/a\x7fb")),
    bad("bare-cr-in-target", with_target(b"/a\rb")),
    bad("soh-in-target", with_target(b"/a\x01b")),
    bad("tab-in-target", with_target(b"/a\tb")),
    bad("nul-in-method", b"G\x00T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    bad("non-ascii-in-target", with_target(b"/caf\xc3\xa9")),
    bad("obs-text-in-target", with_target(b"/\x80")),
    # -- request targets (RFC 9112 §3.2) --
    bad("asterisk-without-options", with_target(b"*")),
    bad("relative-target", with_target(b"foo")),
    bad("absolute-form-with-userinfo", with_target(b"http://user:pw@example.com/")),
    # RFC 9110 §4.2.1: an "http" URI with an empty host MUST be rejected.
    bad("absolute-form-empty-host", with_target(b"http:///etc/passwd")),
    bad("connect-with-path", with_target(b"example.com:443/x", b"CONNECT")),
    # RFC 9112 §3.2.3: authority-form = uri-host ":" port; RFC 9110 §9.3.6: a
    # server MUST reject a CONNECT whose port is empty or invalid.
    bad("connect-without-port", with_target(b"example.com", b"CONNECT")),
    bad("connect-empty-port", with_target(b"example.com:", b"CONNECT")),
    bad("connect-origin-form", with_target(b"/", b"CONNECT")),
    # -- path decoding (see _target.decode_path) --
    bad("path-encoded-slash", with_target(b"/a%2Fb")),
    bad("path-encoded-slash-lowercase", with_target(b"/a/..%2f..%2fetc")),
    bad("path-encoded-nul", with_target(b"/a%00b")),
    bad("path-invalid-utf8", with_target(b"/%ff")),
    bad("path-overlong-utf8-slash", with_target(b"/%c0%af")),
    # -- size limits (RFC 9110 §15.5.15 414, RFC 6585 §5 431, RFC 9110 §15.5.14 413) --
    bad(
        "request-line-over-limit",
        b"GET /" + b"a" * 27 + b" HTTP/1.1\r\n" + HOST + b"\r\n",  # 41 bytes
        414,
        limits=SMALL,
    ),
    bad(
        "request-line-over-default-limit",
        b"GET /" + b"a" * (MAX_REQUEST_LINE - 13) + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
    ),
    bad(
        "request-line-over-limit-incomplete",
        b"GET /" + b"a" * 500,
        414,
        limits=SMALL,
        error_by=40 + 3,
    ),
    # The request line arrives first and is over its own limit; the status must
    # not depend on whether the rest of the head has arrived yet.
    bad(
        "request-line-over-limit-and-head-over-limit",
        b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        limits=SMALL,
    ),
    bad("header-line-over-limit", GET + b"X: " + b"b" * 38 + b"\r\n\r\n", 431, limits=SMALL),
    bad(
        "header-line-over-limit-incomplete",
        GET + b"X: " + b"b" * 500,
        431,
        limits=SMALL,
        error_by=len(GET) + 40 + 3,
    ),
    bad(
        "head-over-limit",
        GET + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 30) for i in range(3)) + b"\r\n",
        431,
        limits={"max_headers_size": 128},
    ),
    bad(
        "head-over-limit-incomplete",
        GET + b"X: y\r\n" * 100,
        431,
        limits={"max_headers_size": 128},
        error_by=128 + 3,
    ),
    # A limit applies to every request of a connection, also one whose header
    # block is byte for byte the one of the request before.
    bad(
        "pipelined-head-over-limit", R1 + LONG_LINE + R1[16:], 431, limits={"max_headers_size": 64}
    ),
    bad(
        "header-count-over-limit", GET + b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431, limits=SMALL
    ),
    bad(
        "header-count-over-default-limit",
        GET + b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADER_COUNT)) + b"\r\n",
        431,
    ),
    bad(
        "trailer-count-over-limit",
        chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n"),
        431,
        limits=SMALL,
    ),
    bad(
        "content-length-over-body-limit",
        post(b"Content-Length: 17\r\n", b"x" * 17),
        413,
        limits=SMALL,
        error_by=len(post(b"Content-Length: 17\r\n")),
    ),
    bad(
        "content-length-over-default-body-limit",
        post(b"Content-Length: %d\r\n" % ((1 << 20) + 1)),
        413,
    ),
    bad(
        "chunked-over-body-limit",
        chunked(b"a\r\n" + b"x" * 10 + b"\r\na\r\n" + b"y" * 10 + b"\r\n0\r\n\r\n"),
        413,
        limits=SMALL,
        # as soon as the second chunk-size line says the total is 20 bytes
        error_by=len(chunked(b"a\r\n" + b"x" * 10 + b"\r\na\r\n")),
    ),
    bad(
        "chunked-one-byte-over-body-limit",
        chunked(b"8\r\n" + b"x" * 8 + b"\r\n9\r\n" + b"y" * 9 + b"\r\n0\r\n\r\n"),
        413,
        limits=SMALL,
    ),
    bad(
        "chunked-one-huge-chunk",
        chunked(b"100000\r\n" + b"x" * 200),
        413,
        limits=SMALL,
        error_by=len(chunked(b"100000\r\n")),
    ),
    bad(
        "chunk-count-over-limit",
        chunked(b"1\r\na\r\n" * 4 + b"0\r\n\r\n"),
        413,
        limits={"max_chunk_count": 3},
        # as soon as the fourth chunk-size line is complete
        error_by=len(chunked(b"1\r\na\r\n" * 3 + b"1\r\n")),
    ),
    bad(
        "chunk-extensions-over-limit",
        chunked(b"1;ab\r\na\r\n1 ;c=de\r\nb\r\n0\r\n\r\n"),
        413,
        limits={"max_chunk_extensions": 8},
        error_by=len(chunked(b"1;ab\r\na\r\n1 ;c=de\r\n")),
    ),
    bad(
        "last-chunk-extensions-over-limit",
        chunked(b"1;ab\r\na\r\n0;cdefgh\r\n\r\n"),
        413,
        limits={"max_chunk_extensions": 8},
    ),
    bad(
        "trailer-section-over-limit",
        chunked(b"0\r\nA: " + b"1" * 27 + b"\r\nB: " + b"2" * 28 + b"\r\n\r\n"),
        431,
        limits={"max_headers_size": 64},
    ),
    bad(
        # Nine lines under MAX_HEADER_LINE make a section over MAX_HEADERS_SIZE (64 KiB).
        "trailer-section-over-default-limit",
        chunked(b"0\r\n" + b"".join(b"T%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))),
        431,
        error_by=len(chunked(b"0\r\n")) + MAX_HEADERS_SIZE + 1,
    ),
    # -- EOF in the middle of a request --
    bad("eof-in-request-line", b"GET / HT", eof=True),
    bad("eof-in-head", GET, eof=True),
    bad("eof-after-lone-cr", b"\r", eof=True),
    bad("eof-in-content-length-body", post(b"Content-Length: 10\r\n", b"hello"), eof=True),
    bad("eof-in-chunk-size", chunked(b"5"), eof=True),
    bad("eof-in-chunk-data", chunked(b"5\r\nhel"), eof=True),
    bad("eof-before-chunk-crlf", chunked(b"5\r\nhello"), eof=True),
    bad("eof-before-last-chunk", chunked(b"5\r\nhello\r\n"), eof=True),
    bad("eof-in-trailers", chunked(b"0\r\nX: y\r\n"), eof=True),
    bad("eof-before-final-crlf", chunked(b"0\r\n"), eof=True),
]


@pytest.mark.parametrize("make_parser", PARSER_FACTORIES)
@pytest.mark.parametrize(("case", "mode"), _runs(REJECTED))
def test_rejected(case: Bad, mode: Mode, make_parser: Any) -> None:
    exc, fed = parse_error(make_parser(**case.limits), case.data, mode, eof=case.eof)
    assert exc.status_hint == case.status
    if case.status in (413, 414, 431):
        assert type(exc) is LimitExceeded
    else:
        assert type(exc) is RemoteProtocolError
    assert exc.close  # the framing can no longer be trusted
    if mode == "bytewise" and case.error_by is not None:
        assert fed <= case.error_by


# -- limits: the boundary does not move with the segmentation ------------------------


def _outcome(make_parser: Any, data: bytes, mode: Mode, limits: dict[str, Any]) -> object:
    parser = make_parser(**limits)
    try:
        result = parse_stream(parser, data, mode)
    except RemoteProtocolError as exc:
        return (type(exc), exc.status_hint)
    return [head_summary(head) for head, _, _ in result.requests]


def _head_of_size(n: int) -> bytes:
    """A complete head whose request line and header lines (with their CRLFs) are n bytes."""
    filler = n - len(GET) - len(b"X: \r\n")
    return GET + b"X: " + b"v" * filler + b"\r\n" + b"\r\n"


def _request_line_of_size(n: int) -> bytes:
    return b"GET /" + b"a" * (n - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\n" + HOST + b"\r\n"


def _header_line_of_size(n: int) -> bytes:
    return GET + b"X: " + b"b" * (n - 3) + b"\r\n\r\n"


def _trailers_of_size(n: int) -> bytes:
    """A chunked request whose trailer lines (with their CRLFs) are n bytes."""
    first = b"A: " + b"a" * 20 + b"\r\n"
    return chunked(b"0\r\n" + first + b"B: " + b"b" * (n - len(first) - 5) + b"\r\n\r\n")


@pytest.mark.parametrize("make_parser", PARSER_FACTORIES)
@pytest.mark.parametrize(
    ("build", "limit_name", "status"),
    [
        pytest.param(_head_of_size, "max_headers_size", 431, id="head"),
        pytest.param(_request_line_of_size, "max_request_line", 414, id="request-line"),
        pytest.param(_header_line_of_size, "max_header_line", 431, id="header-line"),
        pytest.param(_trailers_of_size, "max_headers_size", 431, id="trailer-section"),
    ],
)
def test_limit_boundary_is_the_same_whichever_way_bytes_arrive(
    build: Any, limit_name: str, status: int, make_parser: Any
) -> None:
    limit = 64
    limits = {"max_request_line": 1000, "max_header_line": 1000, "max_headers_size": 1000}
    limits[limit_name] = limit
    for size in range(limit - 4, limit + 5):
        data = build(size)
        outcomes = {mode: _outcome(make_parser, data, mode, limits) for mode in MODES}
        assert outcomes["bytewise"] == outcomes["whole"], f"size {size}"
        assert outcomes["trailing"] == outcomes["whole"], f"size {size}"
        if size <= limit - 2:
            assert isinstance(outcomes["whole"], list), f"size {size}"
        if size > limit + 2:
            assert outcomes["whole"] == (LimitExceeded, status), f"size {size}"


def test_request_and_header_line_limits_exclude_the_line_end() -> None:
    # MAX_REQUEST_LINE: "Longest request line accepted (bytes, without the line end)".
    for make_parser in (RequestParser, _py_fast_path_parser, _general_path_parser):
        for mode in MODES:
            assert isinstance(
                _outcome(make_parser, _request_line_of_size(64), mode, {"max_request_line": 64}),
                list,
            )
            assert _outcome(
                make_parser, _request_line_of_size(65), mode, {"max_request_line": 64}
            ) == (LimitExceeded, 414)
            assert isinstance(
                _outcome(make_parser, _header_line_of_size(64), mode, {"max_header_line": 64}),
                list,
            )
            assert _outcome(
                make_parser, _header_line_of_size(65), mode, {"max_header_line": 64}
            ) == (LimitExceeded, 431)


def test_no_body_limit() -> None:
    parser = RequestParser(max_body_size=None)
    parser.feed(post(b"Content-Length: %d\r\n" % 10**12, b"x" * 10))
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert head.content_length == 10**12
    assert parser.next_event() == Data(b"x" * 10)
    assert parser.next_event() is NEED_DATA


def test_chunk_count_limit_holds_without_a_body_limit() -> None:
    # MAX_CHUNK_COUNT bounds the work of one body even when max_body_size is None.
    parser = RequestParser(max_body_size=None)
    parser.feed(chunked(b"1\r\nx\r\n" * (MAX_CHUNK_COUNT + 1) + b"0\r\n\r\n"))
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == Data(b"x" * MAX_CHUNK_COUNT)
    with pytest.raises(LimitExceeded) as info:
        parser.next_event()
    assert info.value.status_hint == 413


def test_small_chunks_come_out_in_buffer_sized_pieces() -> None:
    # One Data event per call for all the chunks the buffer holds, however small they are.
    body = bytes(range(256)) * 40
    wire = b"".join(b"2\r\n" + body[i : i + 2] + b"\r\n" for i in range(0, len(body), 2))
    parser = RequestParser()
    parser.feed(chunked(wire[: len(wire) // 2]))
    assert isinstance(parser.next_event(), RequestHead)
    first = parser.next_event()
    assert isinstance(first, Data)
    assert parser.next_event() is NEED_DATA
    parser.feed(wire[len(wire) // 2 :] + b"0\r\n\r\n")
    second = parser.next_event()
    assert isinstance(second, Data)
    assert first.data + second.data == body
    assert parser.next_event() == EndOfMessage()


def test_data_before_an_error_is_returned_first() -> None:
    # The events before a refusal do not depend on how the bytes were cut.
    parser = RequestParser()
    parser.feed(chunked(b"3\r\nabc\r\n2\r\nde\r\nzz\r\n"))
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == Data(b"abcde")
    with pytest.raises(RemoteProtocolError, match="invalid chunk-size line"):
        parser.next_event()


# -- the event interface ---------------------------------------------------------


def test_events_of_a_chunked_request() -> None:
    parser = RequestParser()
    parser.feed(chunked(b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n") + b"GET")
    events = get_all_events(parser)
    assert isinstance(events[0], RequestHead)
    # The data of every chunk already received comes as one Data event.
    assert events[1:] == [Data(b"abcde"), EndOfMessage(((b"x-t", b"1"),))]
    assert parser.next_event() is PAUSED
    assert parser.trailing_data == b"GET"  # nothing of the next request is consumed
    parser.start_next_cycle()
    assert parser.head is None
    assert parser.next_event() is NEED_DATA
    assert parser.trailing_data == b"GET"


def test_body_arrives_as_it_is_fed() -> None:
    # A body is streamed, never buffered until complete.
    parser = RequestParser()
    parser.feed(post(b"Content-Length: 10\r\n", b"abc"))
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == Data(b"abc")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"defghij!")
    assert parser.next_event() == Data(b"defghij")
    assert parser.next_event() == EndOfMessage()
    assert parser.trailing_data == b"!"


def test_start_next_cycle_only_after_a_complete_request() -> None:
    parser = RequestParser()
    with pytest.raises(LocalProtocolError):
        parser.start_next_cycle()
    parser.feed(post(b"Content-Length: 2\r\n", b"o"))
    assert isinstance(parser.next_event(), RequestHead)
    with pytest.raises(LocalProtocolError):
        parser.start_next_cycle()


def test_feed_after_eof_is_refused() -> None:
    parser = RequestParser()
    parser.feed_eof()
    assert parser.their_eof
    with pytest.raises(LocalProtocolError):
        parser.feed(b"GET")
    assert parser.next_event() is CLOSED


def test_empty_feed_is_ignored() -> None:
    parser = RequestParser()
    parser.feed(b"")
    assert parser.next_event() is NEED_DATA
    parser.feed(GET)
    parser.feed(b"")
    parser.feed(b"\r\n")
    assert isinstance(parser.next_event(), RequestHead)


def test_error_is_sticky_even_when_valid_bytes_follow() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        parser.next_event()
    parser.feed(GET + b"\r\n")
    for _ in range(3):
        with pytest.raises(RemoteProtocolError):
            parser.next_event()


def test_feeder_bytewise_reaches_every_split_point() -> None:
    # The helper itself: bytewise really feeds one byte at a time.
    parser = RequestParser()
    feeder = Feeder(parser, GET + b"\r\n", "bytewise")
    head, body, trailers = parse_request(feeder)
    assert feeder.fed == len(GET) + 2
    assert (head.path, body, trailers) == ("/", b"", ())


# -- Headers ------------------------------------------------------------------------

HEADERS_REQUEST = (
    b"GET / HTTP/1.1\r\n"
    b"Host: a\r\n"
    b"Accept: text/html\r\n"
    b"X-Dup: one\r\n"
    b"ACCEPT: application/json\r\n"
    b"x-dup: two, three\r\n"
    b"X-Latin: caf\xe9\r\n"
    b"\r\n"
)


@pytest.fixture(params=PARSER_FACTORIES)
def headers(request: pytest.FixtureRequest) -> Headers:
    parser = request.param()
    parser.feed(HEADERS_REQUEST)
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    return head.headers


def test_headers_case_insensitive_get(headers: Headers) -> None:
    assert headers["host"] == headers["HOST"] == headers["Host"] == "a"
    assert headers.get("hOsT") == "a"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        headers["missing"]


def test_headers_repeated_fields_joined(headers: Headers) -> None:
    # RFC 9110 §5.3: repeated field lines combine into one comma-separated list.
    assert headers["accept"] == "text/html, application/json"
    assert headers.get("Accept") == "text/html, application/json"
    assert headers["x-dup"] == "one, two, three"


def test_headers_getlist(headers: Headers) -> None:
    assert headers.getlist("ACCEPT") == ["text/html", "application/json"]
    assert headers.getlist("x-dup") == ["one", "two, three"]
    assert headers.getlist("host") == ["a"]
    assert headers.getlist("missing") == []


def test_headers_raw_keeps_case_and_order(headers: Headers) -> None:
    assert headers.raw == [
        (b"Host", b"a"),
        (b"Accept", b"text/html"),
        (b"X-Dup", b"one"),
        (b"ACCEPT", b"application/json"),
        (b"x-dup", b"two, three"),
        (b"X-Latin", b"caf\xe9"),
    ]


def test_headers_container_protocol(headers: Headers) -> None:
    assert "accept" in headers
    assert "X-LATIN" in headers
    assert "missing" not in headers
    untyped: Any = headers
    assert b"host" not in untyped  # names are str
    assert 42 not in untyped
    assert len(headers) == 4
    assert list(headers) == ["host", "accept", "x-dup", "x-latin"]
    assert dict(headers) == {
        "host": "a",
        "accept": "text/html, application/json",
        "x-dup": "one, two, three",
        "x-latin": "caf\u00e9",
    }


def test_headers_values_decoded_latin1(headers: Headers) -> None:
    # Every byte survives the round trip.
    assert headers["x-latin"] == "caf\u00e9"
    assert headers["x-latin"].encode("latin-1") == b"caf\xe9"


def test_headers_from_pairs() -> None:
    h = Headers([(b"Content-Type", b"text/plain"), (b"X-Bin", bytes(range(0x80, 0x100)))])
    assert h["content-type"] == "text/plain"
    assert h["x-bin"].encode("latin-1") == bytes(range(0x80, 0x100))
    assert h == Headers([(b"Content-Type", b"text/plain"), (b"X-Bin", bytes(range(0x80, 0x100)))])
    assert len(Headers()) == 0


# -- RequestHead's derived properties ----------------------------------------------


def _head(target: bytes, extra: bytes = b"", make_parser: Any = RequestParser) -> RequestHead:
    parser = make_parser()
    parser.feed(b"GET " + target + b" HTTP/1.1\r\n" + HOST + extra + b"\r\n")
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    return head


PROPERTIES = ("path", "raw_path", "raw_query", "query", "authority")


@pytest.mark.parametrize("make_parser", PARSER_FACTORIES)
@pytest.mark.parametrize("first", PROPERTIES)
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/", ("/", b"/", b"", [], None)),
        (b"/a/../b?x=1&y=", ("/b", b"/a/../b", b"x=1&y=", [("x", "1"), ("y", "")], None)),
        (b"/s%20p?q=a+b%2Bc", ("/s p", b"/s%20p", b"q=a+b%2Bc", [("q", "a b+c")], None)),
        (
            b"/p?a&b=&=c&d=1=2",
            ("/p", b"/p", b"a&b=&=c&d=1=2", [("a", ""), ("b", ""), ("", "c"), ("d", "1=2")], None),
        ),
        (b"http://h:1/x?y", ("/x", b"/x", b"y", [("y", "")], b"h:1")),
    ],
)
def test_request_head_properties(
    target: bytes, expected: tuple[Any, ...], first: str, make_parser: Any
) -> None:
    # Whichever property is read first, all of them come out right.
    head = _head(target, make_parser=make_parser)
    getattr(head, first)
    assert tuple(getattr(head, name) for name in PROPERTIES) == expected
    assert tuple(getattr(head, name) for name in PROPERTIES) == expected  # stable


def test_request_head_path_is_computed_lazily() -> None:
    # Built without a pre-split target, nothing is decoded until asked for:
    # an undecodable path only fails on access.
    head = RequestHead(
        "GET", b"/a%2Fb?x=1", "1.1", Headers([]), b"h", True, None, False, None, False
    )
    assert head.target == b"/a%2Fb?x=1"
    with pytest.raises(RemoteProtocolError):
        _ = head.path


@pytest.mark.parametrize(
    ("extra", "has_body"),
    [
        (b"", False),
        (b"Content-Length: 0\r\n", False),
        (b"Content-Length: 1\r\n", True),
        (b"Transfer-Encoding: chunked\r\n", True),
    ],
)
def test_request_head_has_body(extra: bytes, has_body: bool) -> None:
    assert _head(b"/", extra).has_body is has_body


def test_request_head_query_each_access_is_fresh() -> None:
    head = _head(b"/?a=1")
    first = head.query
    first.append(("tampered", ""))
    assert head.query == [("a", "1")]
