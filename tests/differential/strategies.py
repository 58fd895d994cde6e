"""Hypothesis strategies for the differential tests, and the feeding harness they pair with.

* :func:`request_sequences` builds 1-4 pipelined, *valid* HTTP/1.x requests as
  one byte string, together with what a correct parser must report for each
  (:class:`ExpectedRequest`).  "Valid" means RFC 9112 valid *and* outside the
  places where peregrine deliberately differs from h11 (see
  ``test_vs_h11.py``), so both parsers must accept them and agree.
* :func:`mutated_requests` damages such a byte string the way fuzzers do
  (bytes inserted, deleted or replaced, lines duplicated or dropped, framing
  headers added, versions changed, lines folded), which mostly makes it
  invalid.
* :func:`pieces` cuts a byte string into the chunks a socket might deliver.
* :func:`run_peregrine` feeds chunks into a :class:`RequestParser` and
  records what came out, with the stream offset of every request, so that a
  test can tell exactly which bytes a request was made of.

Header fields are compared in one normal form, :func:`normalise_fields`: names
lower-cased and values without surrounding whitespace (which is what both
parsers report), ``Content-Length`` lines merged the way h11 merges them, and
``Transfer-Encoding`` values lower-cased as h11 does.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise

from hypothesis import strategies as st

from peregrine_rt._http import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    RequestHead,
    RequestParser,
)

__all__ = [
    "COMMON_METHODS",
    "ExpectedRequest",
    "Fields",
    "GeneratedRequests",
    "PeregrineRequest",
    "PeregrineRun",
    "authority_forms",
    "field_values",
    "hosts",
    "mutated_requests",
    "normalise_fields",
    "pieces",
    "request_sequences",
    "requests",
    "run_peregrine",
]

Fields = tuple[tuple[bytes, bytes], ...]

COMMON_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")

# Header names with a meaning for framing or the connection; random names avoid them.
_SPECIAL_NAMES = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "expect"}
)

# RFC 9110 §5.6.2 tchar, RFC 3986 §2.2/2.3 unreserved and sub-delims.
TCHAR = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
UNRESERVED = string.ascii_letters + string.digits + "-._~"
SUB_DELIMS = "!$&'()*+,;="
PCHAR = UNRESERVED + SUB_DELIMS + ":@"
VCHAR = "".join(map(chr, range(0x21, 0x7F)))
OBS_TEXT = "".join(map(chr, range(0x80, 0x100)))


def normalise_fields(fields: Sequence[tuple[bytes, bytes]]) -> Fields:
    """Header (or trailer) fields in the form h11 reports them.

    Names are lower-cased.  ``Content-Length`` values are split on commas and
    stripped, and repeated identical lines are kept once (h11 does this, and
    RFC 9110 §8.6 allows it); ``Transfer-Encoding`` values are lower-cased.
    Fields that h11 would refuse (differing lengths) are left as they are, so
    the comparison fails loudly if one parser accepts them.
    """
    out: list[tuple[bytes, bytes]] = []
    seen_length: bytes | None = None
    for raw_name, raw_value in fields:
        name, value = raw_name.lower(), raw_value
        if name == b"content-length":
            parts = {part.strip(b" \t") for part in value.split(b",")}
            if len(parts) == 1:
                value = parts.pop()
                if seen_length == value:
                    continue
                seen_length = value if seen_length is None else seen_length
        elif name == b"transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return tuple(out)


# -- what a generated request must parse to -----------------------------------


@dataclass(frozen=True)
class ExpectedRequest:
    """What a correct parser reports for one generated request."""

    method: str
    target: bytes
    http_version: str
    headers: Fields
    """Normalised (see :func:`normalise_fields`), in order."""
    body: bytes
    trailers: Fields
    """Normalised, in order."""
    host: bytes | None
    keep_alive: bool
    content_length: int | None
    chunked: bool
    upgrade: bytes | None
    expect_continue: bool


@dataclass(frozen=True)
class GeneratedRequests:
    """One byte string holding 1-4 pipelined requests, and what each must parse to."""

    data: bytes
    requests: tuple[ExpectedRequest, ...]


# -- building blocks ----------------------------------------------------------
# Strategies are built once, at import: building them inside a composite on
# every draw costs more than the drawing.


@cache
def random_case(text: str) -> st.SearchStrategy[str]:
    """``text`` with each letter upper- or lower-cased at random (shrinks to lower case)."""
    return st.integers(0, (1 << len(text)) - 1).map(
        lambda bits: "".join(c.upper() if bits >> i & 1 else c for i, c in enumerate(text))
    )


tokens = st.text(TCHAR, min_size=1, max_size=12)
ows = st.sampled_from(["", "", "", " ", "\t", "  ", " \t "])
field_values = st.one_of(
    st.text(VCHAR + " \t", max_size=20), st.text(VCHAR + OBS_TEXT + " \t", max_size=10)
).map(lambda s: s.strip(" \t").encode("latin-1"))
"""A field value (RFC 9110 §5.5): field-vchar with inner SP/HTAB, maybe empty."""
_long_field_values = st.text(VCHAR + " ", min_size=30, max_size=60).map(
    lambda s: s.strip(" ").encode("latin-1")
)

# A percent-encoded character that decodes to neither "/" nor NUL, in valid UTF-8.
_pct_encoded = st.tuples(
    st.characters(min_codepoint=1, max_codepoint=0x2FFF, exclude_characters="/")
    | st.sampled_from(" %?#."),
    st.sampled_from(["%{:02X}", "%{:02x}"]),
).map(lambda t: "".join(t[1].format(b) for b in t[0].encode("utf-8")))
_segments = st.lists(st.text(PCHAR, min_size=1, max_size=6) | _pct_encoded, max_size=3).map(
    "".join
) | st.sampled_from([".", ".."])
_queries = st.lists(st.text(PCHAR + "/?", min_size=1, max_size=8) | _pct_encoded, max_size=3).map(
    "".join
)
origin_forms = st.tuples(st.lists(_segments, max_size=4), st.none() | _queries).map(
    lambda t: "/" + "/".join(t[0]) + ("" if t[1] is None else "?" + t[1])
)
"""RFC 9112 §3.2.1 origin-form: absolute-path [ "?" query ]."""

_labels = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10).map(
    lambda s: s.strip("-") or "a"
)
_reg_names = st.lists(_labels, min_size=1, max_size=4).map(".".join) | st.lists(
    st.text(UNRESERVED + SUB_DELIMS, min_size=1, max_size=4) | st.sampled_from(["%41", "%7e"]),
    min_size=1,
    max_size=4,
).map("".join)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.tuples(st.ip_addresses(v=6), st.booleans()).map(
    lambda t: "[" + (t[0].exploded if t[1] else t[0].compressed) + "]"
)
_hostnames = st.one_of(_reg_names, _ipv4, _ipv6)
_ports = st.integers(0, 65535).map(str) | st.just("")
hosts = st.tuples(_hostnames, st.none() | _ports).map(
    lambda t: t[0] if t[1] is None else f"{t[0]}:{t[1]}"
)
"""RFC 9110 §7.2 Host: uri-host [ ":" port ] (reg-name, IPv4 or [IPv6])."""
authority_forms = st.tuples(_hostnames, st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}")
"""RFC 9112 §3.2.3 authority-form (CONNECT only): uri-host ":" port."""
absolute_forms = st.tuples(
    st.sampled_from(["http", "https", "HTTP", "Http"]),
    hosts,
    st.sampled_from(["", "?"]),
    origin_forms,
).map(lambda t: f"{t[0]}://{t[1]}" + (t[3] if not t[2] else "?" + t[3].partition("?")[2]))
"""RFC 9112 §3.2.2 absolute-form, for the http(s) scheme: scheme://host[:port][/path][?query]."""

_target_forms = {
    "CONNECT": authority_forms,
    "OPTIONS": st.one_of(origin_forms, absolute_forms, st.just("*")),
}
_default_target_forms = st.one_of(origin_forms, absolute_forms)
methods = st.sampled_from(COMMON_METHODS) | tokens.filter(lambda m: m != "CONNECT")

# RFC 9112 §7.1.1 chunk-ext, without BWS before ";" (h11 refuses that).
_quoted = st.text(VCHAR.replace('"', "").replace("\\", "") + " \t", max_size=8).map(
    lambda s: '"' + s + '"'
)
_one_ext = st.tuples(st.sampled_from(["", "", " "]), tokens, st.none() | tokens | _quoted).map(
    lambda t: ";" + t[0] + t[1] + ("" if t[2] is None else "=" + t[2])
)
_chunk_exts = st.lists(_one_ext, max_size=2).map("".join)
_size_formats = st.sampled_from(["{:x}", "{:x}", "{:X}", "{:04x}", "{:020X}"])
_cuts = st.lists(st.integers(1, 200), max_size=4)
_trailing_space = st.sampled_from(["", "", " "])


@st.composite
def _chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    cuts = sorted({c for c in draw(_cuts) if c < len(body)})
    bounds = [0, *cuts, len(body)] if body else [0]
    out = b""
    for start, end in pairwise(bounds):
        size = draw(_size_formats).format(end - start)
        out += (size + draw(_chunk_exts) + draw(_trailing_space)).encode() + b"\r\n"
        out += body[start:end] + b"\r\n"
    out += (draw(st.sampled_from(["0", "0", "000"])) + draw(_chunk_exts)).encode()
    return out + b"\r\n"


_field_names = tokens.filter(lambda n: n.lower() not in _SPECIAL_NAMES)
_trailer_names = tokens.filter(lambda n: n.lower() not in ("content-length", "transfer-encoding"))
_connection_tokens = st.sampled_from(
    [
        (),
        (),
        ("close",),
        ("keep-alive",),
        ("Keep-Alive",),
        ("upgrade",),
        ("close", "upgrade"),
        ("keep-alive", "Upgrade"),
        ("TE",),
    ]
) | st.lists(tokens, min_size=1, max_size=3).map(tuple)
_list_separators = st.sampled_from([",", ", ", " , ", ",\t"])
_upgrades = st.sampled_from([b"websocket", b"h2c", b"WebSocket, foo/2"]) | tokens.map(str.encode)
_one_in_four = st.integers(0, 3)
_versions = st.sampled_from(["1.1", "1.1", "1.0"])
_framings = {
    "1.1": st.sampled_from(["none", "length", "chunked"]),
    "1.0": st.sampled_from(["none", "length"]),
}
_bodies = st.binary(max_size=80)
_length_formats = st.sampled_from(["{}", "{}", "{:03d}"])
_length_styles = st.sampled_from(["one", "one", "one", "repeated", "list"])
_zero_to_two = st.integers(0, 2)
_zero_to_five = st.integers(0, 5)


# -- whole requests -----------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn, *, reusable: bool = False) -> tuple[bytes, ExpectedRequest]:
    """One valid request and what it must parse to.

    ``reusable`` asks for a request after which h11 keeps the connection open
    (HTTP/1.1 without ``Connection: close``), so that another can follow it.
    """
    method = draw(methods)
    target = draw(_target_forms.get(method, _default_target_forms))
    version = "1.1" if reusable else draw(_versions)

    lines: list[tuple[str, bytes]] = []  # (name as sent, value without OWS)

    def add(name: str, value: bytes) -> None:
        lines.append((draw(random_case(name)), value))

    host: bytes | None = None
    if version == "1.1" or draw(st.booleans()):
        host = draw(hosts | st.just("")).encode()
        add("host", host)

    # Connection: a list of tokens, sometimes over two lines.
    conn_tokens = draw(_connection_tokens)
    if reusable:
        conn_tokens = tuple(t for t in conn_tokens if t.lower() != "close")
    if conn_tokens:
        groups = [conn_tokens]
        if len(conn_tokens) > 1 and draw(st.booleans()):
            groups = [conn_tokens[:1], conn_tokens[1:]]
        for group in groups:
            add("connection", draw(_list_separators).join(group).encode())
    lowered = {t.lower() for t in conn_tokens}

    upgrade: bytes | None = None
    if draw(_one_in_four) == 0:
        upgrade = draw(_upgrades)
        add("upgrade", upgrade)

    expect_continue = False
    if draw(_one_in_four) == 0:
        add("expect", draw(random_case("100-continue")).encode())
        expect_continue = version == "1.1"

    # The body: none, Content-Length, or chunked (HTTP/1.1 only).
    framing = draw(_framings[version])
    body = draw(_bodies) if framing != "none" else b""
    content_length: int | None = None
    trailers: list[tuple[bytes, bytes]] = []
    wire_body = b""
    if framing == "length":
        content_length = len(body)
        digits = draw(_length_formats).format(len(body))
        style = draw(_length_styles)
        add(
            "content-length", f"{digits}, {digits}".encode() if style == "list" else digits.encode()
        )
        if style == "repeated":
            add("content-length", digits.encode())
        wire_body = body
    elif framing == "chunked":
        add("transfer-encoding", draw(random_case("chunked")).encode())
        wire_body = draw(_chunked_body(body))
        for _ in range(draw(_zero_to_two)):
            name, value = draw(_trailer_names).encode(), draw(field_values | _long_field_values)
            trailers.append((name, value))
            wire_body += name + b":" + draw(ows).encode() + value + draw(ows).encode() + b"\r\n"
        wire_body += b"\r\n"

    for _ in range(draw(_zero_to_five)):
        lines.append((draw(_field_names), draw(field_values)))

    ordered = draw(st.permutations(lines)) if len(lines) > 1 else lines
    head = f"{method} {target} HTTP/{version}\r\n".encode()
    for field_name, field_value in ordered:
        head += field_name.encode() + b":" + draw(ows).encode() + field_value
        head += draw(ows).encode() + b"\r\n"
    head += b"\r\n"

    if "upgrade" not in lowered or version == "1.0":  # RFC 9110 §7.8: ignored in HTTP/1.0
        upgrade = None
    if version == "1.1":
        keep_alive = "close" not in lowered
    else:
        keep_alive = "keep-alive" in lowered and "close" not in lowered
    expected = ExpectedRequest(
        method=method,
        target=target.encode(),
        http_version=version,
        headers=normalise_fields([(n.encode(), v) for n, v in ordered]),
        body=body,
        trailers=normalise_fields(trailers),
        host=None if host is None else host.lower(),
        keep_alive=keep_alive,
        content_length=content_length,
        chunked=framing == "chunked",
        upgrade=upgrade,
        expect_continue=expect_continue,
    )
    return head + wire_body, expected


_request_counts = {n: st.integers(1, n) for n in range(1, 5)}


@st.composite
def request_sequences(draw: st.DrawFn, max_requests: int = 4) -> GeneratedRequests:
    """1 to ``max_requests`` valid requests pipelined in one byte string."""
    count = draw(_request_counts[max_requests])
    parts = [draw(requests(reusable=i < count - 1)) for i in range(count)]
    return GeneratedRequests(b"".join(d for d, _ in parts), tuple(e for _, e in parts))


# -- damage ---------------------------------------------------------------------

_INTERESTING = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b"\x7f",
    b",",
    b";",
    b"%",
    b"/",
    b"@",
    b"\x80",
    b"\xff",
    b"\x01",
    b"\x0b",
    *(bytes([d]) for d in b"0123456789"),
]
_bytes_to_insert = (
    st.sampled_from(_INTERESTING)
    | st.binary(min_size=1, max_size=1)
    | st.sampled_from([b"a", b"F"])
)
_extra_lines = st.sampled_from(
    [
        b"Content-Length: 0\r\n",
        b"Content-Length: 5\r\n",
        b"content-length: 00\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"transfer-encoding: identity\r\n",
        b"Host: example.com\r\n",
        b"Host: a b\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b" folded\r\n",
        b"\tfolded: too\r\n",
        b"\r\n",
    ]
)


_mutation_kinds = st.sampled_from(
    ["insert", "insert", "delete", "replace", "replace", "line", "header", "version", "fold"]
)
_new_versions = st.sampled_from(
    [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/1.0", b"HTTP/1.1", b"HTTP/11", b"http/1.1"]
)
_folds = st.sampled_from([b" ", b"\t", b"  x"])
_one_to_three = st.integers(1, 3)


@st.composite
def _mutate_once(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(_mutation_kinds)
    pos = draw(st.integers(0, len(data)))
    if kind == "insert":
        return data[:pos] + draw(_bytes_to_insert) + data[pos:]
    if kind == "delete":
        return data[:pos] + data[pos + draw(_one_to_three) :]
    if kind == "replace":
        return data[:pos] + draw(_bytes_to_insert) + data[pos + 1 :]
    if kind == "line":  # duplicate or drop the line around pos
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        if draw(st.booleans()):
            return data[:end] + data[start:end] + data[end:]
        return data[:start] + data[end:]
    if kind == "header":  # a framing or otherwise special line after the line around pos
        at = data.find(b"\n", pos) + 1
        return data[:at] + draw(_extra_lines) + data[at:]
    if kind == "version":
        at = data.find(b"HTTP/1.", pos)
        if at < 0:
            at = data.find(b"HTTP/1.")
        if at < 0:
            return data
        return data[:at] + draw(_new_versions) + data[at + 8 :]
    # fold: put SP/HTAB at the start of the line after pos (obs-fold, RFC 9112 §5.2)
    at = data.find(b"\r\n", pos)
    if at < 0:
        return data
    return data[: at + 2] + draw(_folds) + data[at + 2 :]


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """Valid pipelined requests with 1-3 random mutations (mostly invalid afterwards)."""
    data = draw(request_sequences(max_requests=3)).data
    for _ in range(draw(_one_to_three)):
        data = draw(_mutate_once(data))
    return data


# -- feeding ------------------------------------------------------------------


def _cut(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]


_feeding_modes = st.sampled_from(["whole", "cuts", "cuts", "bytewise-stretch", "bytewise"])
_stretches = st.integers(1, 40)


@st.composite
def pieces(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into the pieces a socket might deliver.

    Whole, at random points, with a stretch delivered one byte at a time, or
    entirely byte by byte.  Shrinks towards "whole".
    """
    n = len(data)
    mode = draw(_feeding_modes)
    if mode == "whole" or n == 0:
        return [data]
    if mode == "bytewise":
        return [data[i : i + 1] for i in range(n)]
    cuts = draw(st.lists(st.integers(1, max(1, n - 1)), max_size=8))
    if mode == "bytewise-stretch":
        start = draw(st.integers(0, n))
        cuts += range(start, min(n, start + draw(_stretches)))
    return _cut(data, cuts)


@dataclass
class PeregrineRequest:
    """One complete request read by peregrine, with where it lay in the stream."""

    head: RequestHead
    body: bytes
    trailers: Fields
    start: int
    """Offset where the request began (before any empty lines peregrine skipped)."""
    head_end: int
    """Offset just after the head."""
    end: int
    """Offset just after the request's last byte."""


@dataclass
class PeregrineRun:
    """Everything a :class:`RequestParser` reported for one stream."""

    requests: list[PeregrineRequest] = field(default_factory=list)
    error: BaseException | None = None
    """What ``next_event()`` raised, if anything (the run stops there)."""
    leftover: bytes = b""
    """``trailing_data`` at the end (at the error, if there was one)."""
    closed: bool = False
    """Whether the parser reported CLOSED after the EOF."""


def run_peregrine(
    parser: RequestParser, chunks: Sequence[bytes], *, eof: bool = True
) -> PeregrineRun:
    """Feed ``chunks`` one by one, reading every event after each, then the EOF.

    Every pipelined request is read (``start_next_cycle()`` after each,
    whatever its ``keep_alive``).  Any exception from ``next_event()`` ends the
    run and is recorded, not raised: the tests decide what it may be.  The
    event grammar is asserted on the way.
    """
    run = PeregrineRun()
    fed = 0
    start = 0
    head: RequestHead | None = None
    head_end = 0
    body = bytearray()
    budget = 100 * (sum(map(len, chunks)) + 10)  # a parser that loops forever is a bug

    def pump() -> bool:
        """Read events until the parser needs data; False once it is finished or failed."""
        nonlocal head, head_end, body, start, budget
        while True:
            budget -= 1
            assert budget > 0, "the parser keeps producing events without consuming input"
            try:
                event = parser.next_event()
            except Exception as exc:
                run.error = exc
                return False
            consumed = fed - len(parser.trailing_data)
            if event is NEED_DATA:
                return True
            if event is CLOSED:
                assert head is None, "CLOSED in the middle of a request"
                run.closed = True
                return False
            if event is PAUSED:
                assert head is None, "PAUSED before EndOfMessage"
                parser.start_next_cycle()
                start = consumed
                continue
            if isinstance(event, RequestHead):
                assert head is None, "a second RequestHead before EndOfMessage"
                head, head_end, body = event, consumed, bytearray()
            elif isinstance(event, Data):
                assert head is not None, "Data outside a request"
                assert event.data, "empty Data event"
                body += event.data
            else:
                assert isinstance(event, EndOfMessage), f"unknown event {event!r}"
                assert head is not None, "EndOfMessage outside a request"
                run.requests.append(
                    PeregrineRequest(
                        head, bytes(body), tuple(event.trailers), start, head_end, consumed
                    )
                )
                head = None

    for chunk in chunks:
        parser.feed(chunk)
        fed += len(chunk)
        if not pump():
            break
    else:
        if eof:
            parser.feed_eof()
            pump()
    run.leftover = parser.trailing_data
    return run
