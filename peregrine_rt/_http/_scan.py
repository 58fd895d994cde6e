"""The parser's fast path: one scan of a common request head, in Python or in C.

``scan_head_py`` is the reference reading; ``scan_head_c`` is the same reading
from the C accelerator (``_speedups.c``) when it is built and not turned off.
``tests/unit/test_speedups.py`` holds the two to the same answer for every
input.  :mod:`._parser` picks one per parser (``RequestParser(speedups=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import Final, TypeAlias

from ._accel import load_accelerator
from ._fields import METHODS, connection_tokens, expects_continue
from ._headers import Headers
from ._limits import MAX_HEADER_COUNT

__all__ = [
    "SPEEDUPS",
    "SPEEDUPS_INTERFACE",
    "BlockInfo",
    "Cache",
    "Scanned",
    "Scanner",
    "compile_fast_block",
    "scan_head_c",
    "scan_head_py",
    "speedups",
]

# Bytes allowed in a field line (RFC 9110 §5.5: HTAB, SP, VCHAR, obs-text).
# Deleting them from a head leaves its CR/LF and control bytes, in order.
_FIELD_BYTES: Final = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])
# What that leaves of a valid head: one CRLF per line.
_CRLF_RUNS: Final = {2 * n: b"\r\n" * n for n in range(MAX_HEADER_COUNT + 1)}

_LTCHAR = rb"[-!#$%&'*+.^_`|~0-9a-z]"
_LHOST = rb"(?:\[[0-9a-z:.\-_~!$&'()*+,;=%]+\]|[0-9a-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?"


def compile_fast_block(max_count: int) -> re.Pattern[bytes]:
    """The fast path's grammar for a lower-cased header block (the lines after the request line).

    Each special field gets its own branch, which captures its value and
    refuses a second occurrence (``(?(n)(?!))``: "fail if group n already
    matched"); the generic branch refuses the special names, so a repeated or
    malformed special field makes the whole match fail and the general path
    decide.  Host, Content-Length and Transfer-Encoding values are checked
    right here; a value the fast path does not take ends up in the general path.
    """

    def once(group: int) -> bytes:
        return rb"(?(" + str(group).encode() + rb")(?!))[ \t]*"

    branches = [
        rb"host:" + once(1) + rb"(" + _LHOST + rb")[ \t]*\r\n",
        rb"connection:" + once(2) + rb"(.*)\r\n",
        rb"content-length:" + once(3) + rb"([0-9]{1,20})[ \t]*\r\n",
        rb"transfer-encoding:" + once(4) + rb"(chunked)[ \t]*\r\n",
        rb"upgrade:" + once(5) + rb"(.*)\r\n",
        rb"expect:" + once(6) + rb"(.*)\r\n",
        rb"(?!host:|connection:|content-length:|transfer-encoding:|upgrade:|expect:)"
        + _LTCHAR
        + rb"+:.*\r\n",
    ]
    return re.compile(
        rb"(?:" + b"|".join(branches) + rb"){0," + str(max_count).encode() + rb"}\r\n"
    )


# The fast path's request line: a common method, an origin-form target, HTTP/1.x.
_FAST_REQUEST_LINE: Final = re.compile(
    rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) (/[!-~]*) HTTP/1\.([01])\r\n"
)


_FAST_BLOCKS: dict[int, re.Pattern[bytes]] = {
    MAX_HEADER_COUNT: compile_fast_block(MAX_HEADER_COUNT)
}
# host, close, keep-alive, upgrade, content-length, chunked, 100-continue, headers
BlockInfo: TypeAlias = tuple[
    bytes | None, bool, bool, bytes | None, int | None, bool, bool, Headers
]
# What a scanner makes of a head: the end of the head (the CR of its blank
# line), then method, target, version, headers, host, keep-alive,
# content-length, chunked, upgrade, 100-continue (RequestHead's arguments), and
# the block info to cache (None: the cached one was used).
Scanned: TypeAlias = tuple[
    int,
    str,
    bytes,
    str,
    Headers,
    bytes | None,
    bool,
    int | None,
    bool,
    bytes | None,
    bool,
    BlockInfo | None,
]
Cache: TypeAlias = tuple[bytes, BlockInfo]
Scanner: TypeAlias = Callable[[bytes, int, int, Cache | None, type[Headers]], Scanned | None]


def scan_head_py(
    buf: bytes,
    limit: int,
    max_count: int,
    cache: Cache | None,
    headers_class: type[Headers],
) -> Scanned | None:
    """The fast path's reading of a request head, in Python (``_speedups.scan_head`` in C).

    Returns None when ``buf`` does not start with a complete head of the
    common shape, no longer than ``limit`` bytes and with at most
    ``max_count`` header lines (the general path then decides, and gives the
    precise error if there is one), else what the head says (``Scanned``).
    ``cache`` is ``(block, info)`` from an earlier head: when this head's
    header block is ``block`` byte for byte, ``info`` is used instead of
    reading it again.  The C version must give the same answer for every
    input; ``tests/unit/test_speedups.py`` checks it.
    """
    m = _FAST_REQUEST_LINE.match(buf)
    if m is None:
        return None
    start = m.end()  # where the header block starts
    if start > limit:
        return None
    new_info: BlockInfo | None
    if (
        cache is not None
        and buf.startswith(cache[0], start)
        and buf.startswith(b"\r\n", end := start + len(cache[0]))
        and end + 2 <= limit
    ):
        info = cache[1]
        new_info = None
    else:
        fast_re = _FAST_BLOCKS.get(max_count)
        if fast_re is None:
            fast_re = _FAST_BLOCKS[max_count] = compile_fast_block(max_count)
        bm = fast_re.match((buf if len(buf) <= limit else buf[:limit]).lower(), start)
        if bm is None:
            return None
        end = bm.end() - 2
        scanned = _scan_block(buf[start:end], bm, headers_class)
        if scanned is None:
            return None
        info = new_info = scanned
    method_b, target, minor = m.groups()
    host, close, keep, upgrade, clen, chunked, expect_continue, headers = info
    if minor == b"1":
        if host is None:
            return None
        version = "1.1"
        keep_alive = not close
    else:
        if chunked:
            return None
        version = "1.0"
        keep_alive = keep and not close
        expect_continue = False
        upgrade = None  # RFC 9110 §7.8: ignored in HTTP/1.0
    return (
        end,
        METHODS[method_b],
        target,
        version,
        headers,
        host,
        keep_alive,
        clen,
        chunked,
        upgrade,
        expect_continue,
        new_info,
    )


def _scan_block(block: bytes, m: re.Match[bytes], headers_class: type[Headers]) -> BlockInfo | None:
    """Finish checking a header block the fast grammar matched (``m``)."""
    # The grammar's "." admits control bytes and bare CR: the bytes outside
    # the allowed set must be exactly one CRLF per line.
    left = block.translate(None, _FIELD_BYTES)
    if left != (_CRLF_RUNS.get(len(left)) or b"\r\n" * (len(left) >> 1)):
        return None
    host, connection, clen, tenc, upgrade, expect = m.groups()
    if tenc is not None and clen is not None:
        return None
    close = keep = False
    upgrade_to: bytes | None = None
    if connection is not None:
        connection = connection.rstrip(b" \t")
        if connection == b"keep-alive":
            keep = True
        elif connection == b"close":
            close = True
        else:
            tokens = connection_tokens(connection)
            close = b"close" in tokens
            keep = b"keep-alive" in tokens
            if upgrade is not None and b"upgrade" in tokens:
                offset = m.start()
                upgrade_to = block[m.start(5) - offset : m.end(5) - offset].rstrip(b" \t")
    return (
        host,
        close,
        keep,
        upgrade_to,
        None if clen is None else int(clen),
        tenc is not None,
        expect is not None and expects_continue(expect),
        headers_class(block=block),
    )


# The C accelerator (``_speedups.c``, built when a compiler is at hand): the
# same reading as scan_head_py, about ten times faster.  PEREGRINE_RT_NO_SPEEDUPS=1
# in the environment at import time, or RequestParser(speedups=False), keeps to
# pure Python.
SPEEDUPS_INTERFACE: Final = 3
"""The ``_speedups.INTERFACE`` this module expects; a build from other source is not used."""
scan_head_c: Scanner | None = None
speedups: ModuleType | None = load_accelerator(__package__ + "._speedups", SPEEDUPS_INTERFACE)
"""The C accelerator module when in use (``_writer`` takes its encoder too), else None."""
if speedups is not None:
    speedups._set_headers_type(Headers)
    scan_head_c = speedups.scan_head

SPEEDUPS: Final = scan_head_c is not None
"""Whether parsers use the C accelerator by default (built, and not turned off)."""
