"""Static files: serve a directory, with caching, ranges and pre-compressed files.

``STATIC_ROOT`` names the directory (default: ``examples/chat/static`` when it
exists, else ``docs/``)::

    STATIC_ROOT=/some/dir peregrine-rt examples.dirserver:DirServerApp

* ``/healthz`` answers ``ok`` (a route of the app's own, before the files);
* ``/download/<name>`` sends a file as an attachment (``response.file``);
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
            name = request.path.removeprefix("/download/")
            # Only plain names from the root: a request never chooses a path.
            if "/" in name or name.startswith(".") or not name:
                response.text("404 Not Found\n", status=404)
                return
            response.file(Path(self.static.root) / name, filename=name)
        else:
            await self.static.serve(request, response)


if __name__ == "__main__":
    pr.run(DirServerApp, port=8080)
