"""CORS as Chromium enforces it: pages on two origins call ``fetch()`` against one server.

Chromium takes ``http://localhost:PORT`` and ``http://127.0.0.1:PORT`` for
two origins, so one server (a child process, as in ``conftest.py``) serves
both pages and the API: the page on ``localhost`` is allowed, the one on
``127.0.0.1`` is not.  What is asserted is what the page sees: an allowed
call reads the JSON (and only the exposed headers), a refused one rejects
with ``TypeError``, and a custom header costs one preflight, which the
browser then caches.

Plain synchronous tests (Playwright's sync API); skipped without Chromium or
Playwright unless ``CI`` is set (the ``browser`` fixture).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt._compress import Compress
from peregrine_rt._cors import CORS
from peregrine_rt._middleware import Middleware
from peregrine_rt.exceptions import HTTPError

from .conftest import TIMEOUT_MS, AppServer

# The server's child process reads the page origin it allows from here.
ORIGIN_VARIABLE = "CORS_TEST_PAGE_ORIGIN"
ITEMS = [{"id": i, "name": f"item {i}"} for i in range(200)]


class Api:
    """The JSON API the pages call."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path.endswith("/missing"):
            raise HTTPError(404, "no such thing")
        response.headers["x-total"] = "3"
        response.headers["x-secret"] = "not exposed"
        if request.method == "PUT":
            response.json({"token": request.headers.get("x-token")})
        else:
            response.json({"hello": "world", "cookies": len(request.cookies)})


class Site:
    """``/page`` (a blank page to run scripts in), ``/items`` (big JSON), the two APIs."""

    def __init__(self) -> None:
        origin = os.environ.get(ORIGIN_VARIABLE, "http://localhost:5173")
        self.api = CORS(
            Api,
            allow_origins=[origin],
            allow_methods=["GET", "PUT"],
            allow_headers=["X-Token"],
            allow_credentials=True,
            expose_headers=["X-Total"],
            max_age=600,
        )
        self.public = CORS(Api, allow_origins=["*"])

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/page":
            response.html("<!doctype html><title>cors</title><p>page</p>")
        elif request.path == "/items":
            response.json(ITEMS)
        elif request.path.startswith("/public/"):
            await self.public.handle(request, response)
        else:
            await self.api.handle(request, response)


class CountPreflights(Middleware):
    """Counts the preflights the browser sends (``/preflights`` tells)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.preflights = 0

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/preflights":
            response.json(self.preflights)
            return
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            self.preflights += 1
        await self.app.handle(request, response)


app = Compress(CountPreflights(Site()))


class Server(AppServer):
    """``python -m peregrine_rt tests.e2e.test_cors_browser:app`` on a free port."""

    def __init__(self, log: Path) -> None:
        super().__init__(log, f"{__name__}:app")
        self.env[ORIGIN_VARIABLE] = self.allowed

    @property
    def allowed(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def refused(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def preflights(self) -> int:
        with urllib.request.urlopen(f"{self.refused}/preflights", timeout=5) as reply:
            return int(reply.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """``open_page(url)``: a page in its own browser context."""
    contexts: list[Any] = []

    def open_(url: str) -> Any:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()


# What a page sees of one fetch(): the answer, or the error's name.
FETCH = """async ([url, init]) => {
    try {
        const response = await fetch(url, init);
        const text = await response.text();
        return {
            status: response.status,
            body: text,
            total: response.headers.get("x-total"),
            secret: response.headers.get("x-secret"),
            encoding: response.headers.get("content-encoding"),
        };
    } catch (error) {
        return {error: error.name};
    }
}"""


def fetch(page: Any, url: str, **init: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(FETCH, [url, init])
    return result


def test_an_allowed_origin_reads_the_json_and_only_exposed_headers(
    server: Server, open_page: Any
) -> None:
    page = open_page(f"{server.allowed}/page")
    for credentials in ("omit", "include"):
        result = fetch(page, f"{server.refused}/api/data", credentials=credentials)
        assert result["status"] == 200, result
        assert result["body"] == '{"hello":"world","cookies":0}'
        assert result["total"] == "3"  # exposed
        assert result["secret"] is None  # not exposed: the browser hides it
    missing = fetch(page, f"{server.refused}/api/missing")
    assert missing.get("status") == 404, missing  # an HTTPError answer carries the CORS headers
    assert missing["body"] == "404 Not Found\nno such thing\n"


def test_a_custom_header_costs_one_cached_preflight(server: Server, open_page: Any) -> None:
    page = open_page(f"{server.allowed}/page")
    assert server.preflights() == 0
    for _ in range(2):
        result = fetch(page, f"{server.refused}/api/data", method="PUT", headers={"X-Token": "t-1"})
        assert result.get("body") == '{"token":"t-1"}', result
    assert server.preflights() == 1  # the second PUT used the cached preflight
    refused_header = fetch(
        page, f"{server.refused}/api/data", method="PUT", headers={"X-Other": "1"}
    )
    assert refused_header == {"error": "TypeError"}
    refused_method = fetch(page, f"{server.refused}/api/data", method="DELETE")
    assert refused_method == {"error": "TypeError"}
    assert server.preflights() == 3  # each refusal was a preflight answered 400


def test_a_foreign_origin_is_refused(server: Server, open_page: Any) -> None:
    page = open_page(f"{server.refused}/page")
    assert fetch(page, f"{server.allowed}/api/data") == {"error": "TypeError"}
    assert fetch(page, f"{server.allowed}/api/data", credentials="include") == {
        "error": "TypeError"
    }
    public = fetch(page, f"{server.allowed}/public/data")  # allow_origins=["*"]
    assert public["body"] == '{"hello":"world","cookies":0}'


def test_a_wildcard_origin_refuses_credentials_in_the_browser(
    server: Server, open_page: Any
) -> None:
    page = open_page(f"{server.allowed}/page")
    assert fetch(page, f"{server.refused}/public/data")["status"] == 200
    # 'Access-Control-Allow-Origin: *' is not enough for a request with credentials.
    assert fetch(page, f"{server.refused}/public/data", credentials="include") == {
        "error": "TypeError"
    }


def test_the_browser_decodes_compressed_answers(server: Server, open_page: Any) -> None:
    page = open_page(f"{server.allowed}/page")
    result = fetch(page, "/items")  # same origin: every header is visible
    assert result["encoding"] in ("gzip", "br")
    assert json.loads(result["body"]) == ITEMS
