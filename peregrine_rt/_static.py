"""Static files: :class:`DirServer` for a directory tree, ``Response.file()`` for one file.

How a request becomes a file (``DirServer.serve``):

1. GET and HEAD only (405 with ``Allow`` otherwise).
2. ``request.path`` is already percent-decoded with dot segments resolved and
   encoded ``/`` or NUL refused (``_http._target.decode_path``).  What is left
   after the prefix is split into segments, and any segment that is empty,
   ``.``/``..``, hidden (a leading dot), or holds a backslash or control byte
   is refused before the filesystem is touched.
3. The segments are walked from the root (resolved once, when the
   ``DirServer`` is built) with ``lstat``: a symlink is refused unless
   ``follow_symlinks``, and then only if its target stays inside the root.
   Only regular files are served; a directory gets a redirect to ``dir/``,
   then its index file or (if enabled) a listing.
4. What the walk found is cached by request path, with the file's identity
   (inode, device, size, mtime).  A later request re-checks the identity with
   one ``stat``: the same inode is the file that passed the walk, so the cache
   can never serve something the walk would refuse.
5. Files up to ``small_file_size`` are read whole once and kept (an LRU
   bounded in bytes); their response is one ``bytes`` object, sent in one
   write like ``response.text()``.  Larger files are sent by the connection
   after the handler returns (:class:`FileBody`): ``os.sendfile`` on a plain
   socket, bounded chunks otherwise, each waiting for the client
   (backpressure).

The cache, the responses and the file bodies are in :mod:`peregrine_rt._files`;
the HTTP rules (RFC 9110 §13 preconditions, §14 ranges, content coding) in
:mod:`peregrine_rt._validators`; content types in :mod:`peregrine_rt._mime`.
"""

from __future__ import annotations

import html
import os
import stat
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

from ._files import CACHE_BYTES, REVALIDATE_AFTER, SMALL_FILE_SIZE, Entry, Files, error, inside
from ._mime import content_type as guess_content_type
from ._threads import run_sync

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response

__all__ = ["DirServer", "serve_file"]

LISTING_MAX: Final = 10_000  # entries shown in a directory listing
ALLOW: Final = b"GET, HEAD"


CacheControl = Mapping[str, str] | Sequence[tuple[str, str]]


class DirServer:
    """Serve the files under ``root``: ``await dir_server.serve(request, response)``.

    Args:
        root: the directory to serve (resolved once, now; it must exist).
        prefix: the URL path the directory is served at (``"/static/"``);
            requests outside it get 404.
        index: the file served for a directory URL (``None``: none).
        listing: answer a directory without an index file with an HTML list
            of its entries (off: 404).
        follow_symlinks: serve through symbolic links whose target is inside
            ``root`` (off: no symlink is ever followed).  A link out of the
            root is refused either way.
        hidden: serve names starting with a dot (off: 404 for any path with
            such a segment, ``.git/`` and ``.env`` included).
        precompressed: serve ``file.br`` / ``file.gz`` in place of ``file``
            to clients that accept them (with ``Content-Encoding`` and
            ``Vary: Accept-Encoding``), when they are no older than ``file``.
        cache_control: ``Cache-Control`` values by glob pattern on the path
            relative to the root, first match wins:
            ``{"assets/*": "public, max-age=31536000, immutable", "*.html": "no-cache"}``.
            ``*`` matches across ``/``.  No match: no ``Cache-Control``.
        multipart_ranges: answer a request for several ranges with
            ``multipart/byteranges`` (off: with the whole file, 200).
        small_file_size: files up to this size are read whole, kept in memory
            and sent with their head in one write; larger ones are streamed.
        cache_bytes: the most bytes of small files kept in memory (LRU).
        revalidate_after: seconds a file found once is served again without
            a ``stat`` to check it is unchanged (0: check on every request).
            A file changed on disk is served fresh after at most this long.

    Resource handling:
        A small file's bytes stay in memory (at most ``cache_bytes`` in all)
        until evicted or changed on disk.  A large file is opened for each
        request and closed by the connection when sent, whatever happens.

    Error handling:
        Refusals are plain-text answers that never show a filesystem path:
        400 (a backslash or control character in the path), 404 (missing,
        hidden, outside the root, a symlink, not a regular file), 405 (not
        GET or HEAD), 412, 416.  A request path that cannot be decoded
        raises :class:`~peregrine_rt.RemoteProtocolError` (400).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        prefix: str = "/",
        index: str | None = "index.html",
        listing: bool = False,
        follow_symlinks: bool = False,
        hidden: bool = False,
        precompressed: bool = True,
        cache_control: CacheControl | None = None,
        multipart_ranges: bool = True,
        small_file_size: int = SMALL_FILE_SIZE,
        cache_bytes: int = CACHE_BYTES,
        revalidate_after: float = REVALIDATE_AFTER,
    ) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise NotADirectoryError(f"DirServer root {os.fspath(root)!r} is not a directory")
        if index is not None and (not index or "/" in index or index in (".", "..")):
            raise ValueError(f"index must be a file name, not {index!r}")
        self.root = real
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self.index = index
        self.listing = listing
        self.follow_symlinks = follow_symlinks
        self.hidden = hidden
        items = cache_control.items() if isinstance(cache_control, Mapping) else cache_control
        self.cache_control: list[tuple[str, str]] = list(items or ())
        for _, value in self.cache_control:
            check_value = value.encode("latin-1")
            if any(b < 0x20 or b == 0x7F for b in check_value if b != 0x09):
                raise ValueError(f"invalid Cache-Control value {value!r}")
        self._files = Files(
            small_file_size=small_file_size,
            cache_bytes=cache_bytes,
            precompressed=precompressed,
            multipart_ranges=multipart_ranges,
            follow_symlinks=follow_symlinks,
            root=real,
            revalidate_after=revalidate_after,
        )

    def __repr__(self) -> str:
        return f"DirServer(prefix={self.prefix!r})"

    async def serve(
        self,
        request: Request,
        response: Response,
        *,
        path: str | None = None,
        filename: str | None = None,
    ) -> None:
        """Answer ``request`` from the directory (see the class docstring for what it refuses).

        Args:
            path: the URL path to look up instead of ``request.path`` (a
                route such as ``/download/<name>`` passes ``"/" + name``);
                it gets the same checks, so it cannot leave the root either.
            filename: send the file as an attachment with this name
                (``Content-Disposition``: the browser saves it).
        """
        method = request.method
        if method not in ("GET", "HEAD"):
            error(response, 405)
            response.headers.raw.append((b"allow", ALLOW))
            return
        target = request.path if path is None else path
        found = self._files.answer(request, response, target, self._find, target)
        if found is None:
            if filename is not None and response.status < 300:
                response.headers["content-disposition"] = _disposition(filename)
            return
        if isinstance(found, int):
            error(response, found)
        elif isinstance(found, _Listing):
            await self._list(request, response, str(found))
        elif isinstance(found, str):
            query = request.raw_query
            location = found + ("?" + query.decode("latin-1") if query else "")
            response.status = 301
            response.headers.raw.append((b"location", location.encode("latin-1")))

    def _find(self, path: str) -> Entry | int | str | _Listing:
        found = self._walk(path)
        if isinstance(found, tuple):
            fs_path, st, rel = found
            if st is None:
                return _Listing(fs_path)
            return self._build(fs_path, st, rel)
        return found

    def _build(self, fs_path: str, st: os.stat_result, rel: str) -> Entry:
        name = fs_path.rpartition("/")[2]
        cache_control = next((v for p, v in self.cache_control if fnmatchcase(rel, p)), None)
        return self._files.build(fs_path, st, guess_content_type(name), cache_control)

    def _walk(self, path: str) -> int | str | tuple[str, os.stat_result | None, str]:
        """Find the file for ``path``: a status, a redirect location, or ``(fs path, stat, rel)``.

        A stat of None means a directory to list.
        """
        prefix = self.prefix
        if not path.startswith(prefix):
            return _quote(prefix) if path + "/" == prefix else 404
        rel = path[len(prefix) :]
        segments = rel.split("/") if rel else []
        directory_url = not rel or rel.endswith("/")
        if directory_url and segments:
            segments.pop()
        for segment in segments:
            if not segment or segment in (".", ".."):
                return 404  # "a//b" (which could make an absolute path) and dot segments
            if "\\" in segment or not segment.isprintable():
                return 400  # backslashes, NUL, control characters: no file is named so
            if segment[0] == "." and not self.hidden:
                return 404
        fs_path = self.root
        st = self._lstat(fs_path)
        for segment in segments:
            fs_path = f"{fs_path}/{segment}"
            st = self._lstat(fs_path)
            if st is None:
                return 404
        if st is None:
            return 404
        if stat.S_ISDIR(st.st_mode):
            if not directory_url:
                return _quote(path) + "/"
            if self.index is not None:
                index_path = f"{fs_path}/{self.index}"
                index_st = self._lstat(index_path)
                if index_st is not None and stat.S_ISREG(index_st.st_mode):
                    return index_path, index_st, rel + self.index
            return (fs_path, None, rel) if self.listing else 404
        if directory_url or not stat.S_ISREG(st.st_mode):
            return 404  # "file/", devices, FIFOs, sockets
        return fs_path, st, rel

    def _lstat(self, fs_path: str) -> os.stat_result | None:
        """The stat of ``fs_path`` if it may be served (a symlink only if allowed and inside)."""
        try:
            st = os.lstat(fs_path)
            if stat.S_ISLNK(st.st_mode):
                if not self.follow_symlinks:
                    return None
                target = os.path.realpath(fs_path)
                if not inside(target, self.root) or (
                    not self.hidden and _hidden_below(target, self.root)
                ):
                    return None  # out of the root, or a way round the hidden-file rule
                st = os.stat(fs_path)
        except (OSError, ValueError):
            return None  # missing, not a directory, too long, no permission
        return st

    async def _list(self, request: Request, response: Response, fs_path: str) -> None:
        try:
            names = await run_sync(self._scan, fs_path)
        except OSError:
            error(response, 404)
            return
        url = request.path
        rows = [
            f'<li><a href="{html.escape(quote(name), quote=True)}">{html.escape(name)}</a></li>'
            for name in names
        ]
        title = html.escape(url)
        up = '<li><a href="../">../</a></li>' if url != self.prefix else ""
        response.headers.raw.append((b"cache-control", b"no-cache"))
        response.html(
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Index of {title}</title>'
            f"</head>\n<body><h1>Index of {title}</h1>\n<ul>\n{up}{''.join(rows)}\n</ul>\n"
            "</body></html>\n"
        )

    def _scan(self, fs_path: str) -> list[str]:
        """Entry names for a listing, directories with a trailing slash, sorted."""
        dirs: list[str] = []
        files: list[str] = []
        with os.scandir(fs_path) as it:
            for item in it:
                name = item.name
                if (name.startswith(".") and not self.hidden) or not name.isprintable():
                    continue
                if "\\" in name:
                    continue
                st = self._lstat(item.path)
                if st is None:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    dirs.append(name + "/")
                elif stat.S_ISREG(st.st_mode):
                    files.append(name)
                if len(dirs) + len(files) >= LISTING_MAX:
                    break
        return sorted(dirs) + sorted(files)


def _hidden_below(target: str, root: str) -> bool:
    """Whether a path inside ``root`` has a segment starting with a dot."""
    rel = os.path.relpath(target, root)
    return any(part.startswith(".") for part in rel.split(os.sep) if part != ".")


def _quote(path: str) -> str:
    return quote(path, safe="/!$&'()*+,;=:@~")


class _Listing(str):
    """The filesystem path of a directory to list."""


# -- Response.file ---------------------------------------------------------------------

_single = {
    precompressed: Files(
        small_file_size=SMALL_FILE_SIZE,
        cache_bytes=CACHE_BYTES // 4,
        precompressed=precompressed,
        multipart_ranges=True,
        follow_symlinks=True,
        root=None,
    )
    for precompressed in (False, True)
}


def serve_file(
    response: Response,
    path: str | os.PathLike[str],
    *,
    content_type: str | None,
    cache_control: str | None,
    filename: str | None,
    precompressed: bool,
) -> None:
    """``Response.file``: answer with one file, the request's conditionals and ranges applied."""
    conn = response.connection
    request = conn.request if conn is not None and conn.response is response else None
    if request is not None and request.method not in ("GET", "HEAD"):
        error(response, 405)
        response.headers.raw.append((b"allow", ALLOW))
        return
    fs_path = os.path.abspath(path)
    files = _single[precompressed]
    key = (fs_path, content_type, cache_control)
    arg = (files, fs_path, content_type, cache_control)
    found = files.answer(request, response, key, _find_file, arg)
    if found is not None:
        error(response, 404)
    elif filename is not None and response.status in (200, 206, 304):
        response.headers["content-disposition"] = _disposition(filename)


def _find_file(arg: tuple[Files, str, str | None, str | None]) -> Entry | int:
    files, fs_path, content_type, cache_control = arg
    try:
        st = os.stat(fs_path)
    except (OSError, ValueError):
        return 404
    if not stat.S_ISREG(st.st_mode):
        return 404
    ctype = content_type or guess_content_type(os.path.basename(fs_path))
    return files.build(fs_path, st, ctype, cache_control)


def _disposition(filename: str) -> str:
    """``attachment`` with an ASCII ``filename`` and if needed a UTF-8 ``filename*`` (RFC 6266)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
