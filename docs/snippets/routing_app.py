"""The routes of docs/web/routing.rst, declared on a Router instance.

The page shows the parts between the ``# [name]`` markers; the tests below
run them through peregrine_rt.testing.
"""

from __future__ import annotations

import peregrine_rt as pr
from peregrine_rt.testing import open_client

# [routes]
router = pr.Router()
ITEMS = {1: "kettle", 2: "teapot"}


@router.get("/")
async def home(request: pr.Request, response: pr.Response) -> None:
    response.text(f"try {router.url_for('item', id=1)}\n")  # "/items/1"


@router.get("/items/{id:int}")
async def item(request: pr.Request, response: pr.Response) -> None:
    item_id = request.path_params["id"]  # an int already; /items/abc is a 404
    if item_id not in ITEMS:
        raise pr.HTTPError(404, f"no item {item_id}")
    response.json({"id": item_id, "name": ITEMS[item_id]})


@router.route("/items/{id:int}", methods=["PUT", "DELETE"])
async def change_item(request: pr.Request, response: pr.Response) -> None:
    if request.method == "DELETE":
        ITEMS.pop(request.path_params["id"], None)
    else:
        ITEMS[request.path_params["id"]] = (await request.body()).decode()
    response.status = 204


@router.get("/files/{rest:path}")
async def file(request: pr.Request, response: pr.Response) -> None:
    response.text(request.path_params["rest"] + "\n")  # "a/b.txt" for /files/a/b.txt


# pr.run(router, port=3000)
# [/routes]


# [tests]
async def test_routes() -> None:
    async with open_client(router) as client:
        assert (await client.get("/")).text == "try /items/1\n"
        assert (await client.get("/items/2")).json() == {"id": 2, "name": "teapot"}
        assert (await client.get("/items/abc")).status == 404
        assert (await client.get("/items/9")).text == "404 Not Found\nno item 9\n"
        assert (await client.get("/files/a/b.txt")).text == "a/b.txt\n"
        assert (await client.head("/items/1")).status == 200  # GET routes answer HEAD


async def test_methods() -> None:
    async with open_client(router) as client:
        assert (await client.put("/items/3", content="mug")).status == 204
        assert (await client.get("/items/3")).json() == {"id": 3, "name": "mug"}
        refused = await client.post("/items/3")
        assert refused.status == 405
        assert refused.headers["allow"] == "DELETE, GET, HEAD, PUT"
        assert (await client.delete("/items/3")).status == 204


async def test_trailing_slashes() -> None:
    async with open_client(router) as client:
        moved = await client.get("/items/1/?full=1")
        assert (moved.status, moved.headers["location"]) == (307, "/items/1?full=1")


# [/tests]
