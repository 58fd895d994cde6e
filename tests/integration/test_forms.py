"""``await request.form()`` through a running server: limits, refusals, spooling, memory."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt._forms import UploadFile
from peregrine_rt.testing import open_client, open_server

BOUNDARY = "----peregrineIntegration9b8c"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
MiB = 1 << 20


def part_head(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def multipart(*parts: tuple[str, str | tuple[str, bytes]]) -> bytes:
    body = b""
    for name, value in parts:
        if isinstance(value, str):
            body += part_head(name) + value.encode() + b"\r\n"
        else:
            body += part_head(name, value[0]) + value[1] + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


class Forms:
    """Describes the form it received, as JSON."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.path == "/plain":
            response.text("plain")
            return
        if request.path == "/twice":
            first = await request.form()
            with first:
                response.json({"same": await request.form() is first})
            return
        limit = MiB if request.path == "/limited" else None
        with await request.form(max_part_size=limit) as form:
            described: list[list[Any]] = []
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    digest = hashlib.sha256()
                    while piece := await value.read(65536):
                        digest.update(piece)
                    described.append(
                        [
                            name,
                            {
                                "filename": value.filename,
                                "size": value.size,
                                "sha256": digest.hexdigest(),
                                "in_memory": value.in_memory,
                            },
                        ]
                    )
                else:
                    described.append([name, value])
        response.json(described)


def file_info(content: bytes, filename: str, *, in_memory: bool = True) -> dict[str, Any]:
    return {
        "filename": filename,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "in_memory": in_memory,
    }


async def test_urlencoded_form() -> None:
    async with open_client(Forms) as client:
        response = await client.post("/", data={"user": "ada", "tag": ["a b", "é&="]})
    assert response.status == 200
    assert response.json() == [["user", "ada"], ["tag", "a b"], ["tag", "é&="]]


@pytest.mark.parametrize("chunked", [False, True])
async def test_multipart_upload(chunked: bool) -> None:
    content = bytes(range(256)) * 40
    body = multipart(("title", "café"), ("file", ("../../x.bin", content)))

    async def pieces() -> AsyncIterator[bytes]:
        for at in range(0, len(body), 1000):
            yield body[at : at + 1000]

    async with open_client(Forms) as client:
        response = await client.post(
            "/", content=pieces() if chunked else body, headers={"content-type": MULTIPART}
        )
    assert response.status == 200
    assert response.json() == [["title", "café"], ["file", file_info(content, "x.bin")]]


async def test_form_is_read_once() -> None:
    async with open_client(Forms) as client:
        response = await client.post("/twice", data={"a": "1"})
    assert response.json() == {"same": True}


async def test_a_file_past_the_spool_size_rolls_to_disk() -> None:
    small, big = b"s" * 1024, b"b" * 1025
    body = multipart(("small", ("s.txt", small)), ("big", ("b.txt", big)))
    async with open_client(Forms, form_spool_size=1024) as client:
        response = await client.post("/", content=body, headers={"content-type": MULTIPART})
    assert response.json() == [
        ["small", file_info(small, "s.txt")],
        ["big", file_info(big, "b.txt", in_memory=False)],
    ]


async def test_part_size_limit_gives_413_and_the_connection_goes_on() -> None:
    at_limit = multipart(("file", ("a.bin", b"x" * MiB)))
    over = multipart(("file", ("a.bin", b"x" * (MiB + 1))))
    headers = {"content-type": MULTIPART}
    async with open_client(Forms, max_body_size=2 * MiB) as client, client.connection() as conn:
        response = await conn.post("/limited", content=at_limit, headers=headers)
        assert response.status == 200
        assert response.json()[0][1]["size"] == MiB
        response = await conn.post("/limited", content=over, headers=headers)
        assert response.status == 413
        assert response.text.endswith("\nfile 'file' is over 1048576 bytes\n")
        # the rest of the body was small enough to drain: the connection serves on
        assert (await conn.get("/plain")).text == "plain"


async def test_part_far_over_the_limit_closes_the_connection() -> None:
    far_over = multipart(("file", ("a.bin", b"x" * (2 * MiB))))
    async with open_client(Forms, max_body_size=4 * MiB) as client:
        response = await client.post(
            "/limited", content=far_over, headers={"content-type": MULTIPART}
        )
    assert response.status == 413
    assert response.headers["connection"] == "close"  # too much left to drain


async def test_config_limits_apply() -> None:
    body = multipart(("a", "1"), ("f", ("1", b"1")), ("g", ("2", b"2")))
    headers = {"content-type": MULTIPART}
    async with open_client(Forms, form_max_files=1, form_max_fields=10) as client:
        response = await client.post("/", content=body, headers=headers)
    assert (response.status, response.text) == (
        400,
        "400 Bad Request\ntoo many files (the limit is 1)\n",
    )
    async with open_client(Forms, form_max_fields=2) as client:
        response = await client.post("/", content=body, headers=headers)
    assert response.text == "400 Bad Request\ntoo many fields (the limit is 2)\n"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (multipart(("a", "1"))[:-20], "truncated multipart body: no closing boundary"),
        (b"--wrong\r\n" + multipart(("a", "1")), "malformed multipart body"),
        (
            part_head("a").replace(b"form-data", b"inline")
            + b"1\r\n--"
            + BOUNDARY.encode()
            + b"--",
            "a multipart part is not Content-Disposition",
        ),
    ],
)
async def test_broken_bodies_give_400_and_the_connection_goes_on(body: bytes, detail: str) -> None:
    async with open_client(Forms) as client, client.connection() as conn:
        response = await conn.post("/", content=body, headers={"content-type": MULTIPART})
        assert response.status == 400
        assert response.text.startswith(f"400 Bad Request\n{detail}")
        assert (await conn.get("/plain")).text == "plain"


async def test_not_a_form_gives_415_with_accept() -> None:
    async with open_client(Forms) as client:
        response = await client.post("/", json={"a": 1})
        assert response.status == 415
        assert response.headers["accept"] == (
            "application/x-www-form-urlencoded, multipart/form-data"
        )
        response = await client.post(
            "/", content=b"a=1", headers={"content-type": MULTIPART.split(";", 1)[0]}
        )
        assert response.status == 400
        assert "without a boundary" in response.text
        assert (await client.post("/")).json() == []  # no body, no type: an empty form


async def test_body_over_max_body_size_gives_413() -> None:
    body = multipart(("file", ("a.bin", b"x" * 5000)))
    async with open_client(Forms, max_body_size=4096) as client:
        response = await client.post("/", content=body, headers={"content-type": MULTIPART})
    assert response.status == 413


UPLOAD = 20 * MiB
PIECE = 64 * 1024


async def test_a_big_upload_streams_through_a_small_memory() -> None:
    """20 MiB over a real socket: the process's Python allocations stay near the spool size."""
    filler = b"\x5a" * PIECE  # one object, sent again and again: the client allocates little

    async def body() -> AsyncIterator[bytes]:
        yield part_head("file", "big.bin")
        for _ in range(UPLOAD // PIECE):
            yield filler
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    expected = hashlib.sha256()
    for _ in range(UPLOAD // PIECE):
        expected.update(filler)
    async with (
        open_server(Forms, max_body_size=64 * MiB) as live,
        open_client(live.url, timeout=120) as client,
    ):
        tracemalloc.start()
        try:
            response = await client.post("/", content=body(), headers={"content-type": MULTIPART})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status == 200, response.text
    assert response.json() == [
        [
            "file",
            {
                "filename": "big.bin",
                "size": UPLOAD,
                "sha256": expected.hexdigest(),
                "in_memory": False,
            },
        ]
    ]
    print(f"tracemalloc peak for a {UPLOAD >> 20} MiB upload: {peak / MiB:.2f} MiB")
    assert peak < UPLOAD / 5, f"peak {peak} bytes"


async def test_form_after_body_reads_the_kept_body() -> None:
    """A middleware that read body() first does not leave the handler an empty form."""

    class Peek:
        async def handle(self, request: pr.Request, response: pr.Response) -> None:
            raw = await request.body()
            form = await request.form()
            again = b"".join([piece async for piece in request.stream()])
            response.json({"raw": len(raw), "fields": dict(form), "again": len(again)})

    async with open_client(Peek) as client:
        answer = await client.post("/", data={"a": "1", "b": "two"})
        body = len("a=1&b=two")
        assert answer.json() == {"raw": body, "fields": {"a": "1", "b": "two"}, "again": body}
        empty = await client.post("/", content=b"", headers={"content-type": "text/plain"})
        assert empty.status == 415  # the kept body is checked like a streamed one
