"""One Starlette hello world for every server of ``bench/asgi.py``.

``peregrine-rt --asgi bench.servers.starlette_hello:app``, ``uvicorn
bench.servers.starlette_hello:app --http httptools --loop uvloop`` and
``hypercorn --worker-class trio bench.servers.starlette_hello:app`` serve the
same app object: ``GET /`` answers ``200 Hello, World!`` (text/plain), so
the difference between them is the server (and, for the two trio servers,
anyio on trio under Starlette).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, World!")


app = Starlette(routes=[Route("/", hello)])
