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

Callers use them only while wsproto sits between frames with nothing
buffered (see ``WebSocket._fast_ok``), so the two never see parts of the same
frame.  The tests cross-check both against wsproto byte for byte.
"""

from __future__ import annotations

import struct

__all__ = ["encode_frame", "parse_simple_frames"]

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask`` (one big-int XOR, no Python loop)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def parse_simple_frames(data: bytes, max_size: int | None) -> tuple[list[str | bytes], int]:
    """Read the leading simple frames of ``data``.

    Returns:
        ``(messages, offset)``: the messages of the frames read (``str`` for
        text, ``bytes`` for binary) and the offset of the first byte not
        consumed — the start of a frame that is incomplete, of another shape,
        over ``max_size``, or text that is not valid UTF-8, for wsproto to read
        (and judge) from there.
    """
    messages: list[str | bytes] = []
    pos = 0
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
        payload = unmask(data[start:end], data[start - 4 : start])
        if b0 == 0x81:
            try:
                messages.append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                break
        else:
            messages.append(payload)
        pos = end
    return messages, pos


def encode_frame(message: str | bytes) -> bytes:
    """One unmasked server frame holding the whole message (text for ``str``)."""
    if isinstance(message, str):
        payload = message.encode("utf-8")
        opcode = 0x81
    else:
        payload = bytes(message)
        opcode = 0x82
    n = len(payload)
    if n < 126:
        return bytes((opcode, n)) + payload
    if n < 65536:
        return _LEN16.pack(opcode, 126, n) + payload
    return _LEN64.pack(opcode, 127, n) + payload
