"""Compression of dynamic responses: :class:`Compress`, a middleware.

What it compresses is a *fixed* body: what ``response.text()``,
``response.json()``, ``response.html()`` or ``response.body`` left when the
app returned.  It leaves alone:

* streamed responses and Server-Sent Events, unless ``streams=True``: then
  each piece is compressed and flushed at once (``Z_SYNC_FLUSH``, brotli's
  ``flush``), so the client gets every event when it is sent, for less
  saving than a whole body would give;
* file bodies (``response.file()``, :class:`~peregrine_rt.DirServer` for
  large files): they go out by ``sendfile``; serve ``.br``/``.gz`` siblings
  for those (``precompressed=True``);
* responses that already have a ``Content-Encoding``, a ``Content-Range``
  (206), or answer a request with ``Range``;
* types that do not shrink (images other than SVG, audio, video, archives,
  fonts in WOFF) whatever ``content_types`` says, and types not listed;
* bodies under ``minimum_size``, and any body whose compressed form is not
  smaller;
* responses with ``Cache-Control: no-transform``.

The coding is negotiated with ``choose_encoding``
(the same rules as pre-compressed static files: the client's highest
q-value wins, ``q=0`` refuses, ``*`` stands for codings not named, a tie goes
to brotli).  Brotli is used when the ``brotli`` module imports (the
``peregrine_rt[brotli]`` extra), else gzip only.

A ``HEAD`` request is compressed exactly as ``GET`` would be, so that its
``Content-Length``, ``Content-Encoding``, ``Vary`` and ``ETag`` are those of
the ``GET`` (the server sends no body for ``HEAD``; the compression is the
price of honest headers).
"""

from __future__ import annotations

import gzip
import importlib
import zlib
from typing import TYPE_CHECKING, Any

from ._middleware import Middleware, add_vary
from ._threads import run_sync
from ._validators import choose_encoding

brotli: Any  # the module (no type stubs), or None without the peregrine_rt[brotli] extra
try:
    brotli = importlib.import_module("brotli")
except ImportError:  # pragma: no cover - brotli is in the test extra
    brotli = None

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._request import Request
    from ._response import Response, StreamEncoder

__all__ = ["DEFAULT_CONTENT_TYPES", "NEVER_COMPRESSED", "OFFLOAD_SIZE", "Compress", "compressible"]

DEFAULT_CONTENT_TYPES: tuple[str, ...] = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "application/x-ndjson",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
)
"""The media types :class:`Compress` compresses unless told otherwise.

A pattern is a type (``application/json``), every subtype of a top-level type
(``text/*``) or every subtype with a structured suffix (``application/*+json``).
"""

NEVER_COMPRESSED: tuple[str, ...] = (
    "image/*",
    "audio/*",
    "video/*",
    "font/woff",
    "font/woff2",
    "text/event-stream",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-bzip2",
    "application/x-xz",
    "application/zstd",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/pdf",
)
"""Types never compressed, even when ``content_types`` matches them (already
compressed, or a stream).  SVG and icons are the exceptions to ``image/*``."""

_NEVER_EXCEPT = ("image/svg+xml", "image/x-icon")

OFFLOAD_SIZE = 256 * 1024
"""Bodies at least this large are compressed on the thread pool (``run_sync``), not
in the event loop (gzip at level 6 takes a few milliseconds per 256 KiB here)."""


def _matches(media_type: str, pattern: str) -> bool:
    major, _, minor = pattern.partition("/")
    their_major, _, their_minor = media_type.partition("/")
    if major != their_major:
        return False
    if minor == "*":
        return True
    if minor.startswith("*+"):
        return their_minor.endswith(minor[1:])
    return minor == their_minor


def compressible(content_type: str | None, patterns: Iterable[str]) -> bool:
    """Whether a body of ``content_type`` is worth compressing, given the ``patterns`` allowed.

    >>> compressible("text/html; charset=utf-8", DEFAULT_CONTENT_TYPES)
    True
    >>> compressible("image/png", ["image/*"])
    False
    """
    if not content_type:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type not in _NEVER_EXCEPT and any(_matches(media_type, p) for p in NEVER_COMPRESSED):
        return False
    return any(_matches(media_type, p) for p in patterns)


class Compress(Middleware):
    """Compress the app's fixed response bodies with br or gzip, as the client accepts.

    ::

        app = pr.Compress(Api)            # or pr.Compress(pr.CORS(Api, ...))

    Args:
        app: the handler to wrap (a class or an instance, see :class:`Middleware`).
        minimum_size: bodies shorter than this many bytes are sent as they are
            (compressing a small body costs more than it saves).
        gzip_level: zlib's level, 1 (fast) to 9 (small).
        brotli_quality: brotli's quality, 0 (fast) to 11 (small); 4 is close
            to gzip's speed at level 6 and smaller.
        content_types: the media types to compress (the default,
            ``DEFAULT_CONTENT_TYPES`` in ``peregrine_rt._compress``, lists
            text, JSON, JavaScript, XML and SVG); never those in
            ``NEVER_COMPRESSED`` (images, video, archives, fonts).

    A compressed response gets ``Content-Encoding``, and a strong ``ETag``
    becomes weak (``W/"..."``): the bytes differ from the identity ones,
    while the content is the same (what nginx does too; the app comparing
    ``If-None-Match`` must compare weakly, as RFC 9110 says it should).  Every
    response that *could* be compressed, whatever this client accepts, gets
    ``Vary: Accept-Encoding`` (added to the ``Vary`` the app set).

    Large bodies (``OFFLOAD_SIZE``, 256 KiB) are compressed on the server's
    thread pool, so that one large answer does not stall the other connections.
    Streams, SSE, files and the rest listed in the module docstring pass
    through untouched; so does an :class:`~peregrine_rt.HTTPError` answer
    (a short text the server writes).

    With ``streams=True``, streamed responses (``response.stream()``) and
    Server-Sent Events of a listed type (``text/event-stream`` counts as
    listed then) are compressed too, piece by piece: each piece is flushed at
    once, so nothing waits in the compressor (see :meth:`Response.on_stream
    <peregrine_rt.Response.on_stream>`).

    Error handling:
        ``ValueError`` for a level or quality out of range.
    """

    def __init__(
        self,
        app: type | object,
        *,
        minimum_size: int = 500,
        gzip_level: int = 6,
        brotli_quality: int = 4,
        content_types: Iterable[str] = DEFAULT_CONTENT_TYPES,
        streams: bool = False,
    ) -> None:
        if not 0 <= gzip_level <= 9:
            raise ValueError(f"gzip_level is 0 to 9, not {gzip_level}")
        if not 0 <= brotli_quality <= 11:
            raise ValueError(f"brotli_quality is 0 to 11, not {brotli_quality}")
        if isinstance(content_types, str):
            raise TypeError(f"content_types must be a list of types, not {content_types!r}")
        super().__init__(app)
        self.minimum_size = minimum_size
        self.gzip_level = gzip_level
        self.brotli_quality = brotli_quality
        self.content_types = tuple(t.lower() for t in content_types)
        self.streams = streams
        self.encodings = frozenset({b"br", b"gzip"} if brotli is not None else {b"gzip"})
        """The codings this instance may send (br only when ``brotli`` imports)."""

    async def handle(self, request: Request, response: Response) -> None:
        """Run the app, then compress what it left if the rules above allow it."""
        if self.streams:
            response.on_stream(lambda started: self.stream_encoder(request, started))
        response.hold()  # compressed after handle: finish() must not send it first
        await self.app.handle(request, response)
        if response.started or response.file_body is not None:
            return
        coding = self.choose(request, response)
        if coding is None:
            return
        body = response.body
        if len(body) >= OFFLOAD_SIZE:
            encoded = await run_sync(self.encode, body, coding)
        else:
            encoded = self.encode(body, coding)
        if len(encoded) >= len(body):
            return  # incompressible after all: the identity bytes are smaller
        headers = response.headers
        response.body = encoded
        headers["content-encoding"] = coding.decode("ascii")
        etag = headers.get("etag")
        if etag is not None and not etag.startswith("W/"):
            headers["etag"] = f"W/{etag}"

    def stream_encoder(self, request: Request, response: Response) -> StreamEncoder | None:
        """The encoder for a response that starts streaming, or None to send it as it is."""
        coding = self.choose(request, response, streaming=True)
        if coding is None:
            return None
        headers = response.headers
        headers["content-encoding"] = coding.decode("ascii")
        if "content-length" in headers:
            del headers["content-length"]
        etag = headers.get("etag")
        if etag is not None and not etag.startswith("W/"):
            headers["etag"] = f"W/{etag}"
        if coding == b"br":
            return _BrotliStream(self.brotli_quality)
        return _GzipStream(self.gzip_level)

    def choose(
        self, request: Request, response: Response, *, streaming: bool = False
    ) -> bytes | None:
        """The coding for this response (``b"br"``, ``b"gzip"``), or None to send it as it is.

        Adds ``Vary: Accept-Encoding`` when the response is one that could be
        compressed, even if this client gets the identity bytes.
        """
        status = response.status
        if status < 200 or status in (204, 205, 206, 304):
            return None
        headers = response.headers
        if "content-encoding" in headers or "content-range" in headers:
            return None
        content_type = headers.get("content-type")
        if streaming:
            media_type = (content_type or "").partition(";")[0].strip().lower()
            if media_type != "text/event-stream" and not compressible(
                content_type, self.content_types
            ):
                return None
        elif len(response.body) < self.minimum_size or not compressible(
            content_type, self.content_types
        ):
            return None
        cache_control = headers.get("cache-control")
        if cache_control is not None and "no-transform" in cache_control.lower():
            return None
        if "range" in request.headers:
            return None
        add_vary(headers, "Accept-Encoding")
        accept = request.headers.get("accept-encoding")
        if not accept:
            return None
        return choose_encoding(accept, self.encodings)

    def encode(self, body: bytes, coding: bytes) -> bytes:
        """``body`` compressed with ``coding`` (``b"br"`` or ``b"gzip"``) with these settings."""
        if coding == b"br":
            return bytes(brotli.compress(body, quality=self.brotli_quality))
        return gzip.compress(body, compresslevel=self.gzip_level, mtime=0)


class _GzipStream:
    """gzip, flushed after every piece (a StreamEncoder)."""

    def __init__(self, level: int) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: with the gzip header

    def encode(self, data: bytes) -> bytes:
        return self._zlib.compress(data) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._zlib.flush(zlib.Z_FINISH)


class _BrotliStream:
    """brotli, flushed after every piece (a StreamEncoder)."""

    def __init__(self, quality: int) -> None:
        self._brotli = brotli.Compressor(quality=quality)

    def encode(self, data: bytes) -> bytes:
        return bytes(self._brotli.process(data)) + bytes(self._brotli.flush())

    def finish(self) -> bytes:
        return bytes(self._brotli.finish())
