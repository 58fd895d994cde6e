"""The router through a real server (peregrine_rt.testing): answers, mounts, sockets, lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt._routing import Router, get, post
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.mixins import HubMixin
from peregrine_rt.testing import WebSocketRejected, open_client, wait_until


async def item(request: pr.Request, response: pr.Response) -> None:
    response.json({"id": request.path_params["id"], "root": request.root_path})


def items_router(**options: Any) -> Router:
    router = Router(**options)
    router.route("/items/{id:int}", item, methods=["GET", "PUT"])
    return router


# -- HTTP answers --------------------------------------------------------------------


async def test_404_405_allow_and_head() -> None:
    async with open_client(items_router()) as client:
        ok = await client.get("/items/7")
        assert (ok.status, ok.json()) == (200, {"id": 7, "root": ""})
        for path in ("/items/x", "/items/-1", "/nowhere"):
            missing = await client.get(path)
            assert missing.status == 404, path
            assert missing.text == "404 Not Found\n"
            assert missing.headers["content-type"].startswith("text/plain")
        for method in ("DELETE", "POST", "OPTIONS"):
            refused = await client.request(method, "/items/7")
            assert refused.status == 405, method
            assert refused.headers["allow"] == "GET, HEAD, PUT"
        head = await client.head("/items/7")
        assert head.status == 200
        assert head.content == b""  # the server drops a HEAD answer's body...
        assert head.headers["content-length"] == ok.headers["content-length"]  # ...not its length
        assert (await client.put("/items/7")).status == 200


async def test_a_route_may_take_options() -> None:
    async def preflight(request: pr.Request, response: pr.Response) -> None:
        response.headers["allow"] = "GET"
        response.status = 204

    router = items_router()
    router.route("/items/{id:int}", preflight, methods=["OPTIONS"])
    async with open_client(router) as client:
        answer = await client.options("/items/1")
        assert (answer.status, answer.headers["allow"]) == (204, "GET")


async def test_redirect_slashes() -> None:
    router = items_router()
    router.route("/dir/", item, name="dir")  # no id: a KeyError, if it ran
    async with open_client(router) as client:
        moved = await client.get("/items/7/?a=1&b=%20")
        assert moved.status == 307
        assert moved.headers["location"] == "/items/7?a=1&b=%20"
        moved = await client.post("/dir")  # any method: 307 keeps it
        assert (moved.status, moved.headers["location"]) == (307, "/dir/")
        # never towards a path a browser reads as another host
        assert (await client.get("//items/7/")).status == 404
    async with open_client(items_router(redirect_slashes=False)) as client:
        assert (await client.get("/items/7/")).status == 404


# -- mounts --------------------------------------------------------------------------


class Plain:
    """A plain handler (not a router), to be mounted."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/teapot":
            raise HTTPError(418)
        response.json({"path": request.path, "root": request.root_path})


async def test_mounted_handlers_see_the_rest_of_the_path() -> None:
    api = items_router()
    top = Router()
    top.mount("/api", api, name="api")
    top.mount("/plain", Plain)
    top.mount("/", Plain())  # the rest
    top.route("/api/special", item, name="special")  # routes first: never reached, no id
    async with open_client(top) as client:
        got = await client.get("/api/items/3")
        assert got.json() == {"id": 3, "root": "/api"}
        assert (await client.delete("/api/items/3")).status == 405
        assert (await client.get("/api/nowhere")).status == 404
        assert (await client.get("/plain/a/b")).json() == {"path": "/a/b", "root": "/plain"}
        assert (await client.get("/plain")).json() == {"path": "/", "root": "/plain"}
        assert (await client.get("/plainer")).json() == {"path": "/plainer", "root": ""}
        assert (await client.get("/plain/teapot")).status == 418
        moved = await client.get("/api/items/3/")  # the sub-router's redirect keeps the prefix
        assert (moved.status, moved.headers["location"]) == (307, "/api/items/3")
        assert top.url_for("api:item", id=3) == "/api/items/3"


class Board(Router):
    """Routes declared as methods; a mount added in __init__."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[str] = []
        self.mount("/static", Plain)

    @get("/posts")
    async def list_posts(self, request: pr.Request, response: pr.Response) -> None:
        response.json(self.posts)

    @post("/posts")
    async def add_post(self, request: pr.Request, response: pr.Response) -> None:
        self.posts.append((await request.body()).decode())
        response.status = 201


async def test_a_router_subclass_is_a_handler_class() -> None:
    async with open_client(Board) as client:
        assert (await client.post("/posts", content="hello")).status == 201
        assert (await client.get("/posts")).json() == ["hello"]
        assert (await client.get("/static/x")).json() == {"path": "/x", "root": "/static"}
        assert isinstance(client.app, Board)


# -- WebSocket routes ----------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    name: str


class Room:
    """A WebSocket route's handler: no handle, an authenticate of its own."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    async def authenticate(self, request: pr.Request) -> Who | None:
        name = request.query.get("user")
        if name == "mallory":
            raise HTTPError(403, "banned")
        return None if name is None else Who(name)

    async def on_open(self, ws: pr.WebSocket) -> None:
        self.events.append(("open", ws.user, ws.request.path_params))

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(f"{ws.request.path_params['room']}/{ws.user.name}: {message!s}")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.events.append(("close", code))


async def test_websocket_route_hands_the_socket_to_its_handler() -> None:
    room = Room()
    router = items_router()
    router.websocket("/rooms/{room}", room, name="room")
    async with open_client(router) as client:
        async with client.websocket("/rooms/lobby?user=ada") as ws:
            await ws.send("hi")
            assert await ws.receive() == "lobby/ada: hi"
            await ws.close(1000)
        await wait_until(lambda: len(room.events) == 2)
        assert room.events == [("open", Who("ada"), {"room": "lobby"}), ("close", 1000)]
        assert router.url_for("room", room="a b") == "/rooms/a%20b"
        # the handler's own authenticate ran: no user, 401; HTTPError(403) from it, 403
        for query, status in (("", 401), ("?user=mallory", 403)):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket(f"/rooms/lobby{query}"):
                    pass
            assert refused.value.response.status == status
        plain = await client.get("/rooms/lobby?user=ada")  # no Upgrade
        assert plain.status == 426
        assert (await client.head("/rooms/lobby")).status == 405  # GET only, no HEAD
        assert len(room.events) == 2  # none of these opened


async def test_the_route_authenticate_wins_and_sockets_are_kept_apart() -> None:
    async def only_bob(request: pr.Request) -> Who | None:
        if request.query.get("user") == "eve":
            raise HTTPError(403)
        return Who("bob") if request.query.get("user") == "bob" else None

    class Echo:
        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
            await ws.send(f"echo {message!s}")

    rooms = Room()
    router = Router()
    router.websocket("/rooms/{room}", rooms, authenticate=only_bob)
    router.websocket("/echo", Echo, subprotocols=["v1"])
    async with open_client(router) as client:
        for user, status in (("ada", 401), ("eve", 403)):
            with pytest.raises(WebSocketRejected) as refused:
                async with client.websocket(f"/rooms/x?user={user}"):
                    pass
            assert refused.value.response.status == status
        async with (
            client.websocket("/rooms/x?user=bob") as bob,
            client.websocket("/echo", subprotocols=["v0", "v1"]) as echo,
        ):
            assert echo.subprotocol == "v1"
            await echo.send("one")
            await bob.send("two")
            assert await echo.receive() == "echo one"
            assert await bob.receive() == "x/bob: two"


class SelfUpgrading:
    """An existing app that upgrades by itself, mounted under a router."""

    def __init__(self) -> None:
        self.closed = trio.Event()

    async def authenticate(self, request: pr.Request) -> Who | None:
        return Who("carol") if request.query.get("token") == "ok" else None

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/ws":
            await pr.upgrade(request, response)
        else:
            response.text("app")

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(f"{ws.user.name} at {ws.request.root_path}{ws.request.path}")

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None:
        self.closed.set()


async def test_a_mounted_handler_upgrading_itself_keeps_its_authenticate_and_hooks() -> None:
    app = SelfUpgrading()
    inner = Router()
    inner.mount("/app", app)
    top = Router()
    top.mount("/v1", inner)
    async with open_client(top) as client:
        assert (await client.get("/v1/app/")).text == "app"
        with pytest.raises(WebSocketRejected) as refused:
            async with client.websocket("/v1/app/ws"):
                pass
        assert refused.value.response.status == 401  # the mounted app's authenticate ran
        async with client.websocket("/v1/app/ws?token=ok") as ws:
            await ws.send("hello")
            assert await ws.receive() == "carol at /v1/app/ws"
        with trio.fail_after(5):
            await app.closed.wait()


async def test_a_function_route_that_upgrades_gets_a_clear_error() -> None:
    async def sneaky(request: pr.Request, response: pr.Response) -> None:
        await pr.upgrade(request, response)

    router = Router()
    router.route("/ws", sneaky)
    async with open_client(router) as client, client.websocket("/ws") as ws:
        closed = await ws.receive_close()
        assert closed.code == 1011


# -- lifecycle -----------------------------------------------------------------------


class Service(HubMixin):
    """Records its lifecycle in a shared list."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def startup(self) -> None:
        assert self.hub is not None  # attach_hub came first
        self.log.append(f"startup {self.name}")

    async def background(self, *, task_status: trio.TaskStatus[None]) -> None:
        self.log.append(f"ready {self.name}")
        task_status.started()
        await trio.sleep_forever()

    async def shutdown(self) -> None:
        self.log.append(f"shutdown {self.name}")

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text(self.name)

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None:
        await ws.send(message)


async def test_lifecycle_of_every_held_handler_runs_once() -> None:
    log: list[str] = []
    sub = Router()
    shared = Service("shared", log)
    sub.mount("/s", shared)
    router = Router()
    router.mount("/sub", sub)
    router.route("/status", Service("status", log))
    router.websocket("/ws", shared)  # the same instance: one lifecycle
    async with open_client(router) as client:
        # startup in the order added, depth first; every background ready before serving
        assert log[:2] == ["startup shared", "startup status"]
        assert sorted(log[2:]) == ["ready shared", "ready status"]
        assert (await client.get("/sub/s")).text == "shared"
        assert (await client.get("/status")).text == "status"
    assert sorted(log[4:]) == ["shutdown shared", "shutdown status"]


async def test_a_failing_startup_shuts_down_those_started() -> None:
    log: list[str] = []

    class Broken:
        async def startup(self) -> None:
            raise RuntimeError("no database")

        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            pass

    router = Router()
    router.mount("/a", Service("a", log))
    router.mount("/b", Broken)
    with pytest.raises(RuntimeError, match="no database"):
        async with open_client(router):
            pass
    assert log == ["startup a", "shutdown a"]
