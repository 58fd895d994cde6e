"""A real FastAPI app for the conformance suite (tests/asgi/test_frameworks.py).

The same features as ``starlette_app``, written the FastAPI way: typed path
parameters (a 422 for a bad one), a Pydantic body, ``Form``/``UploadFile``,
``BackgroundTasks``, WebSocket endpoints and lifespan state.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import BackgroundTasks, FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnect

from peregrine_rt.asgi import hub


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from lifespan", "gate": anyio.Event(), "done": app.state.done}


def make_app(done: list[str] | None = None, file: Path | None = None) -> FastAPI:
    """A fresh app; ``done`` gets "work" when a background task has run; /file serves ``file``."""
    app = FastAPI(lifespan=lifespan)
    app.state.done = [] if done is None else done
    app.state.file = Path(__file__) if file is None else file

    @app.get("/", response_class=PlainTextResponse)
    async def home() -> str:
        return "home"

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.post("/json", status_code=201)
    async def echo_json(item: Item) -> dict[str, Any]:
        return {"got": item.model_dump()}

    @app.post("/form")
    async def form(
        name: Annotated[str, Form()], upload: Annotated[UploadFile, File()]
    ) -> dict[str, Any]:
        content = await upload.read()
        return {
            "name": name,
            "filename": upload.filename,
            "content_type": upload.content_type,
            "size": len(content),
            "head": content[:8].decode(),
        }

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"piece {n}\n".encode()

        return StreamingResponse(pieces(), media_type="text/plain")

    @app.get("/file")
    async def file_(request: Request) -> FileResponse:
        return FileResponse(request.app.state.file, media_type="text/plain")

    @app.get("/state", response_class=PlainTextResponse)
    async def state(request: Request) -> str:
        greeting: str = request.state.greeting
        return greeting

    @app.get("/background", status_code=202, response_class=PlainTextResponse)
    async def background(request: Request, tasks: BackgroundTasks) -> str:
        gate: anyio.Event = request.state.gate
        done: list[str] = request.state.done

        async def work() -> None:
            await gate.wait()
            done.append("work")

        tasks.add_task(work)
        return "queued"

    @app.get("/release", response_class=PlainTextResponse)
    async def release(request: Request) -> str:
        request.state.gate.set()
        return "released"

    @app.get("/done")
    async def show_done(request: Request) -> list[str]:
        result: list[str] = request.state.done
        return result

    @app.get("/where", response_class=PlainTextResponse)
    async def where(request: Request) -> str:
        try:
            the_hub = hub(request.scope)
        except LookupError:
            return "no hub"
        return f"hub with {the_hub.count('news')} on news"

    @app.websocket("/ws")
    async def ws_echo(websocket: WebSocket) -> None:
        offered = websocket.scope["subprotocols"]
        await websocket.accept(subprotocol=offered[0] if offered else None)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    if message["text"] == "close":
                        await websocket.close(4001, "asked to")
                        return
                    await websocket.send_text(message["text"].upper())
                else:
                    await websocket.send_bytes(message["bytes"][::-1])
        except WebSocketDisconnect:
            return

    @app.websocket("/ws/refuse")
    async def ws_refuse(websocket: WebSocket) -> None:
        await websocket.close(4003)

    return app


app = make_app()
