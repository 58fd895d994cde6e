"""peregrine_rt's static-file server for ``bench/static.py``.

``STATIC_ROOT=<dir> peregrine-rt bench.servers.static_peregrine:Static`` serves
``<dir>`` with :class:`peregrine_rt.DirServer` and its defaults.  With
``STATIC_SENDFILE=0`` large files are streamed by ``os.pread`` pieces instead
of ``os.sendfile`` (to measure what sendfile brings).
"""

from __future__ import annotations

import os

import peregrine_rt as pr
from peregrine_rt import _connection

if os.environ.get("STATIC_SENDFILE", "1") == "0":
    _connection.USE_SENDFILE = False


class Static:
    def __init__(self) -> None:
        self.static = pr.DirServer(os.environ["STATIC_ROOT"])

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        await self.static.serve(request, response)
