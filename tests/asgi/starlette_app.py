"""A real Starlette app for the conformance suite (tests/asgi/test_frameworks.py).

Every feature the suite compares between peregrine_rt and hypercorn: routing,
path parameters, JSON bodies, forms and uploads, streaming, background tasks,
WebSockets, lifespan state.  ``make_app()`` builds a fresh one (its own
lifespan state), ``app`` is one for ``peregrine-rt --asgi``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute

from peregrine_rt.asgi import hub

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.websockets import WebSocket


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # The state every request sees: set here, read in /state and /background.
    yield {"greeting": "hello from lifespan", "gate": anyio.Event(), "done": app.state.done}


async def home(request: Request) -> Response:
    return PlainTextResponse("home")


async def item(request: Request) -> Response:
    item_id: int = request.path_params["item_id"]
    return JSONResponse({"item_id": item_id, "q": request.query_params.get("q")})


async def echo_json(request: Request) -> Response:
    data = await request.json()
    return JSONResponse({"got": data}, status_code=201)


async def form(request: Request) -> Response:
    async with request.form() as fields:
        upload = fields["upload"]
        assert not isinstance(upload, str)
        content = await upload.read()
        return JSONResponse(
            {
                "name": fields["name"],
                "filename": upload.filename,
                "content_type": upload.content_type,
                "size": len(content),
                "head": content[:8].decode(),
            }
        )


async def stream(request: Request) -> Response:
    async def pieces() -> AsyncIterator[bytes]:
        for n in range(3):
            yield f"piece {n}\n".encode()

    return StreamingResponse(pieces(), media_type="text/plain")


async def send_file(request: Request) -> Response:
    return FileResponse(request.app.state.file, media_type="text/plain")


async def state(request: Request) -> Response:
    return PlainTextResponse(request.state.greeting)


async def background(request: Request) -> Response:
    gate: anyio.Event = request.state.gate
    done: list[str] = request.state.done

    async def work() -> None:
        await gate.wait()
        done.append("work")

    return PlainTextResponse("queued", status_code=202, background=BackgroundTask(work))


async def release(request: Request) -> Response:
    request.state.gate.set()
    return PlainTextResponse("released")


async def show_done(request: Request) -> Response:
    return JSONResponse(request.state.done)


async def where(request: Request) -> Response:
    """Which server: peregrine_rt's hub is reachable only under peregrine_rt."""
    try:
        the_hub = hub(request.scope)
    except LookupError:
        return PlainTextResponse("no hub")
    return PlainTextResponse(f"hub with {the_hub.count('news')} on news")


async def ws_echo(websocket: WebSocket) -> None:
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol=offered[0] if offered else None)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            text = message["text"]
            if text == "close":
                await websocket.close(4001, "asked to")
                return
            await websocket.send_text(text.upper())
        else:
            await websocket.send_bytes(message["bytes"][::-1])


async def ws_refuse(websocket: WebSocket) -> None:
    await websocket.close(4003)  # before accept: the client gets a 403


def make_app(done: list[str] | None = None, file: Path | None = None) -> Starlette:
    """A fresh app; ``done`` gets "work" when a background task has run; /file serves ``file``."""
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/items/{item_id:int}", item),
            Route("/json", echo_json, methods=["POST"]),
            Route("/form", form, methods=["POST"]),
            Route("/stream", stream),
            Route("/file", send_file),
            Route("/state", state),
            Route("/background", background),
            Route("/release", release),
            Route("/done", show_done),
            Route("/where", where),
            WebSocketRoute("/ws", ws_echo),
            WebSocketRoute("/ws/refuse", ws_refuse),
        ],
        lifespan=lifespan,
    )
    app.state.done = [] if done is None else done
    app.state.file = Path(__file__) if file is None else file
    return app


app = make_app()
