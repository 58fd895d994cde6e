"""The request parser's default limits (each a ``Config`` field of the same meaning)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_HEADERS_SIZE",
    "MAX_HEADER_COUNT",
    "MAX_HEADER_LINE",
    "MAX_LEADING_EMPTY_LINES",
    "MAX_REQUEST_LINE",
]

MAX_REQUEST_LINE: Final = 8192
"""Longest request line accepted (bytes, without the line end); longer gets 414."""
MAX_HEADER_LINE: Final = 8192
"""Longest single header line accepted; longer gets 431."""
MAX_HEADERS_SIZE: Final = 65536
"""Largest head (request line and all header lines) accepted; larger gets 431."""
MAX_HEADER_COUNT: Final = 1000
"""Most header lines accepted; more gets 431.

The head's size (``MAX_HEADERS_SIZE``) is the guard; this only bounds the
per-line work: 64 KiB of typical header lines (about 64 bytes each) is about
1,000 of them.  nginx, Go and h11 limit the size alone; 100 (the old default)
refused real requests that were well within the size limit."""
MAX_BODY_SIZE: Final = 1 << 20
"""Largest request body accepted (1 MiB); larger gets 413.  ``None`` lifts the limit."""
MAX_LEADING_EMPTY_LINES: Final = 16
"""Empty lines ignored before a request line (RFC 9112 §2.2); more gets 400."""
