"""Channels: topics multiplexed over one WebSocket, on Phoenix Channels' wire protocol.

The package is one layer ("channels", above the web basics and below the
server): its modules may import anything below, nothing imports them but the
package's public names.  See docs/channels/ for the protocol and the API.
"""

from __future__ import annotations

from ._limits import Limits
from ._phoenix import Frame, ProtocolViolation
from ._server import Channels, Socket
from ._topics import Refuse, topic

__all__ = ["Channels", "Frame", "Limits", "ProtocolViolation", "Refuse", "Socket", "topic"]
