"""``multipart/form-data`` bodies for the test client's ``files=`` (RFC 7578)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

__all__ = ["FileArg", "encode_multipart"]

FileArg = bytes | tuple[str, bytes] | tuple[str, bytes, str]
"""An upload: its bytes, ``(filename, bytes)`` or ``(filename, bytes, content_type)``."""


def _quote(value: str) -> str:
    # What browsers do (WHATWG HTML, "multipart/form-data encoding algorithm").
    return value.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


def encode_multipart(
    fields: Mapping[str, Any] | None, files: Mapping[str, FileArg]
) -> tuple[bytes, str]:
    """The body and its ``Content-Type`` (with the boundary) for ``fields`` and ``files``.

    A field's list value repeats the name, as ``data=`` does for a form.
    """
    boundary = "peregrine-" + secrets.token_hex(12)
    out = bytearray()
    for name, value in (fields or {}).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"'.encode()
            out += b"\r\n\r\n" + str(item).encode() + b"\r\n"
    for name, spec in files.items():
        if isinstance(spec, bytes):
            filename, data, content_type = name, spec, "application/octet-stream"
        elif len(spec) == 2:
            filename, data = spec
            content_type = "application/octet-stream"
        else:
            filename, data, content_type = spec
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"; '
            f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
