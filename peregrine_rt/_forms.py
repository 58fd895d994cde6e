"""Form bodies: ``await request.form()`` for urlencoded and ``multipart/form-data``.

The body is parsed as it streams in (``request.stream()``), never read whole
first: python-multipart's sans-IO ``MultipartParser`` and ``QuerystringParser``
turn each piece into callbacks, which build a :class:`FormData` of text fields
and :class:`UploadFile` objects.

Memory: a text field is held in memory, capped at :data:`MAX_FIELD_SIZE`; a
file goes to a ``SpooledTemporaryFile``, in memory up to
``Config.form_spool_size`` bytes, then on disk.  Writes that may touch the
disk run on :func:`~peregrine_rt.run_sync`'s threads, one hop per piece of
body; writes to memory are plain calls.  A 20 MiB upload costs about
``form_spool_size`` plus one piece of body.

Errors: a malformed body is an :class:`~peregrine_rt.HTTPError` with a reason
(400, 413 past a part limit, 415 not a form); over ``max_body_size`` it is the
stream's ``LimitExceeded`` (413).  Files already spooled are closed first.
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import weakref
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile
from typing import IO, TYPE_CHECKING, Final
from urllib.parse import unquote_to_bytes

import trio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, QuerystringParser, parse_options_header

from ._http import Headers
from ._threads import run_sync
from .exceptions import HTTPError

if TYPE_CHECKING:
    from types import TracebackType

    from ._request import Request

__all__ = [
    "MAX_FIELD_SIZE",
    "MAX_FILENAME_BYTES",
    "MAX_PART_HEADERS",
    "MAX_PART_HEADER_SIZE",
    "FormData",
    "FormLimits",
    "UploadFile",
    "parse_form",
    "read_form",
    "safe_filename",
]

MAX_FIELD_SIZE: Final = 1 << 20
"""Largest text (non-file) field, name and value, in bytes (413 beyond)."""
MAX_PART_HEADERS: Final = 8
"""Most header lines in one multipart part (400 beyond)."""
MAX_PART_HEADER_SIZE: Final = 4096
"""Longest header line of a multipart part, name and value, in bytes (400 beyond)."""
MAX_FILENAME_BYTES: Final = 255
"""Longest :attr:`UploadFile.filename`, in UTF-8 bytes (a file name on most file systems)."""
MAX_BOUNDARY_LENGTH: Final = 200
"""Longest multipart boundary accepted (RFC 2046 says 70; some clients send more)."""

URLENCODED: Final = "application/x-www-form-urlencoded"
MULTIPART: Final = "multipart/form-data"
_ACCEPT: Final = {"accept": f"{URLENCODED}, {MULTIPART}"}  # RFC 9110 §15.5.16
_CACHE_KEY: Final = "peregrine_rt.form"
_parser_log = logging.getLogger(
    "peregrine_rt.forms"
)  # in request.state: the FormData, or the error

# The charsets a form may declare, by their usual names, and the codec used.
# US-ASCII is decoded as UTF-8 (its superset): lenient, never wrong for ASCII.
_CHARSETS: Final = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "iso-8859-1": "latin-1",
    "iso8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
}
# Printable ASCII, not ending in a space (RFC 2046's bchars, as Werkzeug reads them).
_BOUNDARY = re.compile(rb"[ -~]{0,%d}[!-~]" % (MAX_BOUNDARY_LENGTH - 1))
_WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICES: Final = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789¹²³"]
)


def safe_filename(raw: str) -> str:
    """A client's file name reduced to a safe single path component (may be ``""``).

    Keeps the last component of a POSIX or Windows path, drops control and
    format characters (NUL, newlines, the bidi overrides that disguise an
    extension), replaces the characters Windows forbids with ``_``, strips
    leading dots (no ``..``, no hidden files) and trailing dots and spaces,
    prefixes a Windows device name (``CON.txt`` becomes ``_CON.txt``), and
    cuts the stem so that the name is at most :data:`MAX_FILENAME_BYTES`
    bytes of UTF-8, the extension kept.  The result is NFC-normalised.

    It is still the client's choice: not unique, not a trusted extension.
    Store uploads under names you pick.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    name = unicodedata.normalize("NFC", name)
    name = _WINDOWS_UNSAFE.sub("_", name).lstrip(". ").rstrip(". ")
    if name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        name = "_" + name  # Windows opens CON, CON.txt and CON.tar.gz as the console
    _, dot, ext = name.rpartition(".")
    if len(name.encode()) > MAX_FILENAME_BYTES:
        suffix = f".{ext}" if dot and len(ext.encode()) <= 16 else ""
        room = MAX_FILENAME_BYTES - len(suffix.encode())
        base = name[: len(name) - len(suffix)] if suffix else name
        base = base.encode()[:room].decode("utf-8", "ignore").rstrip(". ")
        name = base + suffix
    return name


class UploadFile:
    """A file of a ``multipart/form-data`` body.

    Attributes:
        filename: the client's file name made safe: one path component, no
            control characters, at most 255 bytes (see :doc:`web/forms`);
            ``""`` when the form's file input was left empty.
        raw_filename: the file name exactly as the client sent it (never use
            it as a path).
        content_type: the media type of the part's ``Content-Type``, lower
            case, without parameters (``application/octet-stream`` if none).
        headers: the part's own headers (:class:`~peregrine_rt.Headers`).
        size: the file's size in bytes.
        file: the contents, a binary file object positioned at the start:
            a ``tempfile.SpooledTemporaryFile`` kept in memory up to
            ``Config.form_spool_size`` bytes and on disk beyond.  Use it
            directly (``shutil.copyfileobj``, a library that wants a file), or
            through the async :meth:`read` and :meth:`seek`, which go to a
            worker thread once the file is on disk.

    Resource handling:
        :meth:`close` (or :meth:`FormData.close` for every file of a form)
        frees the file at once; an upload nobody closed is freed when it is
        garbage-collected, without a ``ResourceWarning``.
    """

    __slots__ = (
        "__weakref__",
        "_finalizer",
        "_spool_size",
        "content_type",
        "file",
        "filename",
        "headers",
        "raw_filename",
        "size",
    )

    def __init__(
        self,
        file: IO[bytes],
        *,
        filename: str = "",
        content_type: str = "application/octet-stream",
        headers: Headers | None = None,
        size: int | None = None,
        spool_size: int | None = None,
    ) -> None:
        """Wrap ``file`` (the parser builds these; tests and apps may too).

        ``filename`` is the client's: :attr:`filename` is its safe form.
        Without ``size``, the size is measured by seeking to the end.
        ``spool_size`` is the ``max_size`` of ``file`` if it is a
        ``SpooledTemporaryFile`` (it is on disk once bigger).
        """
        self.file = file
        self.raw_filename = filename
        self.filename = safe_filename(filename)
        self.content_type = content_type
        self.headers = headers if headers is not None else Headers([])
        if size is None:
            size = file.seek(0, io.SEEK_END)
            file.seek(0)
        self.size = size
        self._spool_size = spool_size
        self._finalizer = weakref.finalize(self, file.close)

    @property
    def in_memory(self) -> bool:
        """Whether the contents are in memory (``False`` once spooled to disk)."""
        if self._spool_size is None:
            return isinstance(self.file, io.BytesIO)
        return self.size <= self._spool_size  # a SpooledTemporaryFile rolls over past it

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left by default) from the current position."""
        if self.in_memory:
            await trio.lowlevel.checkpoint()
            return self.file.read(size)
        return await run_sync(self.file.read, size)

    async def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position, as ``file.seek``; returns the new position."""
        if self.in_memory:
            await trio.lowlevel.checkpoint()
            return self.file.seek(offset, whence)
        return await run_sync(self.file.seek, offset, whence)

    async def close(self) -> None:
        """Close the file and free its memory or disk space (a second call does nothing)."""
        await trio.lowlevel.checkpoint()
        self._finalizer()

    def __repr__(self) -> str:
        return (
            f"UploadFile(filename={self.filename!r}, size={self.size}, "
            f"content_type={self.content_type!r})"
        )


class FormData(Mapping[str, str | UploadFile]):
    """A parsed form: an immutable multi-dict of text fields and :class:`UploadFile` s.

    ``form["name"]`` is the first value of the field (as for
    :class:`~peregrine_rt.QueryParams`; a ``KeyError`` if absent),
    :meth:`getlist` every value in order, :meth:`multi_items` every pair in
    body order.  A value is a ``str`` for a text field, an
    :class:`UploadFile` for a file part (a part whose ``Content-Disposition``
    has a ``filename``).

    Resource handling:
        The form owns its files.  ``with await request.form() as form:``
        (or ``form.close()`` / ``await form.aclose()``) closes them at the
        end of the block; forms nobody closed have their files freed when
        they are garbage-collected (the request, which keeps its form, is
        dropped when the connection moves on).  Keep an upload past the
        request by copying its ``file`` before closing.
    """

    __slots__ = ("_dict", "_items")

    def __init__(self, items: Iterable[tuple[str, str | UploadFile]] = ()) -> None:
        self._items = list(items)
        first: dict[str, str | UploadFile] = {}
        for key, value in self._items:
            first.setdefault(key, value)
        self._dict = first

    def __getitem__(self, key: str) -> str | UploadFile:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def getlist(self, key: str) -> list[str | UploadFile]:
        """Every value of ``key``, in body order (empty if absent)."""
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str | UploadFile]]:
        """All ``(name, value)`` pairs, repeats included, in body order."""
        return list(self._items)

    def close(self) -> None:
        """Close every :class:`UploadFile` of the form (again does nothing)."""
        for _, value in self._items:
            if isinstance(value, UploadFile):
                value.file.close()  # its finalizer, run at collection, then does nothing

    async def aclose(self) -> None:
        """:meth:`close`, as an async call (trio's resource convention)."""
        await trio.lowlevel.checkpoint()
        self.close()

    def __enter__(self) -> FormData:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FormData({self._items!r})"


@dataclass(frozen=True, slots=True)
class FormLimits:
    """The limits one parse applies (``read_form`` builds it from ``Config``)."""

    max_fields: int = 1000
    max_files: int = 100
    max_part_size: int | None = None
    spool_size: int = 1 << 20

    @property
    def max_field_size(self) -> int:
        """Largest text field: :data:`MAX_FIELD_SIZE`, or ``max_part_size`` if smaller."""
        if self.max_part_size is None:
            return MAX_FIELD_SIZE
        return min(MAX_FIELD_SIZE, self.max_part_size)


async def read_form(
    request: Request,
    *,
    max_fields: int | None = None,
    max_files: int | None = None,
    max_part_size: int | None = None,
) -> FormData:
    """Parse ``request``'s body as a form, once (``Request.form()`` calls it).

    The form, or the error, is kept in ``request.state``: a second call
    returns the same :class:`FormData` (whatever limits it is given) or
    raises the same error again.  Without a ``Content-Type`` and without a
    body, the form is empty.
    """
    state = request.state
    cached = state.get(_CACHE_KEY)
    if isinstance(cached, FormData):
        return cached
    if isinstance(cached, HTTPError):
        raise HTTPError(cached.status, cached.detail, cached.headers)
    config = request.config
    limits = FormLimits(
        max_fields=config.form_max_fields if max_fields is None else max_fields,
        max_files=config.form_max_files if max_files is None else max_files,
        max_part_size=config.form_max_part_size if max_part_size is None else max_part_size,
        spool_size=config.form_spool_size,
    )
    content_type = request.headers.get("content-type")
    if content_type is None and not (request.chunked or request.content_length):
        form = FormData()
    else:
        try:
            form = await parse_form(content_type, request.stream(), limits)
        except HTTPError as exc:
            state[_CACHE_KEY] = exc
            raise
    state[_CACHE_KEY] = form
    return form


async def parse_form(
    content_type: str | None, chunks: AsyncIterable[bytes], limits: FormLimits
) -> FormData:
    """Parse the body arriving as ``chunks`` as a form of ``content_type``.

    The sans-server heart of :func:`read_form` (tests feed it any chunking).

    Raises:
        HTTPError: 415 for another content type or an unsupported charset
            (before reading anything), 400 for a malformed body or too many
            fields or files, 413 for a part over its limit.
    """
    try:
        return await _parse(content_type, chunks, limits)
    finally:
        # An async generator left half-read (a refused body) is closed now,
        # not by the garbage collector.
        aclose: Callable[[], Awaitable[object]] | None = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _parse(
    content_type: str | None, chunks: AsyncIterable[bytes], limits: FormLimits
) -> FormData:
    kind, params = parse_options_header(content_type or "")
    if kind not in (URLENCODED.encode(), MULTIPART.encode()):
        shown = (content_type or "no Content-Type").split(";")[0].strip()[:100]
        raise HTTPError(415, f"expected a form ({URLENCODED} or {MULTIPART}), not {shown}", _ACCEPT)
    charset = _charset(params.get(b"charset"), status=415)
    if kind == URLENCODED.encode():
        return await _parse_urlencoded(chunks, limits, charset)
    boundary = params.get(b"boundary")
    if boundary is None:
        raise HTTPError(400, f"{MULTIPART} without a boundary parameter")
    if not _BOUNDARY.fullmatch(boundary):
        raise HTTPError(400, f"{MULTIPART} with an invalid boundary (1-200 printable ASCII)")
    return await _MultipartReader(boundary, limits, charset).read(chunks)


def _charset(name: bytes | None, *, status: int) -> str:
    if name is None:
        return "utf-8"
    codec = _CHARSETS.get(name.decode("latin-1").strip().lower())
    if codec is None:
        shown = name.decode("latin-1")[:40]
        headers = _ACCEPT if status == 415 else None
        raise HTTPError(status, f"unsupported charset {shown!r} (use UTF-8)", headers)
    return codec


def _decode(raw: bytes | bytearray, charset: str, what: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError:
        raise HTTPError(400, f"{what} is not valid {charset.upper()}") from None


def _too_many(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise HTTPError(400, f"too many {what} (the limit is {limit})")


# -- application/x-www-form-urlencoded ----------------------------------------------------


async def _parse_urlencoded(
    chunks: AsyncIterable[bytes], limits: FormLimits, charset: str
) -> FormData:
    items: list[tuple[str, str | UploadFile]] = []
    name, value = bytearray(), bytearray()
    field_limit = limits.max_field_size

    def on_field_start() -> None:
        _too_many(len(items) + 1, limits.max_fields, "fields")
        name.clear()
        value.clear()

    def grow(into: bytearray) -> Callable[[bytes, int, int], None]:
        def on_data(data: bytes, start: int, end: int) -> None:
            into.extend(data[start:end])
            if len(name) + len(value) > field_limit:
                raise HTTPError(413, f"a field is over {field_limit} bytes")

        return on_data

    def decoded(raw: bytearray, what: str) -> str:
        # WHATWG: "+" is a space, then percent-decoding, where an invalid
        # escape ("%zz", "%4") stays as it is; then the charset, strictly.
        return _decode(unquote_to_bytes(bytes(raw).replace(b"+", b" ")), charset, what)

    def on_field_end() -> None:
        key = decoded(name, "a field name")
        items.append((key, decoded(value, f"field {key!r}")))

    parser = QuerystringParser(
        {
            "on_field_start": on_field_start,
            "on_field_name": grow(name),
            "on_field_data": grow(value),
            "on_field_end": on_field_end,
        }
    )
    async for chunk in chunks:
        parser.write(chunk)  # non-strict: it raises nothing of its own
    parser.finalize()
    return FormData(items)


# -- multipart/form-data --------------------------------------------------------------


@dataclass(slots=True)
class _Part:
    """The part being read: its headers, then its value or its file."""

    headers: list[tuple[bytes, bytes]]
    name: str = ""
    charset: str = "utf-8"
    size: int = 0
    value: bytearray | None = None
    upload: UploadFile | None = None


class _MultipartReader:
    """The callbacks of one ``MultipartParser`` run, and the form they build."""

    def __init__(self, boundary: bytes, limits: FormLimits, charset: str) -> None:
        self.boundary = boundary
        self.limits = limits
        self.charset = charset
        self.items: list[tuple[str, str | UploadFile]] = []
        self.uploads: list[UploadFile] = []
        self.files = 0
        self.part = _Part([])
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.ended = False
        # File data the last piece of body brought, to write after parser.write().
        self.pending: list[tuple[UploadFile, memoryview]] = []

    async def read(self, chunks: AsyncIterable[bytes]) -> FormData:
        parser = MultipartParser(
            self.boundary,
            {
                "on_part_begin": self.on_part_begin,
                "on_header_begin": self.on_header_begin,
                "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished,
                "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end,
                "on_end": self.on_end,
            },
        )
        parser.logger = _parser_log  # its warnings on bad bodies, under our name
        received = 0
        try:
            async for chunk in chunks:
                received += len(chunk)
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise HTTPError(400, f"malformed multipart body: {exc}") from None
                if self.pending:
                    await self.flush()
            parser.finalize()
            if received == 0:
                return FormData()
            if not self.ended:
                raise HTTPError(400, "truncated multipart body: no closing boundary")
            for upload in self.uploads:
                if upload.size:
                    await upload.seek(0)
        except BaseException:
            for upload in self.uploads:
                upload.file.close()
            raise
        return FormData(self.items)

    async def flush(self) -> None:
        """Write the file data the last piece of body brought (on a thread if it may hit disk)."""
        pending, self.pending = self.pending, []
        to_disk = False
        for upload, data in pending:
            upload.size += len(data)  # what the file holds once written
            to_disk = to_disk or not upload.in_memory  # rolls over, or has rolled
        if to_disk:
            await run_sync(_write_all, pending)
        else:
            _write_all(pending)

    # -- the parser's callbacks (plain calls, within parser.write) --

    def on_part_begin(self) -> None:
        self.part = _Part([])

    def on_header_begin(self) -> None:
        self.header_name.clear()
        self.header_value.clear()
        if len(self.part.headers) >= MAX_PART_HEADERS:
            raise HTTPError(400, f"multipart header count over {MAX_PART_HEADERS} in a part")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name.extend(data[start:end])
        self._check_header_size()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value.extend(data[start:end])
        self._check_header_size()

    def _check_header_size(self) -> None:
        if len(self.header_name) + len(self.header_value) > MAX_PART_HEADER_SIZE:
            raise HTTPError(400, f"multipart header size over {MAX_PART_HEADER_SIZE} bytes")

    def on_header_end(self) -> None:
        self.part.headers.append((bytes(self.header_name), bytes(self.header_value).strip()))

    def on_headers_finished(self) -> None:
        part = self.part
        headers = Headers(part.headers)
        dispositions = headers.getlist("content-disposition")
        if len(dispositions) != 1:
            raise HTTPError(400, "a multipart part needs one Content-Disposition header")
        kind, params = parse_options_header(dispositions[0])
        raw_name = params.get(b"name")
        if kind != b"form-data" or raw_name is None:
            raise HTTPError(
                400, 'a multipart part is not Content-Disposition: form-data; name="..."'
            )
        part.name = _decode(raw_name, self.charset, "a field name")
        _too_many(len(self.items) + 1, self.limits.max_fields, "fields")
        content_type, type_params = parse_options_header(headers.get("content-type"))
        raw_filename = params.get(b"filename")
        if raw_filename is None:
            part.charset = _charset(
                type_params.get(b"charset") or self.charset.encode(), status=400
            )
            part.value = bytearray()
            return
        self.files += 1
        _too_many(self.files, self.limits.max_files, "files")
        filename = _decode(raw_filename, self.charset, f"the file name of {part.name!r}")
        spooled: IO[bytes] = SpooledTemporaryFile(max_size=self.limits.spool_size)  # noqa: SIM115  # the UploadFile owns it
        upload = UploadFile(
            spooled,
            filename=filename,
            content_type=content_type.decode("latin-1") or "application/octet-stream",
            headers=headers,
            size=0,
            spool_size=self.limits.spool_size,
        )
        part.upload = upload
        self.uploads.append(upload)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.size += end - start
        upload = part.upload
        if upload is not None:
            limit = self.limits.max_part_size
            if limit is not None and part.size > limit:
                raise HTTPError(413, f"file {part.name!r} is over {limit} bytes")
            self.pending.append((upload, memoryview(data)[start:end]))
        elif part.value is not None:
            limit = self.limits.max_field_size
            if part.size > limit:
                raise HTTPError(413, f"field {part.name!r} is over {limit} bytes")
            part.value += memoryview(data)[start:end]

    def on_part_end(self) -> None:
        part = self.part
        if part.upload is not None:
            self.items.append((part.name, part.upload))
        elif part.value is not None:
            text = _decode(part.value, part.charset, f"field {part.name!r}")
            self.items.append((part.name, text))

    def on_end(self) -> None:
        self.ended = True


def _write_all(pending: list[tuple[UploadFile, memoryview]]) -> None:
    for upload, data in pending:
        upload.file.write(data)
