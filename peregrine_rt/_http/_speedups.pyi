"""Type stub for the optional C accelerator (``_speedups.c``)."""

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
