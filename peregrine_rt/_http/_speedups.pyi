"""Type stub for the optional C accelerator (``_speedups.c``)."""

from collections.abc import Callable, Sequence
from typing import Any

from ._headers import Headers
from ._scan import Cache, Scanned

INTERFACE: int

def scan_head(
    buf: bytes,
    limit: int,
    max_count: int,
    cache: Cache | None,
    headers_class: type[Headers],
    /,
) -> Scanned | None: ...
def _set_headers_type(cls: type[Headers], /) -> None: ...
def encode_fixed_response(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    method: str,
    version: str,
    keep_alive: bool,
    /,
) -> bytes: ...
def set_writer(
    namespace: dict[str, Any],
    status_line: Callable[[int, str], bytes],
    date_header_value: Callable[[], bytes],
    encode_fixed_response_py: Callable[..., bytes],
    /,
) -> None: ...
