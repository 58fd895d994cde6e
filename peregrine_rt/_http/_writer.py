"""The HTTP/1.x response writer: status line, headers and body as one bytes object.

The trio shell hands the result of :func:`encode_response` to a single
``send_all`` (the seed server's one ``writev`` per response).  Framing headers
are the writer's job, not the caller's: it adds ``Content-Length`` for fixed
bodies, ``Transfer-Encoding: chunked`` for streamed ones on HTTP/1.1, nothing
for responses that cannot have a body (HEAD, 1xx, 204, 304), a cached ``Date``,
and ``Connection: close`` / ``keep-alive`` as the connection requires.  Headers
that would let the caller break that framing (``Content-Length``,
``Transfer-Encoding``, ``Connection``) are refused, and every name and value is
checked so that no CR, LF or NUL can smuggle a header or a response in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, TypeAlias

from ..exceptions import LocalProtocolError
from ._scan import speedups

__all__ = [
    "LAST_CHUNK",
    "check_headers",
    "date_header_value",
    "encode_chunk",
    "encode_fixed_response",
    "encode_fixed_response_py",
    "encode_response",
    "encode_response_head",
    "may_have_body",
]

LAST_CHUNK: Final = b"0\r\n\r\n"
"""The end of a chunked body (no trailers)."""

_TCHARS: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VALUE_BYTES: Final = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
_FRAMING: Final = (b"\ncontent-length\n", b"\ntransfer-encoding\n", b"\nconnection\n")

_STATUS_LINES: dict[tuple[int, str], bytes] = {}


def _status_line(status: int, version: str) -> bytes:
    line = _STATUS_LINES.get((status, version))
    if line is None:
        if not 100 <= status <= 999:
            raise LocalProtocolError(f"invalid status code {status}")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        # The server's own version whatever the request's (RFC 9110 §2.5, as
        # h11 does): an HTTP/1.0 client reads an HTTP/1.1 status line fine,
        # and the framing below still follows the request's version.
        line = f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")
        _STATUS_LINES[(status, version)] = line
    return line


_date_second = -1
_date_line = b""


def date_header_value() -> bytes:
    """The current ``Date`` value (IMF-fixdate), recomputed at most once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_line = formatdate(now, usegmt=True).encode("ascii")
        _date_second = now
    return _date_line


def may_have_body(status: int, method: str) -> bool:
    """Whether a response with this status to this method carries body bytes."""
    return not (method == "HEAD" or status < 200 or status in (204, 304))


def check_headers(headers: Sequence[tuple[bytes, bytes]]) -> None:
    names = [n for n, _ in headers]
    joined = b"\n".join(names)
    if joined.translate(None, _TCHARS) != b"\n" * (len(names) - 1) or b"" in names:
        bad = next(n for n in names if not n or n.translate(None, _TCHARS))
        raise LocalProtocolError(f"invalid header name {bad[:100]!r}")
    values = b"".join([v for _, v in headers])
    if values.translate(None, _VALUE_BYTES):
        bad = next(v for _, v in headers if v.translate(None, _VALUE_BYTES))
        raise LocalProtocolError(f"header value contains CR, LF, NUL or a control byte: {bad!r}")
    lowered = b"\n" + joined.lower() + b"\n"
    for framing in _FRAMING:
        if framing in lowered:
            raise LocalProtocolError(
                f"the {framing.strip().decode()} header is set by the server, not by a handler"
            )


def encode_response_head(
    status: int,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    version: str = "1.1",
    keep_alive: bool = True,
    content_length: int | None = None,
    chunked: bool = False,
    date: bool = True,
    check: bool = True,
) -> bytes:
    """Serialise a status line and header block (ending with the blank line).

    Args:
        status: the status code.
        headers: ``(name, value)`` pairs; names must be tokens, values free of
            control bytes, and none of Content-Length, Transfer-Encoding or
            Connection (the writer sets those from the other arguments).
        version: the request's HTTP version, ``"1.1"`` or ``"1.0"``: it decides
            the framing (no chunked coding for 1.0, ``Connection: keep-alive``
            to keep a 1.0 connection); the status line always says ``HTTP/1.1``,
            the server's own version (RFC 9110 §2.5).
        keep_alive: whether the connection stays open after this response.
        content_length: written as ``Content-Length`` when not ``None``.
        chunked: write ``Transfer-Encoding: chunked`` (HTTP/1.1 only).
        date: add a ``Date`` header.
        check: validate ``headers``; a caller that validated each header when
            it was set (as :class:`~peregrine_rt.Response` does) may skip it.

    Raises:
        LocalProtocolError: a header is invalid or reserved, or the framing
            asked for is impossible.
    """
    if check and headers:
        check_headers(headers)
    if status < 200:
        if version != "1.1":
            raise LocalProtocolError("1xx responses cannot be sent to an HTTP/1.0 client")
        if content_length is not None or chunked:
            raise LocalProtocolError(f"a {status} response cannot have a body or its framing")
    elif status == 204 and (content_length is not None or chunked):
        raise LocalProtocolError("a 204 response cannot have a body or its framing")
    parts = [_status_line(status, version)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if date:
        parts += (b"date: ", date_header_value(), b"\r\n")
    if chunked:
        if version != "1.1":
            raise LocalProtocolError("chunked responses need HTTP/1.1")
        if content_length is not None:
            raise LocalProtocolError("a response cannot be both chunked and Content-Length")
        parts.append(b"transfer-encoding: chunked\r\n")
    elif content_length is not None:
        parts += (b"content-length: ", str(content_length).encode(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif version == "1.0":
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def encode_response(
    status: int,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    method: str = "GET",
    version: str = "1.1",
    keep_alive: bool = True,
    date: bool = True,
    check: bool = True,
) -> bytes:
    """Serialise a whole response with a fixed body into one bytes object.

    ``Content-Length`` is added automatically.  For HEAD the length of ``body``
    is announced but its bytes are not sent; for 1xx, 204 and 304 neither
    (a non-empty body there is an error).
    """
    if status < 200 or status in (204, 304):
        if body:
            raise LocalProtocolError(f"a {status} response cannot have a body")
        return encode_response_head(
            status, headers, version=version, keep_alive=keep_alive, date=date, check=check
        )
    if status == 205 and body:
        raise LocalProtocolError("a 205 response cannot have a body (RFC 9110 §15.3.6)")
    head = encode_response_head(
        status,
        headers,
        version=version,
        keep_alive=keep_alive,
        content_length=len(body),
        date=date,
        check=check,
    )
    if method == "HEAD" or not body:
        return head
    return head + body


def encode_fixed_response_py(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    method: str,
    version: str,
    keep_alive: bool,
) -> bytes:
    """:func:`encode_response` for headers already validated (the server's hot path).

    Same output as ``encode_response(..., check=False)``, with less Python in
    between.  This is the reference; :data:`encode_fixed_response` is the C
    accelerator's version of it when built (``tests/unit/test_writer_speedups.py``
    holds the two to the same answer).
    """
    if status < 200 or status in (204, 205, 304):
        return encode_response(
            status,
            headers,
            body,
            method=method,
            version=version,
            keep_alive=keep_alive,
            check=False,
        )
    line = _STATUS_LINES.get((status, version)) or _status_line(status, version)
    fields = b"".join([b"%s: %s\r\n" % pair for pair in headers]) if headers else b""
    if not keep_alive:
        tail = b"connection: close\r\n\r\n"
    elif version == "1.0":
        tail = b"connection: keep-alive\r\n\r\n"
    else:
        tail = b"\r\n"
    return b"%s%sdate: %s\r\ncontent-length: %d\r\n%s%s" % (
        line,
        fields,
        date_header_value(),
        len(body),
        tail,
        b"" if method == "HEAD" else body,
    )


def encode_chunk(data: bytes) -> bytes:
    """Frame ``data`` as one chunk of a chunked body (``b""`` gives ``b""``, not the end)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


FixedEncoder: TypeAlias = Callable[
    [int, Sequence[tuple[bytes, bytes]], bytes, str, str, bool], bytes
]

encode_fixed_response: FixedEncoder = encode_fixed_response_py
"""``encode_fixed_response(status, headers, body, method, version, keep_alive)``.

``_speedups.encode_fixed_response`` when the C accelerator is in use (see
``_scan.py``): the common response (status 200-999 but 204, 205 and 304,
bytes headers in a list, HTTP/1.x) built in C, about 0.6 µs less a request;
every other call is handed to :func:`encode_fixed_response_py`, so the
answer, errors included, is always the Python one.
"""
if speedups is not None:
    speedups.set_writer(globals(), _status_line, date_header_value, encode_fixed_response_py)
    encode_fixed_response = speedups.encode_fixed_response
