"""Type stub for the optional C accelerator of the WebSocket frame reader (``_ws_speedups.c``)."""

from typing import TypeAlias

_Buffer: TypeAlias = bytes | bytearray | memoryview

INTERFACE: int

def parse_simple_frames(
    data: _Buffer, max_size: int | None, pos: int = 0
) -> tuple[list[str | bytes], int]: ...
def unmask(payload: _Buffer, mask: _Buffer, /) -> bytes: ...
def encode_frame(message: str | _Buffer, /) -> bytes: ...
