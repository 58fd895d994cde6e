"""Tests of examples/dirserver.py: a directory served with caching, ranges and downloads."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from examples.dirserver import DirServerApp, default_root
from peregrine_rt.testing import open_client


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<h1>home</h1>\n")
    (tmp_path / "assets" / "app.js").write_text("console.log('hi')\n")
    (tmp_path / "assets" / "app.js.gz").write_bytes(gzip.compress(b"console.log('hi')\n"))
    (tmp_path / "report.csv").write_text("a,b\n1,2\n")
    monkeypatch.setenv("STATIC_ROOT", str(tmp_path))
    return tmp_path


async def test_index_and_cache_control(site: Path) -> None:
    async with open_client(DirServerApp) as client:
        r = await client.get("/")
        assert (r.status, r.text) == (200, "<h1>home</h1>\n")
        assert r.headers["cache-control"] == "no-cache"
        r = await client.get("/assets/app.js", headers={"accept-encoding": "gzip"})
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert gzip.decompress(r.content) == b"console.log('hi')\n"
        assert (await client.get("/healthz")).text == "ok\n"


async def test_browser_sequence(site: Path) -> None:
    async with open_client(DirServerApp) as client, client.connection() as conn:
        first = await conn.get("/report.csv")
        again = await conn.get("/report.csv", headers={"if-none-match": first.headers["etag"]})
        assert again.status == 304
        rest = await conn.get(
            "/report.csv", headers={"range": "bytes=4-", "if-range": first.headers["etag"]}
        )
        assert rest.status == 206
        assert first.content[:4] + rest.content == b"a,b\n1,2\n"


async def test_download_and_refusals(site: Path) -> None:
    async with open_client(DirServerApp) as client:
        r = await client.get("/download/report.csv")
        assert r.headers["content-disposition"] == 'attachment; filename="report.csv"'
        assert r.text == "a,b\n1,2\n"
        assert (await client.get("/download/../../etc/passwd")).status == 404
        assert (await client.get("/download/.env")).status == 404
        assert (await client.get("/download/assets/")).status == 404  # a directory: no listing


async def test_download_never_follows_a_symlink_out_of_the_root(
    site: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret")
    (site / "link.txt").symlink_to(outside)
    (site / ".env").write_text("TOKEN=1")
    (site / "envlink").symlink_to(site / ".env")
    async with open_client(DirServerApp) as client:
        for path in ("/download/link.txt", "/link.txt", "/download/envlink", "/download/.env"):
            r = await client.get(path)
            assert r.status == 404, path
            assert b"secret" not in r.content and b"TOKEN" not in r.content
        assert (await client.get("/../etc/passwd")).status == 404
        assert (await client.get("/missing")).status == 404


def test_default_root_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATIC_ROOT", raising=False)
    assert default_root().is_dir()
    DirServerApp()  # builds without the variable
