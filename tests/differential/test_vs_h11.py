"""Differential tests: the same bytes into peregrine's RequestParser and into h11.

The property (STYLE.md, "Tests"): fed the same bytes, cut at the same places,
both parsers produce the same requests, or both reject at the same request.
A peregrine rejection is always a :class:`RemoteProtocolError`; anything else
escaping the parser is a bug (the websockets fuzz oracle).

h11 is driven the way a server drives it: after each request's
``EndOfMessage`` a response is sent (404, so that neither an Upgrade nor a
CONNECT is accepted) and ``start_next_cycle()`` is called; when h11 would
close the connection instead (``Connection: close``, any HTTP/1.0 request) the
comparison stops after that request.  peregrine's parser leaves that decision
to the server and reads on.

peregrine deliberately differs from h11 where RFC 9112 (or RFC 9110) is
stricter or explicit.  When the parsers disagree, the generic property asks
:func:`refused_by_peregrine` / :func:`accepted_by_peregrine_only` whether one
of those places is present in the request where they part, judged from
independent evidence (what h11 parsed, the raw bytes, RFC grammar written here
afresh), never from peregrine's error message.  Each difference also has its
own named test, ``test_a_...`` to ``test_o_...``, pinning down exactly what
each parser does.  The limits h11 does not have (the body size, the number of
chunks and their extension bytes, the size of the trailer section) are lifted
for the properties; ``test_p_...`` to ``test_r_...`` show each one at its
default.  Differences (i) and (j) only show before the end of input:
at EOF h11 refuses too, so the property sees agreement.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from peregrine_rt._http import (
    MAX_CHUNK_COUNT,
    MAX_CHUNK_EXTENSIONS,
    MAX_HEADERS_SIZE,
    RequestParser,
)
from peregrine_rt.exceptions import LimitExceeded, RemoteProtocolError

from .strategies import (
    ExpectedRequest,
    Fields,
    GeneratedRequests,
    PeregrineRequest,
    PeregrineRun,
    mutated_requests,
    normalise_fields,
    pieces,
    request_sequences,
    run_peregrine,
)

# -- driving h11 ----------------------------------------------------------------


@dataclass
class H11Request:
    """One complete request as h11 parsed it, with where it lay in the stream."""

    method: str
    target: bytes
    http_version: str
    headers: Fields
    body: bytes
    trailers: Fields
    start: int
    head_end: int
    end: int
    waiting_for_100_continue: bool
    reusable: bool = False
    """Whether h11 went back to IDLE after our response (keep-alive)."""


@dataclass
class H11Run:
    requests: list[H11Request] = field(default_factory=list)
    error: h11.RemoteProtocolError | None = None
    stopped: bool = False
    """h11 would close the connection after the last request (not reusable)."""
    closed: bool = False
    """h11 reported ConnectionClosed after the EOF."""


def run_h11(chunks: Sequence[bytes], *, eof: bool = True) -> H11Run:
    """Feed ``chunks`` into a server-side h11 connection, answering every request."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 30)
    run = H11Run()
    fed = start = head_end = 0
    request: h11.Request | None = None
    waiting_for_100 = False
    body = bytearray()

    def pump() -> bool:
        nonlocal start, head_end, body, request, waiting_for_100
        while True:
            try:
                ev = conn.next_event()
            except h11.RemoteProtocolError as exc:
                run.error = exc
                return False
            consumed = fed - len(conn.trailing_data[0])
            if ev is h11.NEED_DATA:
                return True
            if isinstance(ev, h11.Request):
                request, waiting_for_100 = ev, conn.client_is_waiting_for_100_continue
                head_end, body = consumed, bytearray()
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert request is not None
                req = H11Request(
                    method=request.method.decode("ascii"),
                    target=bytes(request.target),
                    http_version=request.http_version.decode("ascii"),
                    headers=tuple((bytes(n), bytes(v)) for n, v in request.headers),
                    body=bytes(body),
                    trailers=tuple((bytes(n), bytes(v)) for n, v in ev.headers),
                    start=start,
                    head_end=head_end,
                    end=consumed,
                    waiting_for_100_continue=waiting_for_100,
                )
                run.requests.append(req)
                # Answer as a server does, refusing any Upgrade or CONNECT.
                conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                req.reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                if not req.reusable:
                    run.stopped = True
                    return False
                conn.start_next_cycle()
                start = consumed
            else:
                assert isinstance(ev, h11.ConnectionClosed), ev
                run.closed = True
                return False

    for chunk in chunks:
        conn.receive_data(chunk)
        fed += len(chunk)
        if not pump():
            break
    else:
        if eof:
            conn.receive_data(b"")
            pump()
    return run


def parser(speedups: bool = True) -> RequestParser:
    """A parser whose size limits cannot interfere with the comparison."""
    return RequestParser(
        max_request_line=1 << 20,
        max_header_line=1 << 20,
        max_headers_size=1 << 22,
        max_body_size=None,
        max_chunk_count=1 << 40,
        max_chunk_extensions=1 << 40,
        speedups=speedups,
    )


# The properties run with the fast path in C (where it is built) and in pure Python.
with_speedups = pytest.mark.parametrize("speedups", [True, False], ids=["c", "python"])

# The ways of reading a head, as RequestParser's arguments: the fast path in
# C (where built) and in pure Python, and the general path.
PATHS: tuple[dict[str, Any], ...] = ({}, {"speedups": False}, {"fast_path": False})


# -- one normal form for both ------------------------------------------------------

View = tuple[str, bytes, str, Fields, bytes, Fields]


def peregrine_view(req: PeregrineRequest) -> View:
    head = req.head
    return (
        head.method,
        head.target,
        head.http_version,
        normalise_fields(head.headers.raw),
        req.body,
        normalise_fields(req.trailers),
    )


def h11_view(req: H11Request) -> View:
    return (req.method, req.target, req.http_version, req.headers, req.body, req.trailers)


def expected_view(req: ExpectedRequest) -> View:
    return (req.method, req.target, req.http_version, req.headers, req.body, req.trailers)


def _values(fields: Fields, name: bytes) -> list[bytes]:
    return [v for n, v in fields if n == name]


def check_semantics(p: PeregrineRequest, h: H11Request) -> None:
    """What peregrine derived from a request agrees with what h11 made of it."""
    h11_headers = h.headers
    hosts = _values(h11_headers, b"host")
    assert p.head.host == (hosts[0].lower() if hosts else None)
    lengths = _values(h11_headers, b"content-length")
    chunked = bool(_values(h11_headers, b"transfer-encoding"))
    assert p.head.chunked == chunked
    assert p.head.content_length == (int(lengths[0]) if lengths and not chunked else None)
    if h.http_version == "1.1":
        assert p.head.keep_alive == h.reusable
    # An Expect list ("100-continue, foo") is test_bug_expect_list_with_100_continue.
    if not any(b"," in v for v in _values(h11_headers, b"expect")):
        assert p.head.expect_continue == h.waiting_for_100_continue


# -- RFC checkers used as evidence for the known differences ---------------------

_PCT = rb"%[0-9A-Fa-f]{2}"
_UNRESERVED = rb"[A-Za-z0-9\-._~]"
_SUB_DELIMS = rb"[!$&'()*+,;=]"
_PCHAR = rb"(?:" + _UNRESERVED + rb"|" + _PCT + rb"|" + _SUB_DELIMS + rb"|[:@])"
_REG_NAME = rb"(?:" + _UNRESERVED + rb"|" + _PCT + rb"|" + _SUB_DELIMS + rb")*"
_HOST_PORT_RE = re.compile(rb"(?:\[(?P<literal>[^\]]*)\]|" + _REG_NAME + rb")(?P<port>:[0-9]*)?")
_IPVFUTURE_RE = re.compile(rb"v[0-9A-Fa-f]+\.(?:" + _UNRESERVED + rb"|" + _SUB_DELIMS + rb"|:)+")
_QUERY = rb"(?:\?(?:" + _PCHAR + rb"|[/?])*)?"
_ORIGIN_FORM_RE = re.compile(rb"/(?:" + _PCHAR + rb"|/)*" + _QUERY)
_ABSOLUTE_FORM_RE = re.compile(
    rb"[A-Za-z][A-Za-z0-9+\-.]*://(?P<authority>[^/?#]*)(?P<path>(?:/(?:"
    + _PCHAR
    + rb"|/)*)?)"
    + _QUERY
)


def rfc_host_ok(value: bytes, *, port_required: bool = False) -> bool:
    """RFC 3986 §3.2.2 host [ ":" port ], written independently of peregrine's grammar."""
    m = _HOST_PORT_RE.fullmatch(value)
    if m is None or (port_required and m.group("port") is None):
        return False
    literal = m.group("literal")
    if literal is None or _IPVFUTURE_RE.fullmatch(literal):
        return True
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return b"%" not in literal  # a zone identifier is RFC 6874, not RFC 3986


def rfc_target_ok(method: str, target: bytes) -> bool:
    """RFC 9112 §3.2: the request-target form ``method`` allows.

    The absolute-form is checked as a URI with an authority (``scheme://``),
    which is what an HTTP server can route.
    """
    if method == "CONNECT":  # RFC 9110 §9.3.6: an empty or invalid port is refused
        return rfc_host_ok(target, port_required=True) and target[-1:].isdigit()
    if target == b"*":
        return method == "OPTIONS"
    if _ORIGIN_FORM_RE.fullmatch(target):
        return True
    m = _ABSOLUTE_FORM_RE.fullmatch(target)
    if m is None:
        return False
    host_port = m.group("authority").rpartition(b"@")[2]
    # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
    return rfc_host_ok(host_port) and not host_port.startswith(b":") and host_port != b""


def target_path(target: bytes) -> bytes:
    m = _ABSOLUTE_FORM_RE.fullmatch(target)
    return m.group("path") if m else target.partition(b"?")[0]


def path_decoding_refused(target: bytes) -> bool:
    """Whether a path segment decodes to "/" or NUL, or the path is not UTF-8 once decoded."""
    for segment in target_path(target).split(b"/"):
        decoded = unquote_to_bytes(segment)
        if b"/" in decoded or b"\x00" in decoded:
            return True
        try:
            decoded.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def chunked_framing(body: bytes) -> tuple[list[bytes], bytes]:
    """The chunk-size lines and the trailer section of a chunked body (lenient, never raises)."""
    lines: list[bytes] = []
    pos = 0
    while (eol := body.find(b"\r\n", pos)) >= 0:
        line = body[pos:eol]
        lines.append(line)
        m = re.match(rb"[0-9A-Fa-f]+", line)
        pos = eol + 2
        if m is None or int(m.group(), 16) == 0:
            return lines, body[pos:]
        pos += int(m.group(), 16) + 2
    return lines, b""


def refused_by_peregrine(data: bytes, h: H11Request) -> list[str]:
    """Known differences in a request h11 accepted (judged from its parse and the bytes)."""
    labels = []
    names = {n for n, _ in h.headers}
    if {b"content-length", b"transfer-encoding"} <= names:
        labels.append("(a) Content-Length with Transfer-Encoding")
    hosts = _values(h.headers, b"host")
    if len(hosts) == 1 and not rfc_host_ok(hosts[0]):
        labels.append("(b) invalid Host")
    if h.http_version not in ("1.0", "1.1"):
        labels.append("(c) HTTP version")
    head = data[h.start : h.head_end]
    chunk_lines, trailer_section = chunked_framing(data[h.head_end : h.end])
    if b"transfer-encoding" not in names:
        chunk_lines, trailer_section = [], b""
    if re.search(rb"\n[ \t]", head) or re.match(rb"[ \t]|.*\n[ \t]", trailer_section, re.S):
        labels.append("(d) obs-fold")
    if h.http_version == "1.0" and b"transfer-encoding" in names:
        labels.append("(e) Transfer-Encoding in HTTP/1.0")
    if any(_CTL.search(v) for _, v in h.headers + h.trailers):
        labels.append("(f) control byte in a field value")
    if not rfc_target_ok(h.method, h.target):
        labels.append("(h) request-target form")
    if path_decoding_refused(h.target):
        labels.append("(k) encoded slash, NUL or non-UTF-8 in the path")
    m = _ABSOLUTE_FORM_RE.fullmatch(h.target)
    if m and b"@" in m.group("authority"):
        labels.append("(l) userinfo in the target")
    if any(_CTL.search(line) for line in chunk_lines):
        labels.append("(m) control byte in a chunk extension")
    return labels


def accepted_by_peregrine_only(data: bytes, p: PeregrineRequest | None, start: int) -> list[str]:
    """Known differences that make h11 refuse what peregrine accepts."""
    labels = []
    if data[start : start + 1] in (b"\r", b"\n"):
        labels.append("(g) empty lines before the request line")
    if p is not None:
        chunk_lines, _ = chunked_framing(data[p.head_end : p.end]) if p.head.chunked else ([], b"")
        if any(re.match(rb"[0-9A-Fa-f]+[ \t]+;", line) for line in chunk_lines):
            labels.append("(n) whitespace before a chunk extension")
        if {n for n, _ in p.trailers} & {b"content-length", b"transfer-encoding"}:
            labels.append("(o) framing field in the trailers")
    return labels


def compare(data: bytes, p: PeregrineRun, h: H11Run) -> str | None:
    """Assert that both parsers agree, or differ in a known way; return that way's name."""
    if p.error is not None and not isinstance(p.error, RemoteProtocolError):
        raise AssertionError(f"peregrine raised {p.error!r}, not a RemoteProtocolError") from (
            p.error
        )
    pv = [peregrine_view(r) for r in p.requests]
    hv = [h11_view(r) for r in h.requests]
    if h.stopped:  # compare up to where h11 would close the connection
        agree = pv[: len(hv)] == hv
    else:
        agree = pv == hv and (p.error is None) == (h.error is None)
    for pr, hr in zip(p.requests, h.requests, strict=False):
        if peregrine_view(pr) != h11_view(hr):
            break
        check_semantics(pr, hr)
    if agree:
        return None
    k = next((i for i, (a, b) in enumerate(zip(pv, hv, strict=False)) if a != b), None)
    k = min(len(pv), len(hv)) if k is None else k
    start = p.requests[k - 1].end if k else 0
    p_req = p.requests[k] if k < len(p.requests) else None
    h_req = h.requests[k] if k < len(h.requests) else None
    if p_req is None and h_req is not None:
        labels = refused_by_peregrine(data, h_req)
    elif p_req is not None and h_req is None:
        labels = accepted_by_peregrine_only(data, p_req, start)
    elif p_req is None and h_req is None and p.closed and h.error is not None:
        labels = accepted_by_peregrine_only(data, None, start)
    else:
        labels = []
    assert labels, (
        f"unexplained difference at request {k}:\n"
        f"  peregrine: {pv[k : k + 1]} error={p.error!r}\n"
        f"  h11:       {hv[k : k + 1]} error={h.error!r}"
    )
    return labels[0]


# -- the properties ---------------------------------------------------------------


@with_speedups
@given(generated=request_sequences(), data=st.data())
def test_valid_requests_are_accepted_by_both(
    generated: GeneratedRequests, data: st.DataObject, speedups: bool
) -> None:
    chunks = data.draw(pieces(generated.data), label="pieces")
    p = run_peregrine(parser(speedups), chunks)
    h = run_h11(chunks)
    assert p.error is None, f"peregrine refused a valid request: {p.error!r}"
    assert p.closed and not p.leftover
    expected = [expected_view(r) for r in generated.requests]
    assert [peregrine_view(r) for r in p.requests] == expected
    assert h.error is None, f"h11 refused a generated request: {h.error!r}"
    assert [h11_view(r) for r in h.requests] == expected
    for got, want in zip(p.requests, generated.requests, strict=True):
        head = got.head
        assert head.host == want.host
        assert head.keep_alive == want.keep_alive
        assert head.content_length == want.content_length
        assert head.chunked == want.chunked
        assert head.upgrade == want.upgrade
        assert head.expect_continue == want.expect_continue
        assert isinstance(head.path, str)  # computed on first use; must not raise
    assert compare(generated.data, p, h) is None


@with_speedups
@given(raw=mutated_requests(), data=st.data())
def test_mutated_requests_agree_or_differ_as_documented(
    raw: bytes, data: st.DataObject, speedups: bool
) -> None:
    chunks = data.draw(pieces(raw), label="pieces")
    p, h = run_peregrine(parser(speedups), chunks), run_h11(chunks)
    label = compare(raw, p, h)
    event(label or ("agree: refused" if p.error else "agree: accepted"))


# -- the documented differences, one by one ------------------------------------------


def peregrine_error(data: bytes, *, eof: bool = True) -> RemoteProtocolError:
    """The error peregrine raises for ``data``, the same whole and byte by byte, on every path."""
    errors = []
    for options in PATHS:
        for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
            run = run_peregrine(RequestParser(**options), chunks, eof=eof)
            assert isinstance(run.error, RemoteProtocolError), run.error
            errors.append(run.error)
    assert len({(type(e), e.status_hint) for e in errors}) == 1, errors
    return errors[0]


def peregrine_accepts(data: bytes) -> list[PeregrineRequest]:
    runs = []
    for options in PATHS:
        for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
            run = run_peregrine(RequestParser(**options), chunks)
            assert run.error is None, run.error
            assert run.closed
            runs.append([peregrine_view(r) for r in run.requests])
    assert all(r == runs[0] for r in runs), runs
    return run.requests


def h11_accepts(data: bytes) -> list[H11Request]:
    run = run_h11([data])
    assert run.error is None, run.error
    return run.requests


def h11_error(data: bytes) -> h11.RemoteProtocolError:
    run = run_h11([data])
    assert run.error is not None, run.requests
    return run.error


GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n"
CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_content_length_with_transfer_encoding() -> None:
    # RFC 9112 §6.3: "ought to be handled as an error" (request smuggling); h11 lets TE win.
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    data += b"3\r\nabc\r\n0\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.body == b"abc"


@pytest.mark.parametrize(
    "host", [b"a b", b"a/b", b"user@a", b"[::1", b"a:b", b"a\\b", b"[zz::1]x", b"a?b"]
)
def test_b_invalid_host_value(host: bytes) -> None:
    # RFC 9112 §3.2: a Host with an invalid field value MUST get 400; h11 does not check it.
    data = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    assert not rfc_host_ok(host)
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert _values(req.headers, b"host") == [host]


@pytest.mark.parametrize("second", [b"a", b"b", b"A"])
def test_b_more_than_one_host_both_reject(second: bytes) -> None:
    # RFC 9112 §3.2: more than one Host line MUST get 400.  h11 agrees.
    data = b"GET / HTTP/1.1\r\nHost: a\r\nHost: " + second + b"\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    assert "multiple Host" in str(h11_error(data))


@pytest.mark.parametrize("version", [b"2.0", b"1.2", b"0.9", b"3.7"])
def test_c_unsupported_http_version(version: bytes) -> None:
    # RFC 9110 §15.6.6: 505 for a major version the server does not support; h11 takes any x.y.
    data = b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n"
    assert peregrine_error(data).status_hint == 505
    (req,) = h11_accepts(data)
    assert req.http_version == version.decode()


@pytest.mark.parametrize("fold", [b" ", b"\t", b"   "])
def test_d_obs_fold(fold: bytes) -> None:
    # RFC 9112 §5.2: a server MUST reject obs-fold (400) or replace it; h11 unfolds.
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n" + fold + b"two\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert _values(req.headers, b"x-long") == [b"one two"]


def test_d_obs_fold_in_trailers() -> None:
    data = CHUNKED_POST + b"0\r\nX-T: one\r\n two\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.trailers == ((b"x-t", b"one two"),)


def test_e_transfer_encoding_in_http_1_0() -> None:
    # RFC 9112 §6.1: a Transfer-Encoding in HTTP/1.0 means faulty framing; treat as an error.
    data = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.body == b"abc"


@pytest.mark.parametrize("ctl", [b"\x7f", b"\x01", b"\x08", b"\x1b", b"\x1f"])
def test_f_control_bytes_in_a_field_value(ctl: bytes) -> None:
    # RFC 9110 §5.5: field-vchar is VCHAR / obs-text; h11 only refuses NUL and whitespace controls.
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-C: a" + ctl + b"b\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert _values(req.headers, b"x-c") == [b"a" + ctl + b"b"]


@pytest.mark.parametrize("ctl", [b"\x00", b"\x0b", b"\x0c", b"\r"])
def test_f_nul_vt_ff_cr_in_a_field_value_both_reject(ctl: bytes) -> None:
    data = b"GET / HTTP/1.1\r\nHost: a\r\nX-C: a" + ctl + b"b\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    h11_error(data)


@pytest.mark.parametrize("empty", [b"\r\n", b"\n", b"\r\n\r\n", b"\n\r\n"])
def test_g_empty_lines_before_the_request_line(empty: bytes) -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
    assert [r.head.target for r in peregrine_accepts(empty + GET + b"\r\n")] == [b"/"]
    assert "no request line" in str(h11_error(empty + GET + b"\r\n"))


def test_g_empty_line_after_a_body_before_the_next_request() -> None:
    # The classic client bug RFC 9112 §2.2 is about: a CRLF after a POST body.
    post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
    data = post + b"\r\n" + GET + b"\r\n"
    assert [r.head.method for r in peregrine_accepts(data)] == ["POST", "GET"]
    run = run_h11([data])
    assert [r.method for r in run.requests] == ["POST"]
    assert run.error is not None


@pytest.mark.parametrize(
    "request_line",
    [b"GET * HTTP/1.1", b"GET foo HTTP/1.1", b"GET a:80 HTTP/1.1", b"GET 1http://a/ HTTP/1.1"],
)
def test_h_request_target_forms(request_line: bytes) -> None:
    # RFC 9112 §3.2: "*" is for OPTIONS only, authority-form for CONNECT only; h11 takes any VCHARs.
    data = request_line + b"\r\nHost: a\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.target == request_line.split(b" ")[1]


def test_h_options_asterisk_both_accept() -> None:
    data = b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
    assert [r.head.target for r in peregrine_accepts(data)] == [b"*"]
    assert [r.target for r in h11_accepts(data)] == [b"*"]


def test_i_bare_lf_in_a_chunk_size_line() -> None:
    # RFC 9112 §7.1: chunk lines end in CRLF; peregrine refuses the LF at once, h11 waits for CRLF.
    data = CHUNKED_POST + b"3\nabc"
    assert peregrine_error(data, eof=False).status_hint == 400
    run = run_h11([data], eof=False)
    assert run.error is None and not run.requests  # still waiting: NEED_DATA
    # With a CRLF further on, or at EOF, h11 refuses too.
    assert run_h11([data + b"\r\n0\r\n\r\n"]).error is not None
    assert run_h11([data]).error is not None


def test_i_bare_lf_after_chunk_data_both_reject() -> None:
    data = CHUNKED_POST + b"3\r\nabc\n0\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    assert "chunk footer" in str(h11_error(data))


@pytest.mark.parametrize(
    "size", [b"8000000000000000", b"ffffffffffffffffffff", b"10000000000000000"]
)
def test_j_chunk_size_overflowing_63_bits(size: bytes) -> None:
    data = CHUNKED_POST + size + b"\r\nabc\r\n0\r\n\r\n"
    assert peregrine_error(data, eof=False).status_hint == 400
    # h11 takes the size and reads everything after it as chunk data.
    run = run_h11([data], eof=False)
    assert run.error is None and not run.requests


def test_j_largest_63_bit_chunk_size_is_accepted() -> None:
    run = run_peregrine(
        RequestParser(max_body_size=None), [CHUNKED_POST + b"7fffffffffffffff\r\nab"], eof=False
    )
    assert run.error is None and not run.requests


@pytest.mark.parametrize(
    "target", [b"/a%2Fb", b"/a%2fb", b"/a%00b", b"/%ff", b"/%c3%28", b"http://a/%2F"]
)
def test_k_percent_encoded_slash_nul_or_non_utf8_in_the_path(target: bytes) -> None:
    # An encoded "/" must never become a separator, nor NUL reach a file name (see _target.py).
    data = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.target == target


@pytest.mark.parametrize("target", [b"http://u@a/", b"http://u:p@a/x", b"https://@a"])
def test_l_userinfo_in_an_absolute_form_target(target: bytes) -> None:
    # RFC 9110 §4.2.4: userinfo in an http(s) URI is deprecated and must be treated as an error.
    data = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.target == target


@pytest.mark.parametrize("ext", [b";a\x01", b";a\rb", b";a=\x7f", b";\x1b"])
def test_m_control_bytes_in_a_chunk_extension(ext: bytes) -> None:
    # RFC 9112 §7.1.1: chunk-ext is tokens and quoted-strings; h11 takes anything up to CRLF.
    data = CHUNKED_POST + b"3" + ext + b"\r\nabc\r\n0\r\n\r\n"
    assert peregrine_error(data).status_hint == 400
    (req,) = h11_accepts(data)
    assert req.body == b"abc"


@pytest.mark.parametrize("line", [b"3 ;a", b"3\t;a=b", b"3  ; a"])
def test_n_whitespace_before_a_chunk_extension(line: bytes) -> None:
    # RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS ext-name ...): BWS before ";" is allowed.
    # Here peregrine is the lenient one and h11 refuses.
    data = CHUNKED_POST + line + b"\r\nabc\r\n0\r\n\r\n"
    (req,) = peregrine_accepts(data)
    assert req.body == b"abc"
    assert "chunk header" in str(h11_error(data))


@pytest.mark.parametrize(
    "trailer", [b"Transfer-Encoding: gzip", b"Content-Length: x", b"Content-Length: 1, 2"]
)
def test_o_framing_fields_in_the_trailers(trailer: bytes) -> None:
    # RFC 9110 §6.5.1: a trailer field cannot change the framing, so peregrine reports it as a
    # plain trailer; h11 validates trailers like a header section and refuses these.
    data = CHUNKED_POST + b"0\r\n" + trailer + b"\r\n\r\n"
    (req,) = peregrine_accepts(data)
    name, _, value = trailer.partition(b": ")
    assert req.trailers == ((name.lower(), value),)
    h11_error(data)


def test_p_more_chunks_than_max_chunk_count() -> None:
    # Each chunk costs time whatever its size; h11 takes any number of them.  (Shown with a
    # limit of 1,000 chunks: h11 needs minutes for MAX_CHUNK_COUNT of them; the default is
    # checked in tests/unit/test_http_parser.py and tests/hostile/test_chunked_body.py.)
    data = CHUNKED_POST + b"1\r\nx\r\n" * 1001 + b"0\r\n\r\n"
    run = run_peregrine(RequestParser(max_chunk_count=1000), [data])
    assert isinstance(run.error, LimitExceeded) and run.error.status_hint == 413
    (req,) = h11_accepts(data)
    assert req.body == b"x" * 1001
    assert MAX_CHUNK_COUNT > 1000
    assert [r.body for r in peregrine_accepts(data)] == [b"x" * 1001]  # under the default


def test_q_chunk_extension_bytes_over_max_chunk_extensions() -> None:
    # Extensions carry nothing the server uses; h11 reads and drops any amount of them.
    chunk = b"1;" + b"e" * 4000 + b"\r\nx\r\n"  # each line within MAX_CHUNK_LINE
    lines = MAX_CHUNK_EXTENSIONS // 4001 + 1
    data = CHUNKED_POST + chunk * lines + b"0\r\n\r\n"
    assert peregrine_error(data, eof=False).status_hint == 413
    (req,) = h11_accepts(data)
    assert req.body == b"x" * lines
    # Under the limit, both accept.
    data = CHUNKED_POST + chunk * (lines - 1) + b"0\r\n\r\n"
    assert [r.body for r in peregrine_accepts(data)] == [b"x" * (lines - 1)]


def test_r_trailer_section_over_max_headers_size() -> None:
    # The trailer section has the head's limits; h11 (without its max_incomplete_event_size,
    # as run here) takes any number of trailer bytes.
    trailers = b"".join(b"T%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
    assert len(trailers) > MAX_HEADERS_SIZE
    data = CHUNKED_POST + b"0\r\n" + trailers + b"\r\n"
    assert peregrine_error(data, eof=False).status_hint == 431
    (req,) = h11_accepts(data)
    assert len(req.trailers) == 9


# -- bugs found by these tests (they fail until the parser is fixed) -------------------


@pytest.mark.parametrize("value", [b"100-continue, foo", b"foo, 100-continue", b"100-continue,"])
def test_bug_expect_list_with_100_continue(value: bytes) -> None:
    # RFC 9110 §10.1.1: Expect = #expectation, and a request that contains a 100-continue
    # expectation MUST be answered with 100 or a final status at once.  h11 splits the list;
    # peregrine compares the whole value, so the client is left waiting for a 100.
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: " + value + b"\r\n\r\n"
    (h,) = h11_accepts(data)
    assert h.waiting_for_100_continue
    (p,) = peregrine_accepts(data)
    assert p.head.expect_continue
