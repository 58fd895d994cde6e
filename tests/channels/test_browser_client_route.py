"""peregrine.js is served at /_peregrine/peregrine.js by a Router and by Channels served alone."""

from __future__ import annotations

from typing import Any

import peregrine_rt as pr
from peregrine_rt._browser import BROWSER_CLIENT
from peregrine_rt.testing import open_client


class Feed(pr.Channels):
    @pr.topic("feed", history=False)
    class Topic:
        async def join(self, socket: Any, params: Any) -> None:
            return None


class Site(pr.Router):
    def __init__(self) -> None:
        super().__init__()
        self.mount("/socket", Feed)

    @pr.get("/")
    async def home(self, request: pr.Request, response: pr.Response) -> None:
        response.text("home")


class Own(Site):
    @pr.get("/_peregrine/peregrine.js")
    async def mine(self, request: pr.Request, response: pr.Response) -> None:
        response.text("// my own build")


async def test_a_router_and_channels_alone_serve_the_packaged_client() -> None:
    shipped = BROWSER_CLIENT.read_bytes()
    assert b"export class Socket" in shipped
    for app in (Site, Feed):
        async with open_client(app) as client:
            got = await client.get("/_peregrine/peregrine.js")
            assert got.status == 200, app
            assert got.content == shipped
            assert got.headers["content-type"] == "text/javascript; charset=utf-8"
            assert got.headers["cache-control"] == "no-cache"
            again = await client.get(
                "/_peregrine/peregrine.js", headers={"If-None-Match": got.headers["etag"]}
            )
            assert again.status == 304
            posted = await client.post("/_peregrine/peregrine.js")
            assert posted.status >= 400 and posted.content != shipped  # only GET and HEAD


async def test_a_route_of_the_app_takes_the_path_first() -> None:
    async with open_client(Own) as client:
        assert (await client.get("/_peregrine/peregrine.js")).text == "// my own build"
        assert (await client.get("/nothing")).status == 404
