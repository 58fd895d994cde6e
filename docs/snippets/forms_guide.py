"""Forms and uploads, the examples of docs/web/forms.rst, run as tests.

The page shows the marked parts (handler, config, encode).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import peregrine_rt as pr
from peregrine_rt import UploadFile
from peregrine_rt.exceptions import HTTPError
from peregrine_rt.testing import open_client

MiB = 1 << 20


# [handler]
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg"}


class Profiles:
    """``POST /profile``: a form with a name and tags; ``POST /avatar``: one image."""

    def __init__(self, uploads: Path) -> None:
        self.uploads = uploads

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        if request.method != "POST":
            raise HTTPError(405, headers={"allow": "POST"})
        if request.path == "/profile":  # urlencoded or multipart: the same code
            form = await request.form()
            name = form.get("name")
            if not isinstance(name, str) or not name:
                raise HTTPError(400, "name is required")
            response.json({"name": name, "tags": form.getlist("tag")})
        elif request.path == "/avatar":
            with await request.form(max_files=1, max_part_size=2 * MiB) as form:
                avatar = form.get("avatar")
                if not isinstance(avatar, UploadFile):
                    raise HTTPError(400, "avatar: a file is required")
                extension = EXTENSIONS.get(avatar.content_type)
                if extension is None:
                    raise HTTPError(415, "avatar: PNG or JPEG")
                stored = self.uploads / f"{uuid.uuid4().hex}{extension}"  # our name for it
                await pr.run_sync(save, avatar, stored)  # blocking file I/O: off the event loop
            response.json({"stored": stored.name, "filename": avatar.filename})
        else:
            raise HTTPError(404)


def save(upload: UploadFile, path: Path) -> None:
    """Copy an upload to a new file at ``path`` (blocking: call it through run_sync)."""
    with path.open("xb") as out:
        shutil.copyfileobj(upload.file, out)


# [/handler]


# [encode]
def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its ``Content-Type``, as a browser encodes them."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        body += head.encode() + value.encode() + b"\r\n"
    for name, (filename, content, content_type) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        body += head.encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def test_avatar_upload(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(1000)
    body, content_type = multipart({}, {"avatar": ("../../me.png", png, "image/png")})
    async with open_client(Profiles(tmp_path)) as client:
        response = await client.post(
            "/avatar", content=body, headers={"content-type": content_type}
        )
    assert response.status == 200
    assert response.json()["filename"] == "me.png"  # the client's name, made safe
    assert (tmp_path / response.json()["stored"]).read_bytes() == png


# [/encode]


async def test_profile_form_either_encoding(tmp_path: Path) -> None:
    body, content_type = multipart({"name": "Ada", "tag": "math"}, {})
    async with open_client(Profiles(tmp_path)) as client:
        urlencoded = await client.post("/profile", data={"name": "Ada", "tag": ["math", "code"]})
        multi = await client.post("/profile", content=body, headers={"content-type": content_type})
        missing = await client.post("/profile", data={"tag": "x"})
    assert urlencoded.json() == {"name": "Ada", "tags": ["math", "code"]}
    assert multi.json() == {"name": "Ada", "tags": ["math"]}
    assert (missing.status, missing.text) == (400, "400 Bad Request\nname is required\n")


async def test_avatar_refusals(tmp_path: Path) -> None:
    big, big_type = multipart({}, {"avatar": ("a.png", bytes(2 * MiB + 1), "image/png")})
    gif, gif_type = multipart({}, {"avatar": ("a.gif", b"GIF89a", "image/gif")})
    two, two_type = multipart({}, {"avatar": ("a.png", b"1", "image/png"), "b": ("b", b"", "x/y")})
    async with open_client(Profiles(tmp_path), max_body_size=4 * MiB) as client:
        for body, content_type, status in [
            (big, big_type, 413),
            (gif, gif_type, 415),
            (two, two_type, 400),
            (b"{}", "application/json", 415),
        ]:
            response = await client.post(
                "/avatar", content=body, headers={"content-type": content_type}
            )
            assert response.status == status, response.text
    assert list(tmp_path.iterdir()) == []  # nothing stored


def test_config(tmp_path: Path) -> None:
    # [config]
    config = pr.Config(
        max_body_size=8 * MiB,  # the whole body (413), checked while it streams
        form_max_fields=200,  # fields and files together (400)
        form_max_files=5,  # files (400)
        form_max_part_size=4 * MiB,  # one file (413); None: only max_body_size
        form_spool_size=256 * 1024,  # bytes of a file kept in memory before disk
    )
    server = pr.Server(Profiles(tmp_path), config)
    # [/config]
    assert server.config.form_max_files == 5
