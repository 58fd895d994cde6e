"""Compress: what the client gets for what it accepts (docs/web/middleware.rst).

The page shows the part between the ``# [compress]`` markers.
"""

from __future__ import annotations

import gzip

import brotli  # type: ignore[import-untyped]  # brotli ships no type stubs
import pytest

import peregrine_rt as pr
from peregrine_rt.testing import open_client


class Report:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        rows = "".join(f"<tr><td>{i}</td><td>row {i}</td></tr>" for i in range(500))
        response.headers["etag"] = '"report-7"'
        response.html(f"<table>{rows}</table>")


# [compress]
app = pr.Compress(
    Report,
    minimum_size=1024,  # smaller bodies are sent as they are
    gzip_level=6,
    brotli_quality=5,
    content_types=["text/html", "application/json"],  # only these
)
# [/compress]


@pytest.mark.parametrize(
    ("accept", "coding"),
    [("gzip, deflate, br", "br"), ("gzip, deflate", "gzip"), ("br;q=0, *", "gzip"), ("", None)],
)
async def test_what_each_client_gets(accept: str, coding: str | None) -> None:
    async with open_client(app) as client:
        response = await client.get("/", headers={"Accept-Encoding": accept})
        assert response.headers.get("content-encoding") == coding
        assert response.headers["vary"] == "Accept-Encoding"
        body = response.content
        if coding == "br":
            body = brotli.decompress(body)
        elif coding == "gzip":
            body = gzip.decompress(body)
        assert body.startswith(b"<table><tr><td>0</td>")
        # the compressed bytes differ from the identity bytes: a strong ETag turns weak
        assert response.headers["etag"] == ('W/"report-7"' if coding else '"report-7"')
