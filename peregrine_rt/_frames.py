"""The WebSocket fast path: the common frame, read and written without wsproto.

Almost every frame a chat or dashboard sees is small, unfragmented,
uncompressed text or binary.  wsproto handles every frame correctly but spends
most of a small echo's time in generic machinery; these functions handle just
that common shape (RFC 6455 §5.2) and hand everything else to wsproto:

* :func:`parse_simple_frames` reads complete client frames with FIN set, no RSV
  bits, opcode text or binary, masked, with a 7- or 16-bit length, from the
  start of a buffer; it stops at the first frame of any other shape (or an
  incomplete one, or text that is not UTF-8) and returns the offset where
  wsproto must take over.
* :func:`encode_frame` writes an unmasked server frame for one whole message.

:func:`parse_simple_frames` and :func:`unmask` come from the optional C
accelerator (``_ws_speedups.c``) when it is built and not turned off
(:data:`FRAME_SPEEDUPS`); :func:`parse_simple_frames_py` and
:func:`unmask_py` are the pure-Python references it is tested against.

Callers use them only while wsproto sits between frames with nothing
buffered, so the two never see parts of the same frame.  A
:class:`FrameTracker` follows the frame headers of what is handed to wsproto,
to know when that is (and to count every frame of a message toward its size
limit, so that a message cut into millions of tiny or empty fragments trips
the limit as a big one does).  The tests cross-check both against wsproto
byte for byte.
"""

from __future__ import annotations

import codecs
import enum
import struct
from collections.abc import Callable
from typing import Final, Protocol

from ._http import load_accelerator

__all__ = [
    "FRAME_COST",
    "FRAME_SPEEDUPS",
    "FRAME_SPEEDUPS_INTERFACE",
    "FragmentedMessage",
    "Fragments",
    "FrameReader",
    "FrameTracker",
    "encode_frame",
    "encode_frame_py",
    "parse_simple_frames",
    "parse_simple_frames_py",
    "read_fragments",
    "unmask",
    "unmask_py",
]

FRAME_COST = 16  # bytes each fragment after a message's first counts toward its size limit

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def unmask_py(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask`` (one big-int XOR, no Python loop)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def parse_simple_frames_py(
    data: bytes, max_size: int | None, pos: int = 0
) -> tuple[list[str | bytes], int]:
    """Read the simple frames of ``data`` from offset ``pos`` on (the Python reference).

    Returns:
        ``(messages, offset)``: the messages of the frames read (``str`` for
        text, ``bytes`` for binary) and the offset of the first byte not
        consumed — the start of a frame that is incomplete, of another shape,
        over ``max_size``, or text that is not valid UTF-8, for wsproto to read
        (and judge) from there.
    """
    messages: list[str | bytes] = []
    n = len(data)
    while pos + 6 <= n:
        b0 = data[pos]
        if b0 not in (0x81, 0x82):  # FIN, no RSV, text or binary
            break
        b1 = data[pos + 1]
        length = b1 & 0x7F
        if not b1 & 0x80 or length == 127:  # unmasked (an error), or a 64-bit length
            break
        if length == 126:
            if pos + 8 > n:
                break
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:  # not the minimal encoding: wsproto refuses it
                break
            start = pos + 8
        else:
            start = pos + 6
        end = start + length
        if end > n or (max_size is not None and length > max_size):
            break
        payload = unmask_py(data[start:end], data[start - 4 : start])
        if b0 == 0x81:
            try:
                messages.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                break
        else:
            messages.append(payload)
        pos = end
    return messages, pos


# The C accelerator (``_ws_speedups.c``, built when a compiler is at hand):
# the same reading as parse_simple_frames_py, several times faster (a 38-byte
# frame: see docs/design.rst).  PEREGRINE_RT_NO_SPEEDUPS=1 in the environment
# at import time keeps to pure Python, as it does for the request parser.
FRAME_SPEEDUPS_INTERFACE: Final = 2
"""The ``_ws_speedups.INTERFACE`` this module expects; a build from other source is not used."""


class FrameReader(Protocol):
    """The signature :func:`parse_simple_frames` has in C and in Python."""

    def __call__(
        self, data: bytes, max_size: int | None, pos: int = 0
    ) -> tuple[list[str | bytes], int]: ...


parse_simple_frames: FrameReader = parse_simple_frames_py
unmask: Callable[[bytes, bytes], bytes] = unmask_py
_accelerator = load_accelerator(__package__ + "._ws_speedups", FRAME_SPEEDUPS_INTERFACE)
if _accelerator is not None:
    parse_simple_frames = _accelerator.parse_simple_frames
    unmask = _accelerator.unmask

FRAME_SPEEDUPS: Final = parse_simple_frames is not parse_simple_frames_py
"""Whether the frame reader uses the C accelerator (built, and not turned off)."""


def encode_frame_py(message: str | bytes) -> bytes:
    """One unmasked server frame holding the whole message (text for ``str``)."""
    if isinstance(message, str):
        payload = str.encode(message, "utf-8")  # a subclass's own encode() aside, as in C
        opcode = 0x81
    else:
        # A buffer's bytes only: bytes(x) would also take __bytes__, __index__
        # (bytes(5) is five zero bytes) and iterables of ints.
        payload = message if type(message) is bytes else bytes(memoryview(message))
        opcode = 0x82
    n = len(payload)
    if n < 126:
        return bytes((opcode, n)) + payload
    if n < 65536:
        return _LEN16.pack(opcode, 126, n) + payload
    return _LEN64.pack(opcode, 127, n) + payload


encode_frame: Callable[[str | bytes], bytes] = encode_frame_py
if _accelerator is not None:
    encode_frame = _accelerator.encode_frame


class FrameTracker:
    """Follows the frame boundaries of a client's byte stream, reading only the headers.

    Every byte handed to wsproto passes through :meth:`advance` first, so the
    tracker knows whether wsproto is *idle*: between frames, with no partial
    header and no fragmented message under way (the fast path may then read
    the next frames itself).  It also keeps the cost of the current message:
    its payload bytes, plus :data:`FRAME_COST` for each fragment after the
    first, against ``limit`` (compressed payloads are checked again once
    inflated, by the socket).

    Attributes:
        left: payload bytes of the current frame still to come.
        in_message: a fragmented message has begun and not finished.
        cost: what the current (or last) message counts toward the limit.
    """

    __slots__ = ("_head", "cost", "in_message", "left", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._head = b""  # a header cut short by the end of the data read so far
        self.left = 0
        self.in_message = False
        self.cost = 0

    @property
    def idle(self) -> bool:
        """Between frames and messages, with no partial header: wsproto holds nothing."""
        return not self.left and not self.in_message and not self._head

    def advance(self, data: bytes, pos: int, stop_when_idle: bool) -> tuple[int, bool]:
        """Follow ``data[pos:]``.

        Returns:
            ``(end, over)``: where it stopped (the end of the data, or with
            ``stop_when_idle`` the first point where it is idle again), and
            whether the header just read took its message over the limit
            (``end`` is then right after that header).
        """
        n = len(data)
        while pos < n:
            left = self.left
            if left:
                take = n - pos if n - pos < left else left
                self.left = left - take
                pos += take
                if stop_when_idle and not self.left and not self.in_message:
                    return pos, False
                continue
            head = self._head
            buf = head + data[pos : pos + 14] if head else data[pos : pos + 14]
            if len(buf) < 2:
                self._head = buf
                return n, False
            b1 = buf[1]
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
            if len(buf) < size:
                self._head = buf  # all that is left of data: the header is incomplete
                return n, False
            pos += size - len(head)
            self._head = b""
            if length == 126:
                length = int.from_bytes(buf[2:4], "big")
            elif length == 127:
                length = int.from_bytes(buf[2:10], "big")
            b0 = buf[0]
            opcode = b0 & 0x0F
            over = False
            if opcode < 8:  # a data frame: text, binary or continuation
                self.cost = self.cost + length + FRAME_COST if opcode == 0 else length
                self.in_message = not b0 & 0x80
                over = self.limit is not None and self.cost > self.limit
            self.left = length
            if over:
                return pos, True
            if stop_when_idle and not length and not self.in_message:
                return pos, False
        return n, False


class Fragments(enum.Enum):
    """Why :func:`read_fragments` stopped."""

    MORE = enum.auto()  # the data ends inside a frame: wait for more
    DONE = enum.auto()  # the message is complete
    CONTROL = enum.auto()  # a control frame is next: wsproto reads it
    OVER = enum.auto()  # the message went over the size limit
    ERROR = enum.auto()  # a protocol error (the close code and reason are on the message)


class FragmentedMessage:
    """A fragmented, uncompressed message that the fast path reads itself.

    Its payloads are unmasked into one growing buffer (memory stays about
    the message's size however finely it is cut); text is checked as UTF-8
    fragment by fragment, so invalid text fails fast, as wsproto would.

    Attributes:
        text: a text message (else binary).
        cost: what it counts toward the size limit so far.
        error: ``(close code, reason)`` after :attr:`Fragments.ERROR`.
    """

    __slots__ = ("buffer", "cost", "decoder", "error", "need", "started", "text")

    def __init__(self, text: bool) -> None:
        self.text = text
        self.buffer = bytearray()
        self.cost = 0
        self.started = False  # the first frame (text or binary opcode) has been read
        self.error: tuple[int, str] = (1002, "")
        self.need = 0  # after MORE: the bytes the next frame takes, when its header told
        self.decoder = codecs.getincrementaldecoder("utf-8")() if text else None

    def message(self) -> str | bytes:
        """The whole message (once :func:`read_fragments` said DONE)."""
        return self.buffer.decode() if self.text else bytes(self.buffer)

    def fail(self, code: int, reason: str) -> Fragments:
        """Note the protocol error (close code, reason); returns :attr:`Fragments.ERROR`."""
        self.error = (code, reason)
        return Fragments.ERROR


def read_fragments(
    data: bytes, pos: int, msg: FragmentedMessage, limit: int | None
) -> tuple[int, Fragments]:
    """Read the frames of ``msg`` from ``data[pos:]`` (whole frames only).

    Returns:
        ``(offset, why)``: where it stopped (the start of the frame it did not
        read) and why.  The checks are RFC 6455's, as wsproto makes them:
        RSV bits, opcodes, masking, minimal lengths, UTF-8.
    """
    n = len(data)
    msg.need = 0
    while pos + 2 <= n:
        b0 = data[pos]
        b1 = data[pos + 1]
        opcode = b0 & 0x0F
        if opcode >= 8:
            return pos, Fragments.CONTROL
        if b0 & 0x70:
            return pos, msg.fail(1002, "reserved bits set")
        if opcode != (0 if msg.started else (1 if msg.text else 2)):
            if opcode in (1, 2):
                return pos, msg.fail(1002, "a new message began before the last one ended")
            return pos, msg.fail(1002, f"unexpected opcode {opcode:#x}")
        if not b1 & 0x80:
            return pos, msg.fail(1002, "client frames must be masked")
        length = b1 & 0x7F
        if length == 126:
            if pos + 4 > n:
                return pos, Fragments.MORE
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                return pos, msg.fail(1002, "payload length not minimally encoded")
            head = 8
        elif length == 127:
            if pos + 10 > n:
                return pos, Fragments.MORE
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if length < 65536 or length >> 63:
                return pos, msg.fail(1002, "invalid 64-bit payload length")
            head = 14
        else:
            head = 6
        cost = msg.cost + length + (FRAME_COST if msg.started else 0)
        if limit is not None and cost > limit:
            return pos, Fragments.OVER
        end = pos + head + length
        if end > n:
            msg.need = head + length
            return pos, Fragments.MORE
        payload = unmask(data[pos + head : end], data[pos + head - 4 : pos + head])
        decoder = msg.decoder
        if decoder is not None:
            try:
                decoder.decode(payload, final=bool(b0 & 0x80))
            except UnicodeDecodeError:
                return pos, msg.fail(1007, "invalid UTF-8 in a text message")
        msg.cost = cost
        msg.started = True
        msg.buffer += payload
        pos = end
        if b0 & 0x80:
            return pos, Fragments.DONE
    return pos, Fragments.MORE
