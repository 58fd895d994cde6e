"""Chunked transfer coding (RFC 9112 §7.1): the body decoder behind ``RequestParser``.

A chunked body is a series of ``size [extensions] CRLF data CRLF`` chunks, a
last chunk of size 0, an optional trailer section and an empty line.  The
decoder reads as much of that as the parser's buffer holds, keeping a position
in the buffer rather than slicing it after every line (slicing made a body of
small chunks cost time quadratic in the buffer size), and hands the data of
every chunk it found in one :class:`Data` event: a body sent in 2-byte chunks
comes out in receive-sized pieces, not as half a million 2-byte objects.

Everything a client controls is bounded, so that what one body costs in memory
and time is bounded whatever its chunking (the limits are named constants,
overridable per parser, and listed in ``docs/supported-http.rst``):

* the data: ``max_body_size`` (413), checked on each chunk-size line, before
  the chunk arrives;
* the number of chunks: ``MAX_CHUNK_COUNT`` (413), whatever ``max_body_size``
  says, so that even an unlimited body cannot be a million tiny chunks;
* one chunk-size line with its extensions: ``MAX_CHUNK_LINE`` (400), and all
  the extension bytes of a body: ``MAX_CHUNK_EXTENSIONS`` (413);
* the trailer section: the head's limits, ``max_header_line`` per line,
  ``max_header_count`` lines and ``max_headers_size`` in all (431).

A refusal met after some chunk data in the same call is raised on the next
call, after that data was returned: the events before an error are the same
however the bytes were cut.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final

from ..exceptions import LimitExceeded, RemoteProtocolError
from ._abnf import chunk_header_re
from ._events import NEED_DATA, Data, EndOfMessage, Sentinel
from ._fields import parse_field_line

__all__ = ["MAX_CHUNK_COUNT", "MAX_CHUNK_EXTENSIONS", "MAX_CHUNK_LINE", "ChunkedDecoder"]

MAX_CHUNK_LINE: Final = 4096
"""Longest chunk-size line (with extensions) accepted; longer gets 400."""
MAX_CHUNK_COUNT: Final = 1 << 19
"""Most chunks in one body (524,288: a 1 MiB body in 2-byte chunks); more gets 413.

Each chunk costs the parser about half a microsecond of CPU whatever its
size, so this bounds the work of one body at about a quarter of a second, also
when ``max_body_size`` is None.  Clients send chunks of kilobytes (one per
write of a streamed upload); a body of the default ``max_body_size`` fits in
2-byte chunks.
"""
MAX_CHUNK_EXTENSIONS: Final = 65536
"""Most chunk-extension bytes (what follows the size on chunk-size lines) in one body; 413.

Extensions carry nothing the server uses; real clients send none.
"""


class _Part(Enum):
    SIZE = auto()  # waiting for a chunk-size line
    DATA = auto()  # inside chunk data
    CRLF = auto()  # waiting for the CRLF after chunk data
    TRAILERS = auto()  # reading the trailer section
    DONE = auto()  # the empty line after the trailers was read


# Module globals for the members (see the note in _parser.py: a global is read
# ten times faster than an Enum member from its class).
_SIZE: Final = _Part.SIZE
_DATA: Final = _Part.DATA
_CRLF: Final = _Part.CRLF
_TRAILERS: Final = _Part.TRAILERS
_DONE: Final = _Part.DONE


_chunk_header: Final = chunk_header_re.fullmatch
# The common chunk-size line, alone and after the CRLF ending the chunk before
# it: at most 15 hex digits (below _SIZE_LIMIT), no extension.
_size_line: Final = re.compile(rb"([0-9A-Fa-f]{1,15})\r\n").match
_crlf_and_size_line: Final = re.compile(rb"\r\n([0-9A-Fa-f]{1,15})\r\n").match
_SIZE_LIMIT: Final = 1 << 63
"""Chunk sizes from here on are refused: they overflow the 64-bit sizes of other software."""


def _size_line_error(buf: bytes | bytearray, pos: int, eol: int) -> RemoteProtocolError:
    if eol - pos > MAX_CHUNK_LINE:
        return RemoteProtocolError("chunk-size line too long")
    return RemoteProtocolError(f"invalid chunk-size line {bytes(buf[pos:eol])[:80]!r}")


class ChunkedDecoder:
    """Decodes one chunked request body, fed from the parser's buffer.

    Args:
        max_body_size: most data bytes in all, or ``None`` for no limit (413).
        max_chunk_count: most chunks (413).
        max_chunk_extensions: most chunk-extension bytes in all (413).
        max_trailer_line: longest trailer line (431).
        max_trailer_count: most trailer lines (431).
        max_trailers_size: largest trailer section, its lines and their line
            ends, the empty line after them not counted (431).
    """

    __slots__ = (
        "_chunks",
        "_extensions",
        "_left",
        "_part",
        "_seen",
        "_trailers",
        "_trailers_size",
        "max_body_size",
        "max_chunk_count",
        "max_chunk_extensions",
        "max_trailer_count",
        "max_trailer_line",
        "max_trailers_size",
    )

    def __init__(
        self,
        *,
        max_body_size: int | None,
        max_chunk_count: int = MAX_CHUNK_COUNT,
        max_chunk_extensions: int = MAX_CHUNK_EXTENSIONS,
        max_trailer_line: int,
        max_trailer_count: int,
        max_trailers_size: int,
    ) -> None:
        self.max_body_size = max_body_size
        self.max_chunk_count = max_chunk_count
        self.max_chunk_extensions = max_chunk_extensions
        self.max_trailer_line = max_trailer_line
        self.max_trailer_count = max_trailer_count
        self.max_trailers_size = max_trailers_size
        self._part = _SIZE
        self._left = 0  # data bytes still to come in the current chunk
        self._seen = 0  # data bytes announced so far
        self._chunks = 0
        self._extensions = 0
        self._trailers: list[tuple[bytes, bytes]] = []
        self._trailers_size = 0

    def decode(
        self, buf: bytes | bytearray, eof: bool
    ) -> tuple[Data | EndOfMessage | Sentinel, int]:
        """Read the body from ``buf``; return the next event and how many bytes it used.

        ``eof``: no byte will follow ``buf`` (the client closed its side).

        Raises:
            RemoteProtocolError: invalid framing, or the peer closed mid-body.
            LimitExceeded: a limit of the class docstring was crossed.
        """
        # The loop runs once per chunk, so it keeps what it counts in locals,
        # and the common chunk-size line (hex digits, CRLF: no extension) is
        # read by one match, together with the CRLF that ends the chunk before
        # it.  A body of 2-byte chunks costs about half a microsecond per chunk.
        part = self._part
        left = self._left
        seen = self._seen
        chunks = self._chunks
        extensions = self._extensions
        limit = self.max_body_size
        max_chunks = self.max_chunk_count
        pos = 0
        end = len(buf)
        data: bytes | bytearray | None = None  # the first piece of data read by this call
        more: bytearray | None = None  # all of it, once there are two pieces
        error: RemoteProtocolError | None = None
        while True:
            if part is _DATA:
                if pos == end:
                    break
                stop = pos + left if end - pos > left else end
                piece = buf[pos:stop]
                if data is None:
                    data = piece
                elif more is None:
                    more = bytearray(data)
                    more += piece
                else:
                    more += piece
                left -= stop - pos
                pos = stop
                if left:
                    break
                part = _CRLF
            # Read a chunk-size line: its size, where it ends, its extension bytes.
            if part is _CRLF:
                m = _crlf_and_size_line(buf, pos)
                if m is None:
                    if end - pos < 2:
                        if end > pos and buf[pos] != 13:  # b"\r"
                            error = RemoteProtocolError("chunk data not followed by CRLF")
                        break
                    if buf[pos] != 13 or buf[pos + 1] != 10:
                        error = RemoteProtocolError("chunk data not followed by CRLF")
                        break
                    pos += 2
                    part = _SIZE
                    continue
                size = int(m[1], 16)
                line_end = m.end()
                ext = 0
            elif part is _SIZE:
                m = _size_line(buf, pos)
                if m is not None:
                    size = int(m[1], 16)
                    line_end = m.end()
                    ext = 0
                else:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if end - pos > MAX_CHUNK_LINE + 1:  # + the CR of the line end
                            error = RemoteProtocolError("chunk-size line too long")
                        elif buf.find(b"\n", pos) >= 0:
                            error = RemoteProtocolError("chunk-size line must end with CRLF")
                        break
                    m = _chunk_header(buf, pos, eol)
                    if m is None or eol - pos > MAX_CHUNK_LINE:
                        error = _size_line_error(buf, pos, eol)
                        break
                    size = int(m[1], 16)
                    if size >= _SIZE_LIMIT:
                        error = RemoteProtocolError("chunk size overflows")
                        break
                    ext = eol - m.end(1)
                    if extensions + ext > self.max_chunk_extensions:
                        error = LimitExceeded(
                            f"chunk extensions over {self.max_chunk_extensions} bytes in one body",
                            413,
                        )
                        break
                    line_end = eol + 2
            else:
                break
            # Take the line (nothing above changed state: a refusal leaves the
            # line to be read again on the next call, after the data).
            if not size:
                extensions += ext
                pos = line_end
                part = _TRAILERS
                break
            if limit is not None and seen + size > limit:
                error = LimitExceeded(f"chunked request body is over the limit of {limit}", 413)
                break
            if chunks >= max_chunks:
                error = LimitExceeded(f"chunked request body in more than {max_chunks} chunks", 413)
                break
            extensions += ext
            seen += size
            chunks += 1
            left = size
            pos = line_end
            part = _DATA
        self._part = part
        self._left = left
        self._seen = seen
        self._chunks = chunks
        self._extensions = extensions
        if more is not None:
            return Data(bytes(more)), pos
        if data is not None:
            return Data(data if type(data) is bytes else bytes(data)), pos
        if error is not None:
            raise error
        if part is _TRAILERS:
            return self._next_trailer_line(buf, pos, eof)
        if eof:
            raise RemoteProtocolError("connection closed before the chunked body ended")
        return NEED_DATA, pos

    def _next_trailer_line(
        self, buf: bytes | bytearray, pos: int, eof: bool
    ) -> tuple[EndOfMessage | Sentinel, int]:
        end = len(buf)
        while True:
            eol = buf.find(b"\n", pos)
            if eol < 0:
                rest = end - pos
                if rest > self.max_trailer_line + 1:  # + the CR of the line end
                    raise LimitExceeded("trailer line too long", 431)
                # At least rest + 1 bytes once its LF comes (an empty line does not count).
                if rest >= 2 and self._trailers_size + rest + 1 > self.max_trailers_size:
                    raise LimitExceeded("trailer section too large", 431)
                if eof:
                    raise RemoteProtocolError("connection closed in the chunked trailer")
                return NEED_DATA, pos
            line = bytes(buf[pos:eol])
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                self._part = _DONE
                return EndOfMessage(tuple(self._trailers)), eol + 1
            if len(line) > self.max_trailer_line:
                raise LimitExceeded("trailer line too long", 431)
            if len(self._trailers) >= self.max_trailer_count:
                raise LimitExceeded("too many trailer fields", 431)
            self._trailers_size += eol + 1 - pos
            if self._trailers_size > self.max_trailers_size:
                raise LimitExceeded("trailer section too large", 431)
            name, value = parse_field_line(line)
            self._trailers.append((name.lower(), value))
            pos = eol + 1
