"""The response writer: every output is checked against RFC 9112 and parsed back by h11."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import h11
import pytest

from peregrine_rt._http import (
    LAST_CHUNK,
    Data,
    EndOfMessage,
    RequestHead,
    RequestParser,
    date_header_value,
    encode_chunk,
    encode_response,
    encode_response_head,
    may_have_body,
)
from peregrine_rt.exceptions import LocalProtocolError

from ..helpers import get_all_events

# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
STATUS_LINE_RE = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3} [\t \x21-\x7e\x80-\xff]*")
# RFC 9112 §5.1 / RFC 9110 §5.5 (no obs-fold, nothing the writer should produce)
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
FIELD_LINE_RE = re.compile(
    rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+: (?:"
    + _VCHAR
    + rb"(?:[ \t\x21-\x7e\x80-\xff]*"
    + _VCHAR
    + rb")?)?"
)
# RFC 9110 §5.6.7: IMF-fixdate = day-name "," SP date1 SP time-of-day SP GMT
IMF_FIXDATE_RE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    rb"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


@dataclass
class Split:
    status_line: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, Date removed
    dates: list[bytes]
    rest: bytes  # everything after the blank line


def split_response(data: bytes) -> Split:
    """Take a response apart by RFC 9112's grammar, failing on anything malformed."""
    assert isinstance(data, bytes)
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, "no blank line after the head"
    status_line, *lines = head.split(b"\r\n")
    assert STATUS_LINE_RE.fullmatch(status_line), status_line
    headers: list[tuple[bytes, bytes]] = []
    dates: list[bytes] = []
    for line in lines:
        assert FIELD_LINE_RE.fullmatch(line), line
        name, _, value = line.partition(b": ")
        if name.lower() == b"date":
            dates.append(value)
        else:
            headers.append((name.lower(), value))
    return Split(status_line, headers, dates, rest)


def h11_roundtrip(
    data: bytes, method: str, request_headers: list[tuple[str, str]]
) -> tuple[list[Any], Any]:
    """Send a request with an h11 client, feed it ``data`` as the answer, return its events."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "a"), *request_headers]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    events: list[Any] = []
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return events, event
        events.append(event)
        if type(event) is h11.EndOfMessage:
            return events, client.next_event()


# -- successful outputs -----------------------------------------------------------------


@dataclass(frozen=True)
class Out:
    build: Callable[[], bytes]
    status_line: bytes
    headers: list[tuple[bytes, bytes]]  # every header but Date, names lower-cased, any order
    rest: bytes = b""  # the bytes after the head
    body: bytes = b""  # the body as h11 reads it
    method: str = "GET"  # the request the response answers
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    date: bool = True


def out(id: str, build: Callable[[], bytes], status_line: bytes, headers: Any, **kw: Any) -> Any:
    return pytest.param(Out(build, status_line, headers, **kw), id=id)


CL = b"content-length"
CT = (b"content-type", b"text/plain")

OUTPUTS = [
    out(
        "200-with-body",
        lambda: encode_response(200, [(b"Content-Type", b"text/plain")], b"hello"),
        b"HTTP/1.1 200 OK",
        [CT, (CL, b"5")],
        rest=b"hello",
        body=b"hello",
    ),
    out(
        "201",
        lambda: encode_response(201, body=b"{}"),
        b"HTTP/1.1 201 Created",
        [(CL, b"2")],
        rest=b"{}",
        body=b"{}",
    ),
    out(
        "404",
        lambda: encode_response(404, body=b"nope"),
        b"HTTP/1.1 404 Not Found",
        [(CL, b"4")],
        rest=b"nope",
        body=b"nope",
    ),
    out(
        "500-empty-body",
        lambda: encode_response(500),
        b"HTTP/1.1 500 Internal Server Error",
        [(CL, b"0")],
    ),
    # RFC 9112 §4: the SP before the (empty) reason-phrase is still required.
    out(
        "unknown-code-empty-reason",
        lambda: encode_response(599, body=b"x"),
        b"HTTP/1.1 599 ",
        [(CL, b"1")],
        rest=b"x",
        body=b"x",
    ),
    out(
        "unknown-2xx-code",
        lambda: encode_response(299, body=b"x"),
        b"HTTP/1.1 299 ",
        [(CL, b"1")],
        rest=b"x",
        body=b"x",
    ),
    # RFC 9110 §9.3.2: HEAD gets the GET headers (Content-Length too), no content.
    out(
        "head",
        lambda: encode_response(200, [CT], b"hello", method="HEAD"),
        b"HTTP/1.1 200 OK",
        [CT, (CL, b"5")],
        method="HEAD",
    ),
    out(
        "head-404",
        lambda: encode_response(404, body=b"missing", method="HEAD"),
        b"HTTP/1.1 404 Not Found",
        [(CL, b"7")],
        method="HEAD",
    ),
    # RFC 9110 §8.6: no Content-Length in 1xx and 204; RFC 9110 §15.4.5: 304 has no content.
    out("204", lambda: encode_response(204), b"HTTP/1.1 204 No Content", []),
    out(
        "304",
        lambda: encode_response(304, [(b"ETag", b'"abc"')]),
        b"HTTP/1.1 304 Not Modified",
        [(b"etag", b'"abc"')],
    ),
    out(
        "304-to-head",
        lambda: encode_response(304, method="HEAD"),
        b"HTTP/1.1 304 Not Modified",
        [],
        method="HEAD",
    ),
    out(
        "100-continue",
        lambda: encode_response(100),
        b"HTTP/1.1 100 Continue",
        [],
        request_headers=[("Expect", "100-continue")],
    ),
    out(
        "103-early-hints",
        lambda: encode_response(103, [(b"Link", b"</s.css>; rel=preload")]),
        b"HTTP/1.1 103 Early Hints",
        [(b"link", b"</s.css>; rel=preload")],
    ),
    # RFC 9112 §9.3: an HTTP/1.0 connection persists only when keep-alive is said.
    out(
        "http10-keep-alive",
        lambda: encode_response(200, body=b"hi", version="1.0"),
        b"HTTP/1.1 200 OK",  # the server's version (RFC 9110 §2.5); framing as 1.0
        [(CL, b"2"), (b"connection", b"keep-alive")],
        rest=b"hi",
        body=b"hi",
    ),
    out(
        "http10-close",
        lambda: encode_response(200, body=b"hi", version="1.0", keep_alive=False),
        b"HTTP/1.1 200 OK",
        [(CL, b"2"), (b"connection", b"close")],
        rest=b"hi",
        body=b"hi",
    ),
    out(
        "http11-close",
        lambda: encode_response(200, body=b"hi", keep_alive=False),
        b"HTTP/1.1 200 OK",
        [(CL, b"2"), (b"connection", b"close")],
        rest=b"hi",
        body=b"hi",
    ),
    out(
        "http11-204-close",
        lambda: encode_response(204, keep_alive=False),
        b"HTTP/1.1 204 No Content",
        [(b"connection", b"close")],
    ),
    out(
        "no-date",
        lambda: encode_response(200, body=b"hi", date=False),
        b"HTTP/1.1 200 OK",
        [(CL, b"2")],
        rest=b"hi",
        body=b"hi",
        date=False,
    ),
    out(
        "chunked",
        lambda: (
            encode_response_head(200, [CT], chunked=True)
            + encode_chunk(b"hello")
            + encode_chunk(b"")
            + encode_chunk(b" world" * 50)
            + LAST_CHUNK
        ),
        b"HTTP/1.1 200 OK",
        [CT, (b"transfer-encoding", b"chunked")],
        rest=b"5\r\nhello\r\n12c\r\n" + b" world" * 50 + b"\r\n0\r\n\r\n",
        body=b"hello" + b" world" * 50,
    ),
    out(
        "chunked-close",
        lambda: encode_response_head(200, chunked=True, keep_alive=False) + LAST_CHUNK,
        b"HTTP/1.1 200 OK",
        [(b"transfer-encoding", b"chunked"), (b"connection", b"close")],
        rest=b"0\r\n\r\n",
    ),
    out(
        "head-with-content-length",
        lambda: encode_response_head(200, content_length=10) + b"0123456789",
        b"HTTP/1.1 200 OK",
        [(CL, b"10")],
        rest=b"0123456789",
        body=b"0123456789",
    ),
    # RFC 9110 §5.5: HTAB, SP inside and obs-text are valid in a field value.
    out(
        "value-with-tab-and-obs-text",
        lambda: encode_response(200, [(b"X-Name", b"caf\xe9\tau lait")]),
        b"HTTP/1.1 200 OK",
        [(b"x-name", b"caf\xe9\tau lait"), (CL, b"0")],
    ),
    out(
        "repeated-headers",
        lambda: encode_response(200, [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]),
        b"HTTP/1.1 200 OK",
        [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (CL, b"0")],
    ),
]


@pytest.mark.parametrize("case", OUTPUTS)
def test_output(case: Out) -> None:
    data = case.build()
    parts = split_response(data)
    assert parts.status_line == case.status_line
    assert sorted(parts.headers) == sorted(case.headers)
    assert parts.rest == case.rest
    if case.date:
        assert len(parts.dates) == 1
        assert IMF_FIXDATE_RE.fullmatch(parts.dates[0]), parts.dates[0]
    else:
        assert parts.dates == []


@pytest.mark.parametrize("case", OUTPUTS)
def test_output_is_valid_http_for_h11(case: Out) -> None:
    data = case.build()
    events, after = h11_roundtrip(data, case.method, case.request_headers)
    response = events[0]
    status = int(case.status_line.split(b" ")[1])
    if status < 200:
        assert type(response) is h11.InformationalResponse
        assert events[1:] == []
        assert after is h11.NEED_DATA  # the final response is still to come
    else:
        assert type(response) is h11.Response
        assert type(events[-1]) is h11.EndOfMessage
        body = b"".join(bytes(e.data) for e in events[1:-1])
        assert body == case.body
        assert after is h11.PAUSED or after is h11.NEED_DATA
    assert response.status_code == status
    assert response.http_version == case.status_line[5:8]
    assert response.reason == case.status_line.split(b" ", 2)[2]
    assert sorted((n, v) for n, v in response.headers if n != b"date") == sorted(case.headers)


def test_user_headers_keep_their_order_and_case() -> None:
    pairs = [(b"X-B", b"2"), (b"x-a", b"1"), (b"X-B", b"3"), (b"Vary", b"Accept")]
    data = encode_response(200, pairs, date=False)
    head = data.split(b"\r\n\r\n")[0]
    lines = head.split(b"\r\n")[1:]
    assert [line for line in lines if not line.lower().startswith(b"content-length")] == [
        b"X-B: 2",
        b"x-a: 1",
        b"X-B: 3",
        b"Vary: Accept",
    ]


def test_date_is_now() -> None:
    for value in (date_header_value(), split_response(encode_response(200)).dates[0]):
        assert IMF_FIXDATE_RE.fullmatch(value)
        when = parsedate_to_datetime(value.decode()).timestamp()
        assert abs(when - time.time()) < 3


def test_encode_response_is_bytes() -> None:
    assert type(encode_response(200, body=b"x")) is bytes
    assert type(encode_response_head(200)) is bytes


# -- chunks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "framed"),
    [
        (b"a", b"1\r\na\r\n"),
        (b"x" * 15, b"f\r\n" + b"x" * 15 + b"\r\n"),
        (b"x" * 16, b"10\r\n" + b"x" * 16 + b"\r\n"),
        (b"\r\n0\r\n\r\n", b"7\r\n\r\n0\r\n\r\n\r\n"),
        (b"y" * 4096, b"1000\r\n" + b"y" * 4096 + b"\r\n"),
        (b"", b""),  # an empty chunk would end the body: nothing is sent
    ],
)
def test_encode_chunk(data: bytes, framed: bytes) -> None:
    # RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    assert encode_chunk(data).lower() == framed


def test_last_chunk() -> None:
    # RFC 9112 §7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF, then the trailer
    # section (empty here) and the final CRLF.
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_chunks_read_back_by_our_parser() -> None:
    pieces = [b"hello", b"", b"\r\n", b"z" * 1000, b"!"]
    parser = RequestParser()
    parser.feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(encode_chunk(p) for p in pieces)
        + LAST_CHUNK
    )
    events = get_all_events(parser)
    assert isinstance(events[0], RequestHead)
    assert events[-1] == EndOfMessage()
    # The decoder gives what one buffer holds as one Data, whatever the chunks.
    data = events[1:-1]
    assert all(isinstance(e, Data) and e.data for e in data)
    assert b"".join(e.data for e in data) == b"".join(pieces)  # type: ignore[union-attr]
    assert parser.trailing_data == b""


# -- refusals ---------------------------------------------------------------------------

BAD_HEADERS = [
    pytest.param((b"X-Test", b"a\r\nSet-Cookie: evil=1"), id="crlf-in-value"),
    pytest.param((b"X-Test", b"a\rb"), id="cr-in-value"),
    pytest.param((b"X-Test", b"a\nb"), id="lf-in-value"),
    pytest.param((b"X-Test", b"a\x00b"), id="nul-in-value"),
    pytest.param((b"X-Test", b"a\x7fb"), id="del-in-value"),
    pytest.param((b"X-Test", b"a\x01b"), id="soh-in-value"),
    pytest.param((b"X-Test", b"\r\n\r\nHTTP/1.1 200 OK"), id="response-splitting"),
    pytest.param((b"X-Test\r\nEvil", b"1"), id="crlf-in-name"),
    pytest.param((b"X-Test\r", b"1"), id="cr-in-name"),
    pytest.param((b"X\nTest", b"1"), id="lf-in-name"),
    pytest.param((b"X\x00Test", b"1"), id="nul-in-name"),
    pytest.param((b"", b"1"), id="empty-name"),
    pytest.param((b"X Test", b"1"), id="space-in-name"),
    pytest.param((b"X-Test:", b"1"), id="colon-in-name"),
    pytest.param((b"X\tTest", b"1"), id="tab-in-name"),
    pytest.param((b"(X)", b"1"), id="name-not-token"),
    pytest.param((b"caf\xe9", b"1"), id="non-ascii-name"),
    # Framing is the writer's job (the module docstring).
    pytest.param((b"content-length", b"5"), id="content-length"),
    pytest.param((b"Content-Length", b"5"), id="content-length-capitalised"),
    pytest.param((b"TRANSFER-ENCODING", b"chunked"), id="transfer-encoding-upper"),
    pytest.param((b"Transfer-Encoding", b"gzip"), id="transfer-encoding"),
    pytest.param((b"connection", b"close"), id="connection"),
    pytest.param((b"Connection", b"keep-alive"), id="connection-capitalised"),
]


@pytest.mark.parametrize("position", ["alone", "after-valid", "before-valid"])
@pytest.mark.parametrize("bad_header", BAD_HEADERS)
def test_bad_header_refused(bad_header: tuple[bytes, bytes], position: str) -> None:
    valid = (b"X-Ok", b"fine")
    headers = {
        "alone": [bad_header],
        "after-valid": [valid, bad_header],
        "before-valid": [bad_header, valid],
    }[position]
    with pytest.raises(LocalProtocolError):
        encode_response(200, headers, b"body")
    with pytest.raises(LocalProtocolError):
        encode_response_head(200, headers, chunked=True)
    with pytest.raises(LocalProtocolError):
        encode_response(204, headers)


def test_names_that_only_contain_a_reserved_name_are_fine() -> None:
    headers = [(b"X-Content-Length", b"5"), (b"Connection-Id", b"1"), (b"Proxy-Connection", b"x")]
    parts = split_response(encode_response(200, headers, date=False))
    assert sorted(parts.headers) == sorted(
        [
            (b"x-content-length", b"5"),
            (b"connection-id", b"1"),
            (b"proxy-connection", b"x"),
            (CL, b"0"),
        ]
    )


REFUSED: list[Any] = [
    # RFC 9110 §15.2, §15.3.5, §15.4.5: 1xx, 204 and 304 have no content.
    pytest.param(lambda: encode_response(204, body=b"x"), id="body-with-204"),
    pytest.param(lambda: encode_response(304, body=b"x"), id="body-with-304"),
    pytest.param(lambda: encode_response(100, body=b"x"), id="body-with-100"),
    pytest.param(lambda: encode_response(101, body=b"x"), id="body-with-101"),
    pytest.param(
        lambda: encode_response(204, body=b"x", method="HEAD"), id="body-with-204-to-head"
    ),
    # RFC 9110 §15.3.6: "a server MUST NOT generate content in a 205 response".
    pytest.param(lambda: encode_response(205, body=b"x"), id="body-with-205"),
    # RFC 9112 §7: chunked is HTTP/1.1 only.
    pytest.param(
        lambda: encode_response_head(200, version="1.0", chunked=True), id="chunked-http10"
    ),
    pytest.param(
        lambda: encode_response_head(200, chunked=True, content_length=3),
        id="chunked-and-content-length",
    ),
    # RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in
    # any response with a status code of 1xx (Informational) or 204 (No Content)."
    pytest.param(lambda: encode_response_head(204, content_length=0), id="content-length-with-204"),
    pytest.param(lambda: encode_response_head(100, content_length=0), id="content-length-with-100"),
    # RFC 9112 §6.1: "A server MUST NOT send a Transfer-Encoding header field in
    # any response with a status code of 1xx (Informational) or 204 (No Content)."
    pytest.param(lambda: encode_response_head(204, chunked=True), id="chunked-with-204"),
    pytest.param(lambda: encode_response_head(103, chunked=True), id="chunked-with-103"),
    # RFC 9110 §15.2: "A server MUST NOT send a 1xx response to an HTTP/1.0 client."
    pytest.param(lambda: encode_response(100, version="1.0"), id="1xx-to-http10"),
    pytest.param(lambda: encode_response_head(103, version="1.0"), id="1xx-head-to-http10"),
    # RFC 9110 §15: a status code is three digits.
    pytest.param(lambda: encode_response(99), id="status-99"),
    pytest.param(lambda: encode_response(1000), id="status-1000"),
    pytest.param(lambda: encode_response_head(0), id="status-0"),
]


@pytest.mark.parametrize("build", REFUSED)
def test_refused(build: Callable[[], bytes]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        build()
    assert info.value.status_hint == 500  # our fault, not the client's


# -- may_have_body ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (200, "GET", True),
        (200, "POST", True),
        (404, "GET", True),
        (500, "DELETE", True),
        (200, "HEAD", False),
        (404, "HEAD", False),
        (100, "GET", False),
        (101, "GET", False),
        (103, "GET", False),
        (204, "GET", False),
        (304, "GET", False),
    ],
)
def test_may_have_body(status: int, method: str, expected: bool) -> None:
    assert may_have_body(status, method) is expected
    # encode_response agrees: body bytes are sent exactly when may_have_body says so.
    if status >= 200 and status not in (204, 304):
        data = encode_response(status, body=b"abc", method=method, date=False)
        assert data.endswith(b"\r\n\r\nabc") is expected


@pytest.mark.parametrize("status", [200, 201, 205, 404, 500, 204, 304, 101])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_fixed_response_fast_path_matches_encode_response(
    status: int, method: str, version: str, keep_alive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's hot-path encoder writes exactly what encode_response writes."""
    from peregrine_rt._http import _writer, encode_fixed_response

    # One Date for both calls, even if a second boundary falls between them.
    monkeypatch.setattr(_writer, "date_header_value", lambda: b"Thu, 26 Nov 2026 08:00:00 GMT")

    headers = [(b"content-type", b"text/plain"), (b"x-a", b"1")]
    body = b"" if status < 200 or status in (204, 205, 304) else b"hello"

    def call(fn: Any) -> bytes | type[Exception]:
        try:
            return fn()
        except LocalProtocolError:
            return LocalProtocolError

    fast = call(lambda: encode_fixed_response(status, headers, body, method, version, keep_alive))
    slow = call(
        lambda: encode_response(
            status, headers, body, method=method, version=version, keep_alive=keep_alive
        )
    )
    assert fast == slow
