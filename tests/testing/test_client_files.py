"""The test client's ``files=``: multipart/form-data bodies that a standard parser reads back."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given
from hypothesis import strategies as st

import peregrine_rt as pr
from peregrine_rt.testing import open_client
from peregrine_rt.testing._multipart import encode_multipart


class Echo:
    """Answers with the request's Content-Type and body, as they arrived."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        body = await request.body()
        response.body = body
        response.headers["x-content-type"] = request.headers.get("content-type") or ""


def _parse(content_type: str, body: bytes) -> list[tuple[str, str | None, bytes, str]]:
    """(name, filename, payload, content type) of each part, read by the email package."""
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert message.is_multipart()
    parts = []
    for part in message.iter_parts():
        disposition = part.get("content-disposition")
        parts.append(
            (
                disposition.params["name"],
                disposition.params.get("filename"),
                part.get_payload(decode=True),
                part.get_content_type(),
            )
        )
    return parts


async def test_files_and_fields_travel_as_multipart() -> None:
    async with open_client(Echo) as client:
        response = await client.post(
            "/upload",
            data={"title": "notes", "tag": ["a", "b"]},
            files={
                "file": ("notes.txt", b"line one\r\nline two\r\n", "text/plain"),
                "raw": b"\x00\xff--",
                "pair": ("p.bin", b"xyz"),
            },
        )
    content_type = response.headers["x-content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    assert _parse(content_type, response.content) == [
        ("title", None, b"notes", "text/plain"),
        ("tag", None, b"a", "text/plain"),
        ("tag", None, b"b", "text/plain"),
        ("file", "notes.txt", b"line one\r\nline two\r\n", "text/plain"),
        ("raw", "raw", b"\x00\xff--", "application/octet-stream"),
        ("pair", "p.bin", b"xyz", "application/octet-stream"),
    ]


@given(
    st.dictionaries(
        st.text("abcdefghij_", min_size=1, max_size=8),
        st.binary(max_size=200),
        min_size=1,
        max_size=4,
    )
)
def test_any_bytes_survive_the_encoding(files: dict[str, bytes]) -> None:
    body, content_type = encode_multipart(None, files)
    parsed = _parse(content_type, body)
    assert [(name, payload) for name, _, payload, _ in parsed] == list(files.items())
