"""peregrine.js, the browser client of Channels, served from the installed package.

A :class:`~peregrine_rt.Router` answers ``GET /_peregrine/peregrine.js`` with
it (unless a route of the app takes that path), and so does a
:class:`~peregrine_rt.Channels` app served on its own: a page imports the
client from there, with no bundler and no copy among the app's own files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response

__all__ = ["BROWSER_CLIENT", "BROWSER_CLIENT_PATH", "serve_browser_client"]

BROWSER_CLIENT: Final = Path(__file__).resolve().parent / "static" / "peregrine.js"
"""Where peregrine.js is in the installed package."""

BROWSER_CLIENT_PATH: Final = "/_peregrine/peregrine.js"
"""The path it is served at."""


def serve_browser_client(request: Request, response: Response) -> bool:
    """Answer a ``GET``/``HEAD`` of :data:`BROWSER_CLIENT_PATH` with peregrine.js; whether it did.

    Served as a static file (``ETag``, ``Last-Modified``, conditional requests),
    revalidated on every load (``Cache-Control: no-cache``) so that a new
    release of the package reaches the browser at once.
    """
    if request.path != BROWSER_CLIENT_PATH or request.method not in ("GET", "HEAD"):
        return False
    response.file(
        BROWSER_CLIENT,
        content_type="text/javascript; charset=utf-8",
        cache_control="no-cache",
        precompressed=False,
    )
    return True
