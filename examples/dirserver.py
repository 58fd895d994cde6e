"""Static files: serve a directory, with caching, ranges and pre-compressed files.

``STATIC_ROOT`` names the directory (default: ``examples/chat/static`` when it
exists, else ``docs/``)::

    STATIC_ROOT=/some/dir peregrine-rt examples.dirserver:DirServerApp

* ``/healthz`` answers ``ok`` (a route of the app's own, before the files);
* ``/download/<path>`` sends a file of the root as an attachment (the same
  ``DirServer``, told which path to serve and to add ``Content-Disposition``);
* every other path is a file under the root (``DirServer``): ``index.html``
  for directories, long-lived caching for ``assets/``, revalidation for HTML.
"""

from __future__ import annotations

import os
from pathlib import Path

import peregrine_rt as pr

HERE = Path(__file__).resolve().parent


def default_root() -> Path:
    chat = HERE / "chat" / "static"
    return chat if chat.is_dir() else HERE.parent / "docs"


class DirServerApp:
    def __init__(self) -> None:
        root = os.environ.get("STATIC_ROOT") or default_root()
        self.static = pr.DirServer(
            root,
            cache_control={
                "assets/*": "public, max-age=31536000, immutable",
                "*.html": "no-cache",
            },
        )

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/healthz":
            response.text("ok\n")
        elif request.path.startswith("/download/"):
            # The DirServer checks this path as it checks request.path (no
            # dot segments, hidden files or symlinks out of the root).
            path = request.path.removeprefix("/download")
            name = path.rpartition("/")[2]
            await self.static.serve(request, response, path=path, filename=name or None)
        else:
            await self.static.serve(request, response)


if __name__ == "__main__":
    pr.run(DirServerApp, port=8080)
