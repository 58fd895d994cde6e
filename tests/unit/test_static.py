"""DirServer and Response.file through the in-memory client, and the rules they apply.

Every behaviour of the static-file issue has a test here (traversal and the
other refusals, 304/412, ranges, pre-compressed siblings, content types,
caching of changed files); the real-socket cases (large files, sendfile,
slow readers, files shrinking mid-send) are in tests/integration/test_static.py.
"""

from __future__ import annotations

import doctest
import errno
import gzip
import os
import re
from pathlib import Path
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt import _mime, _validators
from peregrine_rt._mime import content_type
from peregrine_rt._validators import (
    choose_encoding,
    etag_matches,
    if_range_holds,
    parse_http_date,
    parse_ranges,
    preconditions,
)
from peregrine_rt.testing import open_client

HELLO = b"hello, world\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with files of every kind, and outside/ next to it with a secret."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "hello.txt").write_bytes(HELLO)
    (root / "sub" / "index.html").write_text("<h1>sub</h1>\n")
    (root / "sub" / "page.html").write_text("<p>page</p>\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    return root


def app_for(root: Path, **options: object) -> object:
    class App:
        static = pr.DirServer(root, **options)  # type: ignore[arg-type]

        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await self.static.serve(request, response)

    return App


# -- the pure rules ---------------------------------------------------------------------


@pytest.mark.parametrize("module", [_mime, _validators], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    failed, attempted = doctest.testmod(module)  # type: ignore[arg-type]
    assert attempted > 0
    assert failed == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("mod.mjs", "text/javascript; charset=utf-8"),
        ("x.wasm", "application/wasm"),
        ("site.webmanifest", "application/manifest+json; charset=utf-8"),
        ("logo.svg", "image/svg+xml; charset=utf-8"),
        ("f.woff", "font/woff"),
        ("f.woff2", "font/woff2"),
        ("f.ttf", "font/ttf"),
        ("f.otf", "font/otf"),
        ("index.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("photo.png", "image/png"),
        ("noext", "application/octet-stream"),
        (".hidden", "application/octet-stream"),
    ],
)
def test_content_types(name: str, expected: str) -> None:
    assert content_type(name) == expected


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, [(0, 0)]),
        ("bytes=2-", 10, [(2, 9)]),
        ("bytes=-3", 10, [(7, 9)]),
        ("bytes=-30", 10, [(0, 9)]),
        ("bytes=5-100", 10, [(5, 9)]),
        ("bytes=0-1, 4-5", 10, [(0, 1), (4, 5)]),
        ("bytes= 0-1 ,, 4-5", 10, [(0, 1), (4, 5)]),
        ("BYTES=0-1", 10, [(0, 1)]),
        ("bytes=10-", 10, []),  # starts past the end: 416
        ("bytes=-0", 10, []),
        ("bytes=0-", 0, []),  # nothing of an empty file can be sent
        ("bytes=99999999999999999999999-", 10, []),
        ("bytes=5-1", 10, None),  # invalid: ignored, 200
        ("bytes=a-b", 10, None),
        ("bytes=1", 10, None),
        ("bytes=", 10, None),
        ("bytes=-", 10, None),
        ("bytes=+1-2", 10, None),
        ("bytes=\u0661-\u0662", 10, None),  # non-ASCII digits
        ("lines=0-1", 10, None),
        ("0-1", 10, None),
        ("bytes=" + ",".join(["0-0"] * 101), 10, None),  # too many parts
    ],
)
def test_parse_ranges(header: str, size: int, expected: list[tuple[int, int]] | None) -> None:
    assert parse_ranges(header, size) == expected


ETAG = b'"abc-10"'
MTIME = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AT = "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    ("headers", "method", "expected"),
    [
        ({}, "GET", 200),
        ({"if-none-match": '"abc-10"'}, "GET", 304),
        ({"if-none-match": 'W/"abc-10"'}, "GET", 304),  # weak comparison
        ({"if-none-match": '"x", "abc-10"'}, "HEAD", 304),
        ({"if-none-match": "*"}, "GET", 304),
        ({"if-none-match": '"other"'}, "GET", 200),
        ({"if-none-match": '"abc-10"'}, "POST", 412),
        ({"if-modified-since": AT}, "GET", 304),
        ({"if-modified-since": BEFORE}, "GET", 200),
        ({"if-modified-since": "garbage"}, "GET", 200),
        ({"if-none-match": '"other"', "if-modified-since": AT}, "GET", 200),  # INM wins
        ({"if-match": '"abc-10"'}, "GET", 200),
        ({"if-match": "*"}, "GET", 200),
        ({"if-match": '"other"'}, "GET", 412),
        ({"if-match": 'W/"abc-10"'}, "GET", 412),  # strong comparison
        ({"if-unmodified-since": BEFORE}, "GET", 412),
        ({"if-unmodified-since": AT}, "GET", 200),
        ({"if-match": '"abc-10"', "if-unmodified-since": BEFORE}, "GET", 200),  # IM wins
    ],
)
def test_preconditions(headers: dict[str, str], method: str, expected: int) -> None:
    assert preconditions(headers, ETAG, MTIME, method) == expected


def test_if_range_rule() -> None:
    assert if_range_holds(None, ETAG, MTIME)
    assert if_range_holds('"abc-10"', ETAG, MTIME)
    assert not if_range_holds('"old"', ETAG, MTIME)
    assert not if_range_holds('W/"abc-10"', ETAG, MTIME)  # weak tags never match
    assert if_range_holds(AT, ETAG, MTIME)
    assert not if_range_holds(BEFORE, ETAG, MTIME)
    assert not if_range_holds("nonsense", ETAG, MTIME)


def test_etag_lists_and_dates() -> None:
    assert etag_matches(' "a" , "abc-10" ', ETAG, weak=False)
    assert not etag_matches("", ETAG, weak=True)
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 +0100") == MTIME - 3600
    assert parse_http_date("") is None


@pytest.mark.parametrize(
    ("accept", "available", "expected"),
    [
        ("gzip, deflate, br", {b"br", b"gzip"}, b"br"),
        ("gzip, deflate, br", {b"gzip"}, b"gzip"),
        ("gzip, deflate", {b"br"}, None),
        ("br;q=0.5, gzip;q=0.8", {b"br", b"gzip"}, b"gzip"),
        ("br;q=0, gzip;q=0", {b"br", b"gzip"}, None),
        ("*", {b"br", b"gzip"}, b"br"),
        ("*;q=0.1, br;q=0", {b"br", b"gzip"}, b"gzip"),
        ("identity", {b"br", b"gzip"}, None),
        ("x-gzip", {b"gzip"}, b"gzip"),
        ("GZIP;Q=1", {b"gzip"}, b"gzip"),
        ("gzip;q=oops", {b"gzip"}, None),
    ],
)
def test_choose_encoding(accept: str, available: set[bytes], expected: bytes | None) -> None:
    assert choose_encoding(accept, available) == expected


# -- construction ---------------------------------------------------------------------


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        pr.DirServer(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        pr.DirServer(tmp_path / "f")
    with pytest.raises(ValueError, match="index"):
        pr.DirServer(tmp_path, index="a/b.html")
    with pytest.raises(ValueError, match="Cache-Control"):
        pr.DirServer(tmp_path, cache_control={"*": "a\r\nb"})


# -- GET, HEAD, methods, directories ----------------------------------------------------


async def test_get_and_head(tree: Path) -> None:
    async with open_client(app_for(tree)) as client:
        r = await client.get("/hello.txt")
        assert r.status == 200
        assert r.content == HELLO
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert r.headers["content-length"] == str(len(HELLO))
        assert r.headers["accept-ranges"] == "bytes"
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', r.headers["etag"])
        assert r.headers["last-modified"].endswith(" GMT")
        assert "vary" not in r.headers  # no siblings: nothing varies
        h = await client.head("/hello.txt")
        assert h.status == 200
        assert h.content == b""
        assert h.headers["content-length"] == str(len(HELLO))
        assert h.headers["etag"] == r.headers["etag"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_get_405_with_allow(tree: Path, method: str) -> None:
    async with open_client(app_for(tree)) as client:
        r = await client.request(method, "/hello.txt")
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"


async def test_directories(tree: Path) -> None:
    async with open_client(app_for(tree)) as client:
        r = await client.get("/sub")
        assert r.status == 301
        assert r.headers["location"] == "/sub/"
        r = await client.get("/sub?x=1&y=2")
        assert r.headers["location"] == "/sub/?x=1&y=2"
        r = await client.get("/sub/")
        assert (r.status, r.text) == (200, "<h1>sub</h1>\n")
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert (await client.get("/empty/")).status == 404  # no index, no listing
        assert (await client.get("/")).status == 404
        assert (await client.get("/hello.txt/")).status == 404  # a file is not a directory
        assert (await client.get("/missing.txt")).status == 404
        assert (await client.get("/sub/missing/deeper")).status == 404


async def test_listing_only_when_enabled(tree: Path) -> None:
    (tree / "empty" / "a <b>&.txt").write_text("x")
    (tree / "empty" / ".hidden").write_text("x")
    (tree / "empty" / "inner").mkdir()
    async with open_client(app_for(tree, listing=True)) as client:
        r = await client.get("/empty/")
        assert r.status == 200
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert 'href="a%20%3Cb%3E%26.txt"' in r.text
        assert "a &lt;b&gt;&amp;.txt" in r.text
        assert 'href="inner/"' in r.text
        assert ".hidden" not in r.text
        assert str(tree) not in r.text
        assert (await client.get("/sub/")).text == "<h1>sub</h1>\n"  # the index wins
    async with open_client(app_for(tree, listing=True, index=None)) as client:
        assert "page.html" in (await client.get("/sub/")).text


async def test_prefix(tree: Path) -> None:
    async with open_client(app_for(tree, prefix="/static")) as client:
        assert (await client.get("/static/hello.txt")).content == HELLO
        assert (await client.get("/hello.txt")).status == 404
        assert (await client.get("/staticky/hello.txt")).status == 404
        r = await client.get("/static")
        assert (r.status, r.headers["location"]) == (301, "/static/")
        assert (await client.get("/static/../static/hello.txt")).content == HELLO


# -- security: no file outside the root, no hidden file, no path in an answer -------------


def assert_refused(response: object, tree: Path, statuses: tuple[int, ...] = (404,)) -> None:
    status = response.status  # type: ignore[attr-defined]
    body = response.content  # type: ignore[attr-defined]
    assert status in statuses, (status, body)
    assert b"secret" not in body.lower()
    assert str(tree.parent).encode() not in body
    assert b"root" not in body


@pytest.mark.parametrize(
    "target",
    [
        "/../outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/%2e%2e/outside/secret.txt",
        "/sub/%2e%2e/%2e%2e/outside/secret.txt",
        "/.%2e/outside/secret.txt",
    ],
)
async def test_dot_dot_never_leaves_the_root(tree: Path, target: str) -> None:
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get(target), tree)


@pytest.mark.parametrize(
    "target",
    ["/..%2foutside%2fsecret.txt", "/%2e%2e%2Foutside/secret.txt", "/sub%2f..%2f..%2fx"],
)
async def test_encoded_slash_is_refused(tree: Path, target: str) -> None:
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get(target), tree, (400,))


@pytest.mark.parametrize(
    "target", ["/..\\outside\\secret.txt", "/%5c..%5coutside%5csecret.txt", "/sub\\index.html"]
)
async def test_backslashes_are_refused(tree: Path, target: str) -> None:
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get(target), tree, (400,))


@pytest.mark.parametrize("target", ["/hello.txt%00", "/hello.txt%00.png", "/%00/x", "/a%01b"])
async def test_nul_and_control_bytes_are_refused(tree: Path, target: str) -> None:
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get(target), tree, (400,))


@pytest.mark.parametrize(
    "target",
    [
        "//etc/passwd",
        f"/{'/'.join([''])}/etc/passwd",
        "//" + "tmp/x",
        "/sub//index.html",
        "http://testserver//etc/passwd",
    ],
)
async def test_absolute_paths_are_refused(tree: Path, target: str) -> None:
    (tree / "etc").mkdir()
    (tree / "etc" / "passwd").write_text("in the root, but not by //")
    async with open_client(app_for(tree)) as client:
        r = await client.get(target)
        assert r.status == 404
        assert b"passwd" not in r.content
        assert (await client.get("/etc/passwd")).status == 200  # the right way in works


async def test_absolute_path_from_the_filesystem_root(tree: Path) -> None:
    secret = tree.parent / "outside" / "secret.txt"
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get(str(secret)), tree)  # joined under the root: missing
        assert_refused(await client.get("/" + str(secret)), tree)  # "//tmp/...": refused


async def test_symlinks_are_not_followed_by_default(tree: Path) -> None:
    outside = tree.parent / "outside"
    (tree / "out.txt").symlink_to(outside / "secret.txt")
    (tree / "outdir").symlink_to(outside)
    (tree / "in.txt").symlink_to(tree / "hello.txt")
    (tree / "indir").symlink_to(tree / "sub")
    async with open_client(app_for(tree)) as client:
        for target in ("/out.txt", "/outdir/secret.txt", "/in.txt", "/indir/page.html"):
            assert_refused(await client.get(target), tree)
        assert (await client.get("/hello.txt")).status == 200


async def test_followed_symlinks_stay_inside_the_root(tree: Path) -> None:
    outside = tree.parent / "outside"
    (tree / "out.txt").symlink_to(outside / "secret.txt")
    (tree / "outdir").symlink_to(outside)
    (tree / "sneaky").symlink_to("sub/../../outside")
    (tree / "in.txt").symlink_to(tree / "hello.txt")
    (tree / "indir").symlink_to("sub")
    async with open_client(app_for(tree, follow_symlinks=True)) as client:
        for target in ("/out.txt", "/outdir/secret.txt", "/sneaky/secret.txt"):
            assert_refused(await client.get(target), tree)
        assert (await client.get("/in.txt")).content == HELLO
        assert (await client.get("/indir/page.html")).text == "<p>page</p>\n"


async def test_a_followed_symlink_cannot_reach_a_hidden_file(tree: Path) -> None:
    (tree / "envlink").symlink_to(tree / ".env")
    (tree / "gitdir").symlink_to(".git")
    async with open_client(app_for(tree, follow_symlinks=True)) as client:
        for target in ("/envlink", "/gitdir/config"):
            assert_refused(await client.get(target), tree)
    async with open_client(app_for(tree, follow_symlinks=True, hidden=True)) as client:
        assert (await client.get("/envlink")).text == "SECRET=1\n"


async def test_symlinked_index_file_is_checked_too(tree: Path) -> None:
    (tree / "empty" / "index.html").symlink_to(tree.parent / "outside" / "secret.txt")
    async with open_client(app_for(tree, follow_symlinks=True)) as client:
        assert_refused(await client.get("/empty/"), tree)


async def test_precompressed_symlink_out_of_the_root_is_ignored(tree: Path) -> None:
    (tree.parent / "outside" / "x.gz").write_bytes(gzip.compress(b"not yours"))
    (tree / "hello.txt.gz").symlink_to(tree.parent / "outside" / "x.gz")
    async with open_client(app_for(tree, follow_symlinks=True)) as client:
        r = await client.get("/hello.txt", headers={"accept-encoding": "gzip"})
        assert r.content == HELLO
        assert "content-encoding" not in r.headers


@pytest.mark.parametrize("target", ["/.env", "/.git/config", "/.git/", "/sub/../.env"])
async def test_dotfiles_are_hidden_by_default(tree: Path, target: str) -> None:
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get(target), tree)


async def test_dotfiles_when_enabled(tree: Path) -> None:
    async with open_client(app_for(tree, hidden=True)) as client:
        assert (await client.get("/.env")).text == "SECRET=1\n"
        assert (await client.get("/.git/config")).status == 200


async def test_not_regular_files_are_refused(tree: Path) -> None:
    os.mkfifo(tree / "fifo")  # opening it would block the server
    async with open_client(app_for(tree)) as client:
        assert_refused(await client.get("/fifo"), tree)


@pytest.mark.parametrize(
    ("err", "status"),
    [(errno.EACCES, 404), (errno.ENOENT, 404), (errno.EMFILE, 503), (errno.EIO, 503)],
)
async def test_a_file_that_cannot_be_opened(
    tree: Path, monkeypatch: pytest.MonkeyPatch, err: int, status: int
) -> None:
    """Unreadable or gone: 404.  Out of descriptors, an I/O error: 503 (not cacheable)."""
    real_open = os.open

    def failing_open(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith("hello.txt"):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", failing_open)
    async with open_client(app_for(tree)) as client:
        r = await client.get("/hello.txt")
        assert r.status == status
        assert str(tree) not in r.text
        assert len(r.headers.getlist("content-type")) == 1
        if status == 503:
            assert r.headers["retry-after"] == "1"


# -- caching: validators, 304, 412, Cache-Control, changed files --------------------------


async def test_conditional_requests(tree: Path) -> None:
    async with open_client(app_for(tree)) as client:
        first = await client.get("/hello.txt")
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        r = await client.get("/hello.txt", headers={"if-none-match": etag})
        assert (r.status, r.content) == (304, b"")
        assert r.headers["etag"] == etag
        assert "content-length" not in r.headers
        r = await client.get("/hello.txt", headers={"if-modified-since": modified})
        assert r.status == 304
        r = await client.head("/hello.txt", headers={"if-none-match": etag})
        assert r.status == 304
        r = await client.get("/hello.txt", headers={"if-none-match": '"stale"'})
        assert (r.status, r.content) == (200, HELLO)
        r = await client.get("/hello.txt", headers={"if-match": '"stale"'})
        assert r.status == 412
        r = await client.get("/hello.txt", headers={"if-match": etag})
        assert r.status == 200
        r = await client.get(
            "/hello.txt", headers={"if-unmodified-since": "Sun, 06 Nov 1994 08:49:37 GMT"}
        )
        assert r.status == 412


async def test_cache_control_by_pattern(tree: Path) -> None:
    rules = [("sub/*", "public, max-age=60"), ("*.txt", "no-cache")]
    async with open_client(app_for(tree, cache_control=rules)) as client:
        assert (await client.get("/sub/page.html")).headers["cache-control"] == (
            "public, max-age=60"
        )
        assert (await client.get("/sub/")).headers["cache-control"] == "public, max-age=60"
        assert (await client.get("/hello.txt")).headers["cache-control"] == "no-cache"
        assert "cache-control" not in (await client.get("/data.bin")).headers
        first = await client.get("/hello.txt")
        r = await client.get("/hello.txt", headers={"if-none-match": first.headers["etag"]})
        assert r.headers["cache-control"] == "no-cache"  # a 304 repeats it


async def test_changed_file_is_served_fresh(tree: Path) -> None:
    async with open_client(app_for(tree, revalidate_after=0)) as client:
        first = await client.get("/hello.txt")
        (tree / "hello.txt").write_bytes(b"changed and longer\n")
        r = await client.get("/hello.txt")
        assert r.content == b"changed and longer\n"
        assert r.headers["etag"] != first.headers["etag"]
        (tree / "hello.txt").unlink()
        assert (await client.get("/hello.txt")).status == 404


async def test_small_files_are_cached_within_bounds(tree: Path) -> None:
    server = pr.DirServer(tree, cache_bytes=4000)
    files = server._files

    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            await server.serve(request, response)

    for i in range(20):
        (tree / f"f{i}.txt").write_bytes(b"%d" % i * 500)
    async with open_client(App) as client:
        for i in range(20):
            assert (await client.get(f"/f{i}.txt")).content == b"%d" % i * 500
    assert files.bytes <= 4000
    assert 0 < len(files.entries) < 20


# -- ranges ----------------------------------------------------------------------------------


async def test_single_range(tree: Path) -> None:
    data = (tree / "data.bin").read_bytes()
    async with open_client(app_for(tree)) as client:
        r = await client.get("/data.bin", headers={"range": "bytes=10-19"})
        assert r.status == 206
        assert r.content == data[10:20]
        assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
        assert r.headers["content-length"] == "10"
        r = await client.get("/data.bin", headers={"range": "bytes=-5"})
        assert r.content == data[-5:]
        r = await client.head("/data.bin", headers={"range": "bytes=0-1"})
        assert r.status == 200  # ranges are for GET
        r = await client.get("/data.bin", headers={"range": "bytes=9-1"})
        assert (r.status, r.content) == (200, data)  # invalid: ignored


async def test_unsatisfiable_range(tree: Path) -> None:
    async with open_client(app_for(tree)) as client:
        r = await client.get("/data.bin", headers={"range": "bytes=5000-6000"})
        assert r.status == 416
        assert r.headers["content-range"] == "bytes */1024"


async def test_if_range(tree: Path) -> None:
    data = (tree / "data.bin").read_bytes()
    async with open_client(app_for(tree)) as client:
        etag = (await client.get("/data.bin")).headers["etag"]
        r = await client.get("/data.bin", headers={"range": "bytes=0-3", "if-range": etag})
        assert (r.status, r.content) == (206, data[:4])
        r = await client.get("/data.bin", headers={"range": "bytes=0-3", "if-range": '"old"'})
        assert (r.status, r.content) == (200, data)


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    boundary = content_type.split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)
    assert parts[0] == b""
    assert parts[-1] == b"--\r\n"
    result = []
    for part in parts[1:-1]:
        head, _, data = part.partition(b"\r\n\r\n")
        assert data.endswith(b"\r\n")
        ranges = re.search(rb"content-range: bytes (\S+)", head)
        assert ranges is not None
        result.append((ranges.group(1).decode(), data[:-2]))
    return result


@pytest.mark.parametrize("small_file_size", [65536, 0], ids=["in-memory", "streamed"])
async def test_multiple_ranges(tree: Path, small_file_size: int) -> None:
    data = (tree / "data.bin").read_bytes()
    async with open_client(app_for(tree, small_file_size=small_file_size)) as client:
        r = await client.get("/data.bin", headers={"range": "bytes=0-1, 100-103, -2"})
        assert r.status == 206
        assert r.headers["content-type"].startswith("multipart/byteranges; boundary=")
        assert int(r.headers["content-length"]) == len(r.content)
        assert parse_multipart(r.content, r.headers["content-type"]) == [
            ("0-1/1024", data[0:2]),
            ("100-103/1024", data[100:104]),
            ("1022-1023/1024", data[-2:]),
        ]
        # Overlapping (or touching) ranges, and too many, get the whole file.
        for header in ("bytes=0-10, 5-20", "bytes=0-1, 2-3", ",".join(["bytes=0-0"] * 2)):
            r = await client.get("/data.bin", headers={"range": header})
            assert (r.status, r.content) == (200, data)
        many = "bytes=" + ", ".join(f"{i * 10}-{i * 10}" for i in range(17))
        assert (await client.get("/data.bin", headers={"range": many})).status == 200
    async with open_client(app_for(tree, multipart_ranges=False)) as client:
        r = await client.get("/data.bin", headers={"range": "bytes=0-1, 100-103"})
        assert (r.status, r.content) == (200, data)


# -- pre-compressed siblings ------------------------------------------------------------------


async def test_precompressed_siblings(tree: Path) -> None:
    css = b"body { color: red }\n" * 20
    (tree / "app.css").write_bytes(css)
    (tree / "app.css.gz").write_bytes(gzip.compress(css))
    (tree / "app.css.br").write_bytes(b"pretend brotli")
    async with open_client(app_for(tree)) as client:
        r = await client.get("/app.css", headers={"accept-encoding": "gzip, deflate, br"})
        assert r.headers["content-encoding"] == "br"
        assert r.content == b"pretend brotli"
        assert r.headers["vary"] == "accept-encoding"
        assert r.headers["content-type"] == "text/css; charset=utf-8"
        br_etag = r.headers["etag"]
        r = await client.get("/app.css", headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert gzip.decompress(r.content) == css
        assert r.headers["etag"] != br_etag
        r = await client.get("/app.css")
        assert "content-encoding" not in r.headers
        assert r.headers["vary"] == "accept-encoding"
        assert r.content == css
        assert len({br_etag, r.headers["etag"]}) == 2
        r = await client.get(
            "/app.css", headers={"accept-encoding": "br", "if-none-match": br_etag}
        )
        assert r.status == 304
        assert r.headers["vary"] == "accept-encoding"
        r = await client.get("/app.css.gz")  # asked for by name: the bytes, as they are
        assert r.headers["content-type"] == "application/gzip"
        assert "content-encoding" not in r.headers
    async with open_client(app_for(tree, precompressed=False)) as client:
        r = await client.get("/app.css", headers={"accept-encoding": "gzip, br"})
        assert "content-encoding" not in r.headers
        assert "vary" not in r.headers


async def test_stale_sibling_is_not_used(tree: Path) -> None:
    (tree / "app.js").write_text("new()\n")
    (tree / "app.js.gz").write_bytes(gzip.compress(b"old()\n"))
    os.utime(tree / "app.js.gz", (1_000_000, 1_000_000))
    async with open_client(app_for(tree)) as client:
        r = await client.get("/app.js", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in r.headers
        assert r.text == "new()\n"
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"


# -- Response.file ------------------------------------------------------------------------


def file_app(path: Path, **options: object) -> object:
    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.file(path, **options)  # type: ignore[arg-type]

    return App


async def test_response_file(tree: Path) -> None:
    async with open_client(file_app(tree / "hello.txt")) as client:
        r = await client.get("/anything")
        assert (r.status, r.content) == (200, HELLO)
        etag = r.headers["etag"]
        assert (await client.get("/", headers={"if-none-match": etag})).status == 304
        r = await client.get("/", headers={"range": "bytes=0-4"})
        assert (r.status, r.content) == (206, b"hello")
        assert (await client.post("/")).status == 405
        assert (await client.head("/")).headers["content-length"] == str(len(HELLO))


async def test_response_file_options(tree: Path) -> None:
    app = file_app(
        tree / "data.bin",
        content_type="application/x-thing",
        cache_control="max-age=5",
        filename='résumé "v1".bin',
    )
    async with open_client(app) as client:
        r = await client.get("/")
        assert r.headers["content-type"] == "application/x-thing"
        assert r.headers["cache-control"] == "max-age=5"
        assert r.headers["content-disposition"] == (
            'attachment; filename="r_sum_ _v1_.bin"; '
            "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v1%22.bin"
        )


async def test_response_file_missing_is_404_without_path(tree: Path) -> None:
    async with open_client(file_app(tree / "nope.txt")) as client:
        assert_refused(await client.get("/"), tree)
    async with open_client(file_app(tree / "sub")) as client:
        assert_refused(await client.get("/"), tree)


async def test_response_file_then_text_replaces_it(tree: Path) -> None:
    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.file(tree / "data.bin")
            response.text("instead")

    async with open_client(App) as client:
        assert (await client.get("/")).text == "instead"


async def test_response_file_without_a_connection(tree: Path) -> None:
    response = pr.Response()
    response.file(tree / "data.bin")
    assert response.body == (tree / "data.bin").read_bytes()
    response = pr.Response()
    big = tree / "big.bin"
    big.write_bytes(b"x" * 200_000)
    response.file(big)
    assert response.body == b"x" * 200_000


async def test_handler_error_after_file_closes_it(tree: Path) -> None:
    big = tree / "big.bin"
    big.write_bytes(b"x" * 200_000)
    before = len(os.listdir("/proc/self/fd"))

    class App:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            response.file(big)
            if request.path == "/boom":
                raise RuntimeError("after file()")

    async with open_client(App) as client:
        for _ in range(5):
            assert (await client.get("/boom")).status == 500
            assert (await client.get("/")).content == b"x" * 200_000
    assert len(os.listdir("/proc/self/fd")) <= before
