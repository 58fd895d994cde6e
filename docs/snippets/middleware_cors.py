"""CORS for a single-page app on another origin (docs/web/middleware.rst).

The page shows the part between the ``# [cors]`` markers; the tests below
send what a browser sends.
"""

from __future__ import annotations

import pytest

import peregrine_rt as pr
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import open_client


class Api:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path != "/me":
            raise HTTPError(404)
        response.headers["x-request-id"] = "r-1"
        response.json({"user": request.cookies.get("user")})


# [cors]
app = pr.CORS(
    Api,
    allow_origins=["https://app.example", "http://localhost:5173"],
    allow_origin_regex=r"https://[a-z0-9-]+\.preview\.app\.example",  # preview deployments
    allow_methods=["GET", "POST", "PUT", "DELETE"],
    allow_headers=["Authorization", "X-CSRF-Token"],
    allow_credentials=True,  # fetch(url, {credentials: "include"}) sends the cookies
    expose_headers=["X-Request-Id"],  # the page may read it
    max_age=3600,  # browsers cache a preflight's answer for an hour
)
# [/cors]

SPA = "http://localhost:5173"


async def test_the_page_reads_the_answer_and_the_exposed_header() -> None:
    async with open_client(app) as client:
        response = await client.get("/me", headers={"Origin": SPA}, cookies={"user": "ada"})
        assert response.json() == {"user": "ada"}
        assert response.headers["access-control-allow-origin"] == SPA
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-expose-headers"] == "X-Request-Id"
        missing = await client.get("/nope", headers={"Origin": SPA})
        assert missing.status == 404  # readable by the page: the error has the headers too
        assert missing.headers["access-control-allow-origin"] == SPA


@pytest.mark.parametrize(
    ("origin", "method", "headers", "status"),
    [
        (SPA, "PUT", "authorization, content-type", 204),
        ("https://pr-42.preview.app.example", "DELETE", "x-csrf-token", 204),
        ("https://evil.example", "PUT", "", 400),
        (SPA, "PATCH", "", 400),
        (SPA, "PUT", "x-debug", 400),
    ],
)
async def test_preflights(origin: str, method: str, headers: str, status: int) -> None:
    async with open_client(app) as client:
        response = await client.options(
            "/me",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": headers,
            },
        )
        assert response.status == status
        assert ("access-control-allow-origin" in response.headers) is (status == 204)


def test_wildcard_and_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot work"):
        pr.CORS(Api, allow_origins=["*"], allow_credentials=True)
