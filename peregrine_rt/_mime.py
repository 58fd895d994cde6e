"""Content types for static files: the standard library's table plus the web's own types.

:func:`content_type` answers from the file name alone.  It starts from
:class:`mimetypes.MimeTypes` built from Python's defaults only — not from
``/etc/mime.types``, so the answer does not depend on the machine — and
overrides it with the types browsers expect for web files (``.js`` as
``text/javascript`` per RFC 9239, ``.mjs``, ``.wasm``, ``.webmanifest``,
fonts...).  Text types get ``; charset=utf-8``: static files are assumed to be
UTF-8, as nearly all web files are.
"""

from __future__ import annotations

import mimetypes
from typing import Final

__all__ = ["DEFAULT_TYPE", "content_type"]

DEFAULT_TYPE: Final = "application/octet-stream"

WEB_TYPES: Final = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
    ".map": "application/json",
    ".jsonld": "application/ld+json",
    ".svg": "image/svg+xml",
    ".svgz": "image/svg+xml",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/vnd.microsoft.icon",
    ".xml": "application/xml",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/plain",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".ics": "text/calendar",
    ".vtt": "text/vtt",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".ogv": "video/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".gz": "application/gzip",
    ".br": "application/x-brotli",
    ".zst": "application/zstd",
}

# Types that are text without saying so in their name (text/* always is).
_TEXT_TYPES: Final = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/ld+json",
        "application/manifest+json",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "image/svg+xml",
    }
)

_table = mimetypes.MimeTypes()  # Python's built-in table only (see the module docstring)
_cache: dict[str, str] = {}


def content_type(name: str) -> str:
    """The ``Content-Type`` for a file called ``name`` (its last suffix decides).

    >>> content_type("app.mjs")
    'text/javascript; charset=utf-8'
    >>> content_type("font.woff2")
    'font/woff2'
    >>> content_type("photo.JPG")
    'image/jpeg'
    >>> content_type("archive.tar.gz")
    'application/gzip'
    >>> content_type("README")
    'application/octet-stream'
    """
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > 0 else ""
    found = _cache.get(suffix)
    if found is not None:
        return found
    mime = WEB_TYPES.get(suffix) or (_table.types_map[1].get(suffix) if suffix else None)
    mime = mime or (_table.types_map[0].get(suffix) if suffix else None) or DEFAULT_TYPE
    if mime.startswith("text/") or mime in _TEXT_TYPES:
        mime += "; charset=utf-8"
    if len(_cache) < 1024:
        _cache[suffix] = mime
    return mime
