"""permessage-deflate whose inflation stops at the message size limit.

wsproto's ``PerMessageDeflate`` inflates each received chunk whole, so a small
compressed frame (deflate reaches ~1000:1) could expand to many megabytes
before the connection's size check sees it.  This subclass inflates at most
one byte past ``ws_max_message_size`` per message and then fails the
connection with 1009, so memory stays bounded by the limit, not by the ratio.
"""

from __future__ import annotations

import zlib
from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

__all__ = ["BoundedDeflate"]


class BoundedDeflate(PerMessageDeflate):
    """``PerMessageDeflate`` with a cap on the inflated size of one message."""

    def __init__(self, max_message_size: int | None, **options: Any) -> None:
        super().__init__(**options)
        self._limit = max_message_size
        self._inflated = 0

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        limit = self._limit
        if limit is None or not self._inbound_compressed or not self._inbound_is_compressible:
            return super().frame_inbound_payload_data(proto, data)
        decompressor = self._decompressor
        assert decompressor is not None
        try:
            out = decompressor.decompress(bytes(data), limit - self._inflated + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > limit or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        result = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return result
