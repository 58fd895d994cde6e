"""The general path's pieces: one request line or field line at a time, and RFC 9112's rules.

The parser (``_parser.py``) takes this path for everything its fast path does
not handle, and for every error, so these functions give the precise message
and status.  They are pure functions over bytes.
"""

from __future__ import annotations

import re
from typing import Final

from ..exceptions import RemoteProtocolError
from ._abnf import (
    TCHAR,
    content_length_re,
    field_value_re,
    header_line_re,
    host_re,
    request_line_re,
)
from ._events import RequestHead
from ._headers import Headers
from ._target import decode_path, split_target

__all__ = [
    "connection_tokens",
    "expects_continue",
    "interpret_head",
    "parse_field_line",
    "parse_request_line",
    "split_now",
]

VERSIONS: Final = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
METHODS: Final = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}
_TOKEN_RE: Final = re.compile(TCHAR + rb"+")


def parse_request_line(line: bytes) -> tuple[str, bytes, str]:
    m = request_line_re.fullmatch(line)
    if m is None:
        # Give the more precise 505 when only the version is unsupported.
        parts = line.split(b" ")
        if (
            len(parts) == 3
            and re.fullmatch(rb"HTTP/[0-9]+\.[0-9]+", parts[2])
            and _TOKEN_RE.fullmatch(parts[0])
            and re.fullmatch(rb"[\x21-\x7e]+", parts[1])
        ):
            raise RemoteProtocolError(f"HTTP version {parts[2].decode()} is not supported", 505)
        raise RemoteProtocolError(f"invalid request line {line[:100]!r}")
    version = VERSIONS.get(line[m.start("major") - 5 :])
    if version is None:
        raise RemoteProtocolError(
            f"HTTP version {m.group('major').decode()}.{m.group('minor').decode()} "
            "is not supported",
            505,
        )
    raw_method = m.group("method")
    method = METHODS.get(raw_method) or raw_method.decode("ascii")
    return method, m.group("target"), version


def parse_field_line(line: bytes) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise RemoteProtocolError("obsolete line folding (obs-fold) is not accepted")
    m = header_line_re.fullmatch(line)
    if m is None:
        if b":" in line and line.partition(b":")[0].rstrip(b" \t") != line.partition(b":")[0]:
            raise RemoteProtocolError("whitespace between a field name and the colon")
        raise RemoteProtocolError(f"invalid header line {line[:100]!r}")
    value = m.group("value")
    if not field_value_re.fullmatch(value):
        raise RemoteProtocolError(f"invalid bytes in the value of {m.group('name')[:100]!r}")
    return m.group("name"), value


def expects_continue(value: bytes) -> bool:
    """Whether an (already lower-cased) Expect value lists 100-continue (RFC 9110 §10.1.1)."""
    if value.rstrip(b" \t") == b"100-continue":
        return True
    return b"100-continue" in [v.strip(b" \t") for v in value.split(b",")]


def connection_tokens(value: bytes) -> set[bytes]:
    return {tok.strip(b" \t").lower() for tok in value.split(b",")}


def interpret_head(
    method: str,
    target: bytes,
    version: str,
    fields: list[tuple[bytes, bytes]],
    head_class: type[RequestHead],
) -> RequestHead:
    """Apply RFC 9112's rules on the fields that decide framing and the connection."""
    hosts: list[bytes] = []
    lengths: list[bytes] = []
    codings: list[bytes] = []
    connection: set[bytes] = set()
    upgrades: list[bytes] = []
    expect: list[bytes] = []
    for name, value in fields:
        lname = name.lower()
        if lname == b"host":
            hosts.append(value)
        elif lname == b"content-length":
            lengths.extend(v.strip(b" \t") for v in value.split(b","))
        elif lname == b"transfer-encoding":
            codings.extend(v.strip(b" \t").lower() for v in value.split(b","))
        elif lname == b"connection":
            connection |= connection_tokens(value)
        elif lname == b"upgrade":
            upgrades.append(value)
        elif lname == b"expect":
            expect.append(value.lower())

    host: bytes | None = None
    if len(hosts) > 1:
        raise RemoteProtocolError("more than one Host header")
    if hosts:
        host = hosts[0].lower()
        if not host_re.fullmatch(host):
            raise RemoteProtocolError(f"invalid Host header {host[:100]!r}")
    elif version == "1.1":
        raise RemoteProtocolError("HTTP/1.1 request without a Host header")

    content_length: int | None = None
    chunked = False
    if codings:
        if version == "1.0":
            # RFC 9112 §6.1: a Transfer-Encoding in HTTP/1.0 means faulty framing.
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            # RFC 9112 §6.3: the classic request smuggling shape.
            raise RemoteProtocolError("both Content-Length and Transfer-Encoding")
        if codings[-1] != b"chunked":
            raise RemoteProtocolError("the final transfer coding is not chunked")
        if len(codings) > 1:
            if b"chunked" in codings[:-1]:
                raise RemoteProtocolError("chunked applied more than once")
            raise RemoteProtocolError(
                f"transfer coding {codings[0].decode('latin-1')!r} is not supported", 501
            )
        chunked = True
    elif lengths:
        if len(set(lengths)) != 1:
            raise RemoteProtocolError("differing Content-Length values")
        if not content_length_re.fullmatch(lengths[0]):
            raise RemoteProtocolError(f"invalid Content-Length {lengths[0][:30]!r}")
        content_length = int(lengths[0])

    if version == "1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection and b"close" not in connection
    # RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
    upgrade = (
        b", ".join(upgrades) if upgrades and b"upgrade" in connection and version == "1.1" else None
    )
    expect_continue = version == "1.1" and any(expects_continue(v) for v in expect)

    return head_class(
        method,
        target,
        version,
        Headers(fields),
        host,
        keep_alive,
        content_length,
        chunked,
        upgrade,
        expect_continue,
        None
        if target[:1] == b"/" and b"%" not in target and method != "CONNECT"
        else split_now(method, target),
    )


def split_now(method: str, target: bytes) -> tuple[bytes, bytes, str, bytes | None]:
    raw_path, raw_query, authority = split_target(method, target)
    path = decode_path(raw_path) if raw_path[:1] == b"/" else raw_path.decode("ascii")
    return raw_path, raw_query, path, authority
