"""Type stub for the optional C accelerator (``_speedups.c``)."""

from ._headers import Headers
from ._parser import _Cache, _Scanned

INTERFACE: int

def scan_head(
    buf: bytes,
    limit: int,
    max_count: int,
    cache: _Cache | None,
    headers_class: type[Headers],
    /,
) -> _Scanned | None: ...
def _set_headers_type(cls: type[Headers], /) -> None: ...
