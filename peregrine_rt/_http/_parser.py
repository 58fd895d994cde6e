"""The HTTP/1.0 and HTTP/1.1 request parser: bytes in, events out, no I/O.

Use::

    parser = RequestParser()
    parser.feed(data)            # any amount, as it arrives; feed_eof() at EOF
    event = parser.next_event()  # RequestHead, Data, EndOfMessage, NEED_DATA, PAUSED or CLOSED
    ...
    parser.start_next_cycle()    # after the response, for the next (pipelined) request

Two paths read a request head, and they must agree (a test forces every
generated request through both):

* The **fast path** handles the common request in one scan of the head: the
  request line (a common method, an origin-form target, HTTP/1.x) and *every*
  header line are checked against the RFC 9112 grammar while the fields that
  decide framing and connection handling (Host, Connection, Content-Length,
  Transfer-Encoding, Upgrade, Expect) are noted.  Header lines are not split
  into pairs until somebody reads them, and the query is parsed only on demand.
  The scan (``_scan.py``) is ``_speedups.scan_head`` (C) when the extension
  is built, else ``scan_head_py`` (a request-line regex, one ``lower()``, one compiled
  regex over the header block and one ``bytes.translate`` for control bytes);
  both give the same answer for every input, and a test holds them to it.
* The **general path** takes everything else — bare-LF line ends, lists and
  duplicates in the special fields, heads larger than the fast-path bound — and
  every rejection, line by line with a precise message and status.

Every refusal is a :class:`~peregrine_rt.exceptions.RemoteProtocolError`
(:class:`~peregrine_rt.exceptions.LimitExceeded` for size limits) with a
``status_hint``.  After an error the parser is dead: the framing of the stream
can no longer be trusted and the connection must be closed.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final

from ..exceptions import LimitExceeded, LocalProtocolError, RemoteProtocolError
from ._chunked import MAX_CHUNK_COUNT, MAX_CHUNK_EXTENSIONS, ChunkedDecoder
from ._events import NEED_DATA, PAUSED, Data, EndOfMessage, Event, RequestHead, Sentinel
from ._fields import (
    interpret_head,
    parse_field_line,
    parse_request_line,
    split_now,
)
from ._headers import Headers
from ._scan import SPEEDUPS
from ._scan import SPEEDUPS_INTERFACE as _SPEEDUPS_INTERFACE  # noqa: F401 - tests read it here
from ._scan import Cache as _Cache
from ._scan import Scanner as _Scanner
from ._scan import scan_head_c as _scan_head_c
from ._scan import scan_head_py as _scan_head_py

__all__ = [
    "CLOSED",
    "MAX_BODY_SIZE",
    "MAX_CHUNK_COUNT",
    "MAX_CHUNK_EXTENSIONS",
    "MAX_HEADERS_SIZE",
    "MAX_HEADER_COUNT",
    "MAX_HEADER_LINE",
    "MAX_REQUEST_LINE",
    "SPEEDUPS",
    "SPENT_PARSER",
    "RequestParser",
    "SpentParser",
]

from ._limits import (
    MAX_BODY_SIZE,
    MAX_HEADER_COUNT,
    MAX_HEADER_LINE,
    MAX_HEADERS_SIZE,
    MAX_LEADING_EMPTY_LINES,
    MAX_REQUEST_LINE,
)


class _Closed(Enum):
    CLOSED = "CLOSED"

    def __repr__(self) -> str:
        return self.value


CLOSED: Final = _Closed.CLOSED
"""The peer closed its side cleanly between requests (after :meth:`RequestParser.feed_eof`)."""


class _State(Enum):
    IDLE = auto()  # waiting for a request head
    BODY_LENGTH = auto()  # reading a Content-Length body
    CHUNKED = auto()  # reading a chunked body (its ChunkedDecoder knows where)
    DONE = auto()  # request complete, waiting for start_next_cycle()
    ERROR = auto()  # a protocol error was raised; nothing more is parsed


# The states as module globals: on CPython 3.11 reading an Enum member from its
# class (``_State.IDLE``) costs ~70 ns, a global ~6 ns, and the hot path reads
# a state several times per request.
_IDLE: Final = _State.IDLE
_BODY_LENGTH: Final = _State.BODY_LENGTH
_CHUNKED: Final = _State.CHUNKED
_DONE: Final = _State.DONE
_ERROR: Final = _State.ERROR


_NO_TRAILERS: Final = EndOfMessage()
_TCHAR_BYTES: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_HEAD_END_RE: Final = re.compile(rb"\n\r?\n")


class RequestParser:
    """Turns the bytes a client sends into request events (see the module docstring).

    Args:
        max_request_line: longest request line (414 beyond).
        max_header_line: longest header line (431 beyond).
        max_headers_size: largest head in total (431 beyond).
        max_header_count: most header lines (431 beyond).
        max_body_size: largest body, or ``None`` for no limit (413 beyond,
            enforced while the body streams, before it is buffered).
        max_chunk_count: most chunks in a chunked body (413 beyond).
        max_chunk_extensions: most chunk-extension bytes in a chunked body
            (413 beyond).  A chunked body's trailer section has the head's
            limits: ``max_header_line``, ``max_header_count`` and
            ``max_headers_size`` (431 beyond).
        fast_path: use the fast path; ``False`` sends every request through
            the general path (the tests use it to cross-check the two).
        cache_headers: reuse the fast path's result for a header block that is
            byte-for-byte the one of the previous request (see ``_fast_head``).
        head_class: the class of the heads produced: :class:`RequestHead` or a
            subclass taking the same constructor arguments (the server's
            ``Request`` is one, so a request is one object, not two).
        speedups: let the fast path use the C accelerator when it is built
            (see ``SPEEDUPS``); ``False`` keeps it in pure Python.  Both read
            every head the same way (the tests check it).

    Attributes:
        their_eof: whether :meth:`feed_eof` was called.
    """

    __slots__ = (
        "_body_left",
        "_buf",
        "_cache",
        "_cache_headers",
        "_chunks",
        "_empty_lines",
        "_fast_limit",
        "_fast_path",
        "_head",
        "_head_class",
        "_scan",
        "_scan_head",
        "_state",
        "max_body_size",
        "max_chunk_count",
        "max_chunk_extensions",
        "max_header_count",
        "max_header_line",
        "max_headers_size",
        "max_request_line",
        "their_eof",
    )

    def __init__(
        self,
        *,
        max_request_line: int = MAX_REQUEST_LINE,
        max_header_line: int = MAX_HEADER_LINE,
        max_headers_size: int = MAX_HEADERS_SIZE,
        max_header_count: int = MAX_HEADER_COUNT,
        max_body_size: int | None = MAX_BODY_SIZE,
        max_chunk_count: int = MAX_CHUNK_COUNT,
        max_chunk_extensions: int = MAX_CHUNK_EXTENSIONS,
        fast_path: bool = True,
        cache_headers: bool = True,
        head_class: type[RequestHead] = RequestHead,
        speedups: bool = True,
    ) -> None:
        self.max_request_line = max_request_line
        self.max_header_line = max_header_line
        self.max_headers_size = max_headers_size
        self.max_header_count = max_header_count
        self.max_body_size = max_body_size
        self.max_chunk_count = max_chunk_count
        self.max_chunk_extensions = max_chunk_extensions
        # A head no longer than this cannot break a length limit, so the fast
        # path need not check them one by one.
        self._fast_limit = min(max_request_line, max_header_line, max_headers_size)
        self._scan_head: _Scanner = (
            _scan_head_c if speedups and _scan_head_c is not None else _scan_head_py
        )
        self._fast_path = fast_path
        self._cache_headers = cache_headers
        self._head_class = head_class
        self._cache: _Cache | None = None
        self._buf: bytes | bytearray = b""
        self._scan = 0
        self._empty_lines = 0
        self._state = _IDLE
        self._head: RequestHead | None = None
        self._body_left = 0
        self._chunks: ChunkedDecoder | None = None
        self.their_eof = False

    # -- input ------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add bytes received from the client (any amount, ``b""`` is ignored)."""
        if self.their_eof:
            raise LocalProtocolError("feed() after feed_eof()")
        if not data:
            return
        buf = self._buf
        if not buf:
            self._buf = data
        elif isinstance(buf, bytearray):
            buf += data
        else:
            self._buf = bytearray(buf) + data

    def feed_eof(self) -> None:
        """Note that the client closed its sending side."""
        self.their_eof = True

    @property
    def trailing_data(self) -> bytes:
        """Bytes received but not consumed (the next request, or WebSocket frames)."""
        return bytes(self._buf)

    @property
    def has_pending_data(self) -> bool:
        """Whether bytes were received that no event has consumed yet."""
        return bool(self._buf)

    @property
    def body_remaining(self) -> int | None:
        """Body bytes still to come: 0 once the body ended, ``None`` while a
        chunked body goes on (its length is unknown)."""
        state = self._state
        if state is _BODY_LENGTH:
            return self._body_left
        if state in (_DONE, _IDLE):
            return 0
        return None

    @property
    def head(self) -> RequestHead | None:
        """The head of the request being read (``None`` while idle)."""
        return self._head

    # -- output -----------------------------------------------------------

    def next_event(self) -> Event | Sentinel | _Closed:
        """Return the next event, ``NEED_DATA``, ``PAUSED`` or ``CLOSED``.

        Raises:
            RemoteProtocolError: the client sent an invalid request; the parser
                stays in an error state and the connection must be closed.
        """
        state = self._state
        try:
            if state is _IDLE:
                return self._next_head()
            if state is _BODY_LENGTH:
                return self._next_length_body()
            if state is _DONE:
                return PAUSED
            if state is _ERROR:
                raise RemoteProtocolError("the parser already failed on this connection")
            return self._next_chunked_body()
        except RemoteProtocolError:
            self._state = _ERROR
            raise

    def start_next_cycle(self) -> None:
        """Forget the finished request and get ready for the next one.

        Allowed once the request's body has ended: after its ``EndOfMessage``,
        or when no body byte is left to read (the ``EndOfMessage`` then need
        not be taken).
        """
        state = self._state
        if state is not _DONE and not (state is _BODY_LENGTH and not self._body_left):
            raise LocalProtocolError(f"start_next_cycle() in state {state.name}")
        self._state = _IDLE
        self._head = None
        self._scan = 0
        self._empty_lines = 0

    # -- the head ----------------------------------------------------------

    def _next_head(self) -> RequestHead | Sentinel | _Closed:
        buf = self._buf
        if not buf:
            if self.their_eof:
                return CLOSED
            return NEED_DATA
        if buf[0] in (13, 10):  # b"\r", b"\n": empty lines before the request line
            buf = self._skip_empty_lines(buf)
            if not buf:
                return CLOSED if self.their_eof else NEED_DATA
        # Fast path: the whole head is (probably) there and short.
        if self._scan == 0 and self._fast_path:
            head = self._fast_head(buf)
            if head is not None:
                return head
        return self._general_head(buf)

    def _skip_empty_lines(self, buf: bytes | bytearray) -> bytes | bytearray:
        skipped = self._empty_lines
        while buf[:1] in (b"\r", b"\n"):
            if buf[:2] == b"\r\n":
                buf = buf[2:]
            elif buf[:1] == b"\n":
                buf = buf[1:]
            elif len(buf) == 1:
                break  # a lone CR: wait for what follows
            else:
                raise RemoteProtocolError("bare CR before the request line")
            skipped += 1
            if skipped > MAX_LEADING_EMPTY_LINES:
                raise RemoteProtocolError("too many empty lines before the request line")
        self._empty_lines = skipped
        self._buf = buf
        return buf

    def _fast_head(self, buf: bytes | bytearray) -> RequestHead | None:
        """Parse ``buf`` by the fast path, or return None to use the general path."""
        if type(buf) is not bytes:
            buf = bytes(buf)
        # A client on a keep-alive connection tends to send the same header
        # block again and again (HPACK builds on this too): what the last block
        # yielded is kept and reused when the next head holds the same bytes
        # (the scanner compares them).  It is a function of those bytes alone.
        scanned = self._scan_head(
            buf, self._fast_limit, self.max_header_count, self._cache, Headers
        )
        if scanned is None:
            return None
        (
            end,
            method,
            target,
            version,
            headers,
            host,
            keep_alive,
            clen,
            chunked,
            upgrade,
            expect_continue,
            info,
        ) = scanned
        if info is not None and self._cache_headers:
            self._cache = (headers._block, info)
        head = self._head_class(
            method,
            target,
            version,
            headers,
            host,
            keep_alive,
            clen,
            chunked,
            upgrade,
            expect_continue,
            None if target.find(b"%") < 0 else split_now(method, target),
        )
        self._buf = buf[end + 2 :]
        if clen is None and not chunked:
            self._head = head
            self._state = _BODY_LENGTH
            self._body_left = 0
        else:
            self._start_body(head)
        return head

    def _general_head(self, buf: bytes | bytearray) -> RequestHead | Sentinel:
        m = _HEAD_END_RE.search(buf, max(0, self._scan - 2))
        if m is None:
            self._check_incomplete_head(buf)
            self._scan = len(buf)
            if self.their_eof:
                raise RemoteProtocolError("connection closed in the middle of a request head")
            return NEED_DATA
        self._scan = 0
        head_end = m.start() + 1
        eol = buf.find(b"\n")
        if eol - (buf[eol - 1 : eol] == b"\r") > self.max_request_line:
            raise LimitExceeded("request line too long", 414)
        if head_end > self.max_headers_size:
            raise LimitExceeded("request head too large", 431)
        lines = bytes(buf[:head_end]).split(b"\n")
        lines.pop()  # the empty string after the last "\n"
        request_line = lines[0]
        if request_line[-1:] == b"\r":
            request_line = request_line[:-1]
        if len(request_line) > self.max_request_line:
            raise LimitExceeded("request line too long", 414)
        method, target, version = parse_request_line(request_line)
        if len(lines) - 1 > self.max_header_count:
            raise LimitExceeded(f"more than {self.max_header_count} header lines", 431)
        fields: list[tuple[bytes, bytes]] = []
        for raw_line in lines[1:]:
            line = raw_line[:-1] if raw_line[-1:] == b"\r" else raw_line
            if len(line) > self.max_header_line:
                raise LimitExceeded("header line too long", 431)
            fields.append(parse_field_line(line))
        head = interpret_head(method, target, version, fields, self._head_class)
        self._buf = buf[m.end() :]
        self._start_body(head)
        return head

    def _check_incomplete_head(self, buf: bytes | bytearray) -> None:
        # Refuse what cannot become a request as soon as it shows (a TLS
        # ClientHello on a plain port, random bytes) rather than at a timeout.
        if buf[0] not in _TCHAR_BYTES and buf != b"\r":
            raise RemoteProtocolError("this is not an HTTP/1.x request")
        eol = buf.find(b"\n")
        if 0 <= eol <= self.max_request_line + 1 and self._scan <= eol:
            line = bytes(buf[:eol])
            parse_request_line(line[:-1] if line[-1:] == b"\r" else line)
        if eol < 0:
            if len(buf) > self.max_request_line + 1:
                raise LimitExceeded("request line too long", 414)
        elif eol > self.max_request_line + 1:
            raise LimitExceeded("request line too long", 414)
        # The blank line that ends the head does not count (at most CR LF of it is here).
        if len(buf) > self.max_headers_size + 2:
            raise LimitExceeded("request head too large", 431)
        last_eol = buf.rfind(b"\n")
        if last_eol > 0 and len(buf) - last_eol - 1 > self.max_header_line + 1:
            raise LimitExceeded("header line too long", 431)

    # -- the body ------------------------------------------------------------

    def _start_body(self, head: RequestHead) -> None:
        self._head = head
        limit = self.max_body_size
        if head.chunked:
            self._state = _CHUNKED
            self._chunks = ChunkedDecoder(
                max_body_size=limit,
                max_chunk_count=self.max_chunk_count,
                max_chunk_extensions=self.max_chunk_extensions,
                max_trailer_line=self.max_header_line,
                max_trailer_count=self.max_header_count,
                max_trailers_size=self.max_headers_size,
            )
        elif head.content_length:
            if limit is not None and head.content_length > limit:
                raise LimitExceeded(
                    f"request body of {head.content_length} bytes is over the limit of {limit}",
                    413,
                )
            self._body_left = head.content_length
            self._state = _BODY_LENGTH
        else:
            self._state = _BODY_LENGTH
            self._body_left = 0

    def _next_length_body(self) -> Data | EndOfMessage | Sentinel:
        left = self._body_left
        if left == 0:
            self._state = _DONE
            return _NO_TRAILERS
        buf = self._buf
        if not buf:
            if self.their_eof:
                raise RemoteProtocolError("connection closed before the request body ended")
            return NEED_DATA
        if len(buf) <= left:
            self._buf = b""
            self._body_left = left - len(buf)
            return Data(bytes(buf))
        self._buf = buf[left:]
        self._body_left = 0
        return Data(bytes(buf[:left]))

    def _next_chunked_body(self) -> Data | EndOfMessage | Sentinel:
        buf = self._buf
        chunks = self._chunks
        assert chunks is not None
        event, used = chunks.decode(buf, self.their_eof)
        if used:
            self._buf = buf[used:]
        if type(event) is EndOfMessage:
            self._state = _DONE
            self._chunks = None
        return event


class SpentParser(RequestParser):
    """A parser whose connection reads no more HTTP (it became a WebSocket).

    One shared instance, :data:`SPENT_PARSER`, takes the place of the
    connection's own parser, so that an idle WebSocket does not keep a parser
    (with its buffer and header cache) it will never use again.  It reads as a
    parser whose request has ended: no pending data, ``body_remaining`` 0,
    ``next_event()`` PAUSED.  It refuses input and a next cycle: being shared,
    it must never change.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self._state = _DONE

    def feed(self, data: bytes) -> None:
        raise LocalProtocolError("this connection reads no more HTTP (it was upgraded)")

    def feed_eof(self) -> None:
        raise LocalProtocolError("this connection reads no more HTTP (it was upgraded)")

    def start_next_cycle(self) -> None:
        raise LocalProtocolError("this connection reads no more HTTP (it was upgraded)")


SPENT_PARSER: Final = SpentParser()
"""The shared :class:`SpentParser`."""
