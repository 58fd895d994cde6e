"""HTTP rules for static files, as pure functions: preconditions, ranges, content coding.

* :func:`preconditions` evaluates ``If-Match``, ``If-Unmodified-Since``,
  ``If-None-Match`` and ``If-Modified-Since`` in the order of RFC 9110 §13.2.2.
* :func:`parse_ranges` reads a ``Range`` header (RFC 9110 §14.2): ``None``
  when the header is to be ignored (bad syntax, another unit, too many
  ranges), ``[]`` when no range can be satisfied (416), else the ranges as
  inclusive ``(first, last)`` byte positions.
* :func:`if_range_holds` decides whether ``If-Range`` lets the ranges apply.
* :func:`choose_encoding` picks a pre-compressed sibling from ``Accept-Encoding``.

No I/O here, so every rule is tested directly on strings.
"""

from __future__ import annotations

import secrets
from collections.abc import Container, Mapping
from email.utils import mktime_tz, parsedate_tz
from typing import Final

__all__ = [
    "BOUNDARY",
    "MAX_RANGES",
    "MAX_RANGE_PARTS",
    "choose_encoding",
    "etag_matches",
    "if_range_holds",
    "multipart_parts",
    "parse_http_date",
    "parse_ranges",
    "preconditions",
]

MAX_RANGES: Final = 16
"""More ranges than this in one request are answered with the whole file (200)."""
MAX_RANGE_PARTS: Final = 100
"""A ``Range`` header with more parts than this is ignored outright."""
BOUNDARY: Final = secrets.token_hex(16).encode("ascii")
"""The ``multipart/byteranges`` boundary (one per process; it cannot occur in a part's head)."""
_MAX_DIGITS = 18  # positions beyond 10**18 bytes are all "past the end"

_dates: dict[str, int | None] = {}


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch for an HTTP date (IMF-fixdate, RFC 850 or asctime), else None.

    >>> parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
    784111777
    >>> parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT")
    784111777
    >>> parse_http_date("Sun Nov  6 08:49:37 1994")
    784111777
    >>> parse_http_date("yesterday") is None
    True
    """
    try:
        return _dates[value]
    except KeyError:
        pass
    seconds: int | None
    try:
        parsed = parsedate_tz(value)
        if parsed is not None and parsed[9] is None:
            parsed = (*parsed[:9], 0)  # asctime has no zone: it is GMT (RFC 9110 §5.6.7)
        seconds = mktime_tz(parsed) if parsed is not None else None
    except (TypeError, ValueError, OverflowError, IndexError):
        seconds = None
    if len(_dates) > 256:
        _dates.clear()
    _dates[value] = seconds
    return seconds


def etag_matches(header: str, etag: bytes, *, weak: bool) -> bool:
    """Whether the entity-tag list ``header`` matches ``etag`` (``*`` matches any).

    Strong comparison (``weak=False``, for If-Match) needs both tags strong and
    equal; weak comparison (If-None-Match) ignores the ``W/`` prefixes.

    >>> etag_matches('W/"a", "b"', b'"a"', weak=True)
    True
    >>> etag_matches('W/"a"', b'"a"', weak=False)
    False
    >>> etag_matches("*", b'"a"', weak=False)
    True
    """
    mine = etag.decode("latin-1")
    for item in header.split(","):
        tag = item.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            if weak and tag[2:] == mine:
                return True
        elif tag == mine:
            return True
    return False


def preconditions(headers: Mapping[str, str], etag: bytes, mtime: int, method: str) -> int:
    """200 to go on, 304 Not Modified, or 412 Precondition Failed (RFC 9110 §13.2.2).

    ``mtime`` is the Last-Modified time in whole seconds.  Dates that do not
    parse are ignored, as the RFC says.
    """
    if_match = headers.get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, etag, weak=False):
            return 412
    else:
        since = headers.get("if-unmodified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and mtime > date:
                return 412
    safe = method in ("GET", "HEAD")
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, weak=True):
            return 304 if safe else 412
    elif safe:
        since = headers.get("if-modified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and mtime <= date:
                return 304
    return 200


def if_range_holds(value: str | None, etag: bytes, mtime: int) -> bool:
    """Whether a Range applies: no ``If-Range``, or it names the current representation.

    An entity-tag must match strongly; a date must equal Last-Modified exactly.
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag.decode("latin-1")
    return parse_http_date(value) == mtime


def _position(digits: str) -> int | None:
    if not digits.isdigit() or not digits.isascii():
        return None
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_ranges(value: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable byte ranges of a ``Range`` header for a ``size``-byte body.

    >>> parse_ranges("bytes=0-99", 1000)
    [(0, 99)]
    >>> parse_ranges("bytes=-100, 990-", 1000)
    [(900, 999), (990, 999)]
    >>> parse_ranges("bytes=5000-", 1000)
    []
    >>> parse_ranges("bytes=9-1", 1000) is None  # invalid: the header is ignored
    True
    >>> parse_ranges("items=0-1", 1000) is None
    True
    """
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = spec.split(",")
    if len(parts) > MAX_RANGE_PARTS:
        return None
    ranges: list[tuple[int, int]] = []
    seen = False
    for item in parts:
        part = item.strip(" \t")
        if not part:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        seen = True
        first_s, dash, last_s = part.partition("-")
        if not dash:
            return None
        first_s, last_s = first_s.strip(" \t"), last_s.strip(" \t")
        if not first_s:
            suffix = _position(last_s)
            if suffix is None:
                return None
            if suffix > 0 and size > 0:
                ranges.append((max(0, size - suffix), size - 1))
            continue
        first = _position(first_s)
        last = _position(last_s) if last_s else size - 1
        if first is None or last is None or (last_s and last < first):
            return None
        if first < size:
            ranges.append((first, min(last, size - 1)))
    return ranges if seen else None


def multipart_parts(
    ranges: list[tuple[int, int]], size: int, content_type: bytes
) -> list[bytes | tuple[int, int]]:
    """A ``multipart/byteranges`` body as separators and ``(offset, count)`` slices."""
    parts: list[bytes | tuple[int, int]] = []
    for i, (first, last) in enumerate(ranges):
        parts.append(
            b"%s--%s\r\ncontent-type: %s\r\ncontent-range: bytes %d-%d/%d\r\n\r\n"
            % (b"\r\n" if i else b"", BOUNDARY, content_type, first, last, size)
        )
        parts.append((first, last - first + 1))
    parts.append(b"\r\n--%s--\r\n" % BOUNDARY)
    return parts


_accepts: dict[tuple[str, tuple[bytes, ...]], bytes | None] = {}


def choose_encoding(accept: str, available: Container[bytes]) -> bytes | None:
    """The coding to send (``b"br"``, ``b"gzip"``) among ``available``, or None for identity.

    The client's highest q-value wins; on a tie, brotli (smaller).  ``q=0``
    refuses a coding, ``*`` stands for codings not named.

    >>> choose_encoding("gzip, deflate, br", {b"br", b"gzip"})
    b'br'
    >>> choose_encoding("br;q=0.5, gzip", {b"br", b"gzip"})
    b'gzip'
    >>> choose_encoding("*;q=0", {b"gzip"}) is None
    True
    """
    names = tuple(c for c in (b"br", b"gzip") if c in available)
    key = (accept, names)
    try:
        return _accepts[key]
    except KeyError:
        pass
    q: dict[str, float] = {}
    for item in accept.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        weight = 1.0
        for param in params.split(";"):
            key_, _, val = param.partition("=")
            if key_.strip().lower() == "q":
                try:
                    weight = float(val.strip())
                except ValueError:
                    weight = 0.0
        if coding:
            q[coding] = weight
    best: bytes | None = None
    best_q = 0.0
    for name in names:
        weight = q.get(name.decode("ascii"), q.get("x-gzip" if name == b"gzip" else "", -1.0))
        if weight < 0:
            weight = q.get("*", 0.0)
        if weight > best_q:
            best, best_q = name, weight
    if len(_accepts) > 256:
        _accepts.clear()
    _accepts[key] = best
    return best
