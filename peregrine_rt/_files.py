"""The file-serving machinery behind :class:`~peregrine_rt.DirServer` and ``Response.file()``.

A file is served from an :class:`Entry`: its representation (:class:`_Rep`:
headers built once, and the bytes of a small file) and those of its
pre-compressed siblings.  :class:`Files` keeps entries in an LRU bounded in
bytes, re-checks a file's identity (inode, device, size, mtime) with one
``stat`` per request, and fills a :class:`~peregrine_rt.Response` for a request
(preconditions, ranges, content coding: :mod:`peregrine_rt._validators`).

A small file's response is one ``bytes`` body, sent by the connection in one
write like ``response.text()``.  A large file becomes a :class:`FileBody`, an
open descriptor the connection streams after the handler returns (see
``_connection.py``) and always closes.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import trio

from ._validators import (
    BOUNDARY,
    MAX_RANGES,
    choose_encoding,
    if_range_holds,
    multipart_parts,
    parse_ranges,
    preconditions,
)

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response
    from ._transport import Transport

__all__ = [
    "CACHE_BYTES",
    "CHUNK_SIZE",
    "FILE_STATS",
    "REVALIDATE_AFTER",
    "SMALL_FILE_SIZE",
    "Entry",
    "FileBody",
    "FileStats",
    "Files",
    "error",
    "inside",
    "send_file_by_reads",
]

CHUNK_SIZE: Final = 65536
"""Bytes read and sent at a time when a file is streamed without ``sendfile``."""
SMALL_FILE_SIZE: Final = 65536
"""Files up to this size are read whole, kept in memory, and sent with their head in one write."""
CACHE_BYTES: Final = 32 << 20
"""Default bound on the bytes of small files a server keeps in memory."""
CACHE_ENTRIES: Final = 4096
REVALIDATE_AFTER: Final = 1.0
"""Default seconds a cached file is served without a ``stat`` to check it is unchanged."""
RECHECK_SECONDS: Final = 1.0  # how long a cached entry trusts its list of .br/.gz siblings
SIBLINGS: Final = ((b"br", ".br"), (b"gzip", ".gz"))

_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_NOFOLLOW = os.O_NOFOLLOW

log = logging.getLogger("peregrine_rt.static")


class FileStats:
    """Counters of streamed file bodies, process-wide (tests read them; so may you).

    Attributes:
        read: bytes read from files into memory to be sent (not by ``sendfile``).
        sent: bytes of files the kernel accepted (both ways).
        in_flight: bytes read but not yet accepted by the kernel, now.
        peak_in_flight: the most ``in_flight`` has been.
        shortfalls: bodies cut short because the file shrank while being sent.
    """

    __slots__ = ("in_flight", "peak_in_flight", "read", "sent", "shortfalls")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.read = 0
        self.sent = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.shortfalls = 0


FILE_STATS: Final = FileStats()


class FileBody:
    """A body the connection sends after the handler returns: bytes and ranges of an open file.

    ``parts`` are ``bytes`` (multipart separators) and ``(offset, count)``
    ranges of ``fd``.  ``fd`` is -1 for a HEAD response (nothing is read).
    The connection closes it, whatever happens.
    """

    __slots__ = ("fd", "length", "parts")

    def __init__(self, fd: int, parts: list[bytes | tuple[int, int]]) -> None:
        self.fd = fd
        self.parts = parts
        self.length = sum(len(p) if isinstance(p, bytes) else p[1] for p in parts)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class _Changed(Exception):
    """The file changed between its ``stat`` and its ``open``: look again."""


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class _Rep:
    """One representation of a file (itself, or its .br/.gz sibling) as it is served."""

    __slots__ = ("body", "etag", "headers", "headers_304", "key", "mtime", "path", "size")

    def __init__(
        self,
        path: str,
        st: os.stat_result,
        content_type: bytes,
        encoding: bytes | None,
        vary: bool,
        cache_control: bytes | None,
        body: bytes | None,
    ) -> None:
        self.path = path
        self.key = _key(st)
        self.size = st.st_size
        self.body = body
        mtime = min(int(st.st_mtime), int(time.time()))  # never later than Date
        self.mtime = mtime
        tag = b"-" + encoding[:2] if encoding else b""
        self.etag = b'"%x-%x%s"' % (st.st_mtime_ns, st.st_size, tag)
        last_modified = formatdate(mtime, usegmt=True).encode("ascii")
        cache: list[tuple[bytes, bytes]] = [(b"etag", self.etag), (b"last-modified", last_modified)]
        if vary:
            cache.insert(0, (b"vary", b"accept-encoding"))
        if cache_control is not None:
            cache.append((b"cache-control", cache_control))
        self.headers_304 = cache
        head = [(b"content-type", content_type)]
        if encoding:
            head.append((b"content-encoding", encoding))
        self.headers = [*head, *cache, (b"accept-ranges", b"bytes")]


class Entry:
    """What a path serves: the file's representation and its pre-compressed siblings."""

    __slots__ = ("checked", "rep", "siblings", "trusted_until", "variants")

    def __init__(
        self, rep: _Rep, variants: dict[bytes, _Rep], siblings: tuple[object, ...]
    ) -> None:
        self.rep = rep
        self.variants = variants
        self.siblings = siblings  # the probe result they were built from, to notice changes
        self.checked = time.monotonic()
        self.trusted_until = 0.0  # until when the files are not stat()-ed again


class Files:
    """What DirServer and Response.file share: entries, the byte-bounded cache, responses."""

    def __init__(
        self,
        *,
        small_file_size: int,
        cache_bytes: int,
        precompressed: bool,
        multipart_ranges: bool,
        follow_symlinks: bool,
        root: str | None,
        revalidate_after: float = REVALIDATE_AFTER,
    ) -> None:
        self.revalidate_after = revalidate_after
        self.small_file_size = small_file_size
        self.cache_bytes = cache_bytes
        self.precompressed = precompressed
        self.multipart_ranges = multipart_ranges
        self.open_flags = _OPEN if follow_symlinks else _OPEN | _NOFOLLOW
        self.root = root
        self.entries: OrderedDict[object, Entry] = OrderedDict()
        self.bytes = 0

    # -- the cache --------------------------------------------------------------------

    def cached(self, key: object) -> Entry | None:
        """The entry for ``key`` if the files behind it are still the same.

        "Still the same" is checked with a ``stat`` at most every
        ``revalidate_after`` seconds (each check costs about as much as the
        rest of a small file's response).
        """
        entry = self.entries.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if now >= entry.trusted_until and not self._still_same(entry, now):
            self.forget(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def _still_same(self, entry: Entry, now: float) -> bool:
        rep = entry.rep
        try:
            if _key(os.stat(rep.path)) != rep.key:
                return False
        except (OSError, ValueError):
            return False
        if self.precompressed and now - entry.checked > RECHECK_SECONDS:
            if _signature(self._probe(rep.path, rep.key[3])) != entry.siblings:
                return False
            entry.checked = now
        entry.trusted_until = now + self.revalidate_after
        return True

    def forget(self, key: object) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= _entry_bytes(entry)

    def remember(self, key: object, entry: Entry) -> None:
        self.forget(key)
        size = _entry_bytes(entry)
        if size > self.cache_bytes:
            return
        entry.trusted_until = time.monotonic() + self.revalidate_after
        self.entries[key] = entry
        self.bytes += size
        while self.bytes > self.cache_bytes or len(self.entries) > CACHE_ENTRIES:
            _, old = self.entries.popitem(last=False)
            self.bytes -= _entry_bytes(old)

    # -- building entries ---------------------------------------------------------------

    def build(
        self, path: str, st: os.stat_result, content_type: str, cache_control: str | None
    ) -> Entry:
        """Read (if small) and describe ``path`` and its siblings; raises _Changed or OSError."""
        ctype = content_type.encode("latin-1")
        cc = cache_control.encode("latin-1") if cache_control is not None else None
        siblings = self._probe(path, st.st_mtime_ns) if self.precompressed else []
        vary = bool(siblings)
        rep = _Rep(path, st, ctype, None, vary, cc, None)
        rep = self._with_body(rep, st, ctype, None, vary, cc)
        variants = {}
        for encoding, sibling_path, sibling_st in siblings:
            variant = _Rep(sibling_path, sibling_st, ctype, encoding, vary, cc, None)
            variants[encoding] = self._with_body(variant, sibling_st, ctype, encoding, vary, cc)
        return Entry(rep, variants, _signature(siblings))

    def _with_body(
        self,
        rep: _Rep,
        st: os.stat_result,
        ctype: bytes,
        encoding: bytes | None,
        vary: bool,
        cc: bytes | None,
    ) -> _Rep:
        if st.st_size > self.small_file_size:
            return rep
        fd = os.open(rep.path, self.open_flags)
        try:
            fst = os.fstat(fd)
            if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev) or not stat.S_ISREG(fst.st_mode):
                raise _Changed
            body = _read_all(fd, fst.st_size)
        finally:
            os.close(fd)
        if _key(fst) != rep.key:
            rep = _Rep(rep.path, fst, ctype, encoding, vary, cc, None)
        rep.body = body
        return rep

    def _probe(self, path: str, mtime_ns: int) -> list[tuple[bytes, str, os.stat_result]]:
        """The usable pre-compressed siblings of ``path``: ``(encoding, path, stat)``.

        A sibling older than the file is stale (the file was edited and not
        compressed again) and is not used.
        """
        found: list[tuple[bytes, str, os.stat_result]] = []
        for encoding, suffix in SIBLINGS:
            sibling = path + suffix
            try:
                st = os.lstat(sibling)
                if stat.S_ISLNK(st.st_mode):
                    if self.open_flags & _NOFOLLOW or not inside(
                        os.path.realpath(sibling), self.root
                    ):
                        continue
                    st = os.stat(sibling)
            except (OSError, ValueError):
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mtime_ns >= mtime_ns:
                found.append((encoding, sibling, st))
        return found

    # -- answering ------------------------------------------------------------------------

    def respond(self, request: Request | None, response: Response, entry: Entry) -> None:
        """Fill ``response`` from ``entry`` for ``request`` (conditionals, ranges, coding)."""
        rep = entry.rep
        method = "GET"
        if request is not None:
            method = request.method
            headers = request.headers
            if entry.variants:
                accept = headers.get("accept-encoding")
                if accept:
                    encoding = choose_encoding(accept, entry.variants)
                    if encoding is not None:
                        rep = entry.variants[encoding]
            status = preconditions(headers, rep.etag, rep.mtime, method)
            if status != 200:
                response.status = status
                if status == 304:
                    response.headers.raw.extend(rep.headers_304)
                    response.body = b""
                else:
                    response.body = b"412 Precondition Failed\n"
                    response.headers.raw.append((b"content-type", b"text/plain; charset=utf-8"))
                return
            range_header = headers.get("range") if method == "GET" else None
            if range_header is not None and if_range_holds(
                headers.get("if-range"), rep.etag, rep.mtime
            ):
                ranges = parse_ranges(range_header, rep.size)
                if ranges is not None and self._send_ranges(response, rep, ranges):
                    return
        response.status = 200
        response.headers.raw.extend(rep.headers)
        if rep.body is not None:
            response.body = rep.body
        else:
            self._attach(response, rep, [(0, rep.size)], method)

    def _send_ranges(self, response: Response, rep: _Rep, ranges: list[tuple[int, int]]) -> bool:
        """Answer 206 or 416; False to answer the whole file instead."""
        raw = response.headers.raw
        size = rep.size
        if not ranges:
            response.status = 416
            raw.append((b"content-range", b"bytes */%d" % size))
            raw.append((b"content-type", b"text/plain; charset=utf-8"))
            response.body = b"416 Range Not Satisfiable\n"
            return True
        if len(ranges) == 1:
            start, end = ranges[0]
            response.status = 206
            raw.extend(rep.headers)
            raw.append((b"content-range", b"bytes %d-%d/%d" % (start, end, size)))
            if rep.body is not None:
                response.body = rep.body[start : end + 1]
            else:
                self._attach(response, rep, [(start, end - start + 1)], "GET")
            return True
        if not self.multipart_ranges or not _disjoint(ranges):
            return False
        ctype = next(v for n, v in rep.headers if n == b"content-type")
        parts = multipart_parts(ranges, size, ctype)
        response.status = 206
        raw.extend(h for h in rep.headers if h[0] != b"content-type")
        raw.append((b"content-type", b"multipart/byteranges; boundary=" + BOUNDARY))
        if rep.body is not None:
            body = rep.body
            response.body = b"".join(
                p if isinstance(p, bytes) else body[p[0] : p[0] + p[1]] for p in parts
            )
        else:
            self._attach(response, rep, parts, "GET")
        return True

    def _attach(
        self, response: Response, rep: _Rep, parts: list[bytes | tuple[int, int]], method: str
    ) -> None:
        """Give ``response`` a :class:`FileBody` of ``rep`` (read now if not on a connection)."""
        if method == "HEAD":
            response.attach_file(FileBody(-1, parts))
            return
        fd = os.open(rep.path, self.open_flags)
        try:
            if _key(os.fstat(fd)) != rep.key:
                raise _Changed
            if response.connection is None:  # a Response built by hand: read it now
                response.body = b"".join(
                    p if isinstance(p, bytes) else os.pread(fd, p[1], p[0]) for p in parts
                )
                return
        except BaseException:
            os.close(fd)
            raise
        response.attach_file(FileBody(fd, parts))

    def answer(
        self,
        request: Request | None,
        response: Response,
        key: object,
        find: Callable[[Any], object],
        arg: Any,
    ) -> object:
        """Answer from the cached entry for ``key``, else from ``find(arg)``'s.

        Returns None once answered, or what ``find`` returned if it was not an
        :class:`Entry` (the caller answers that: a status, a redirect...).  A
        file that changes between its ``stat`` and its ``open`` is looked up
        once more, then answered with 503.
        """
        entry = self.cached(key)
        mark = len(response.headers.raw)
        for attempt in range(2):
            try:
                if entry is None:
                    found = find(arg)
                    if not isinstance(found, Entry):
                        return found
                    entry = found
                    self.remember(key, entry)
                self.respond(request, response, entry)
                return None
            except _Changed:
                self.forget(key)
                entry = None
                del response.headers.raw[mark:]
                if attempt:
                    error(response, 503, "the file is changing; try again")
                    response.headers.raw.append((b"retry-after", b"1"))
            except OSError as exc:
                # Gone between stat and open, or unreadable: 404.  Out of file
                # descriptors, an I/O error: 503 (not a 404 a proxy may cache).
                # Never the path.
                self.forget(key)
                del response.headers.raw[mark:]
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP):
                    log.info("cannot open the file for %r: %s", request, exc.strerror)
                    error(response, 404)
                else:
                    log.warning("cannot read the file for %r", request, exc_info=True)
                    error(response, 503, "the file cannot be read now; try again")
                    response.headers.raw.append((b"retry-after", b"1"))
                return None
        return None


def _signature(found: list[tuple[bytes, str, os.stat_result]]) -> tuple[object, ...]:
    return tuple((encoding, path, _key(st)) for encoding, path, st in found)


def _entry_bytes(entry: Entry) -> int:
    size = len(entry.rep.body or b"") + 512
    for variant in entry.variants.values():
        size += len(variant.body or b"")
    return size


def _read_all(fd: int, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining > 0:
        data = os.read(fd, remaining)
        if not data:
            raise _Changed  # shorter than its stat said: it is being written
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def _disjoint(ranges: list[tuple[int, int]]) -> bool:
    """Whether the ranges are few and none overlaps or touches another."""
    if len(ranges) > MAX_RANGES:
        return False
    ordered = sorted(ranges)
    return all(ordered[i][1] + 1 < ordered[i + 1][0] for i in range(len(ordered) - 1))


def inside(real: str, root: str | None) -> bool:
    if root is None:
        return True
    return real == root or real.startswith(root if root == "/" else root + "/")


def error(response: Response, status: int, detail: str = "") -> None:
    """A plain-text error answer (never a filesystem path)."""
    text = f"{status} {HTTPStatus(status).phrase}\n"
    if detail:
        text += detail + "\n"
    response.text(text, status=status)


async def send_file_by_reads(
    transport: Transport, fd: int, offset: int, count: int, head: bytes = b""
) -> int:
    """Send ``head``, then ``count`` bytes of ``fd`` from ``offset`` in CHUNK_SIZE pieces.

    Each piece is read only once the previous one is accepted (``send_all``
    returns), so memory in use is one piece whatever the client's speed.
    Returns the file bytes sent: fewer than ``count`` if the file is shorter.
    (``os.pread`` of a file in the page cache is a memory copy; a cold read
    from a slow disk blocks the loop for that piece, as ``sendfile`` would.)
    """
    stats = FILE_STATS
    sent = 0
    while sent < count:
        data = os.pread(fd, min(CHUNK_SIZE, count - sent), offset + sent)
        if not data:
            break
        size = len(data)
        stats.read += size
        stats.in_flight += size
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            await transport.send_all(head + data if head else data)
        finally:
            stats.in_flight -= size
        head = b""
        del data
        stats.sent += size
        sent += size
        await trio.lowlevel.checkpoint()  # a fast client must not starve the others
    if head:
        await transport.send_all(head)
    return sent
