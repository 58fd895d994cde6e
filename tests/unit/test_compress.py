"""Compress: negotiation, what is compressed and what is not, and the bodies decoding back.

Driven directly (a Request built by hand, a Response without a connection);
tests/integration/test_middleware.py runs it in a server.
"""

from __future__ import annotations

import gzip
import os

import brotli  # type: ignore[import-untyped]  # brotli ships no type stubs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import peregrine_rt._compress as compress_module
from peregrine_rt._compress import DEFAULT_CONTENT_TYPES, OFFLOAD_SIZE, Compress, compressible
from peregrine_rt._http import Headers
from peregrine_rt._request import Request
from peregrine_rt._response import Response

TEXT = ("peregrine falcons dive at 300 km/h; " * 40).encode()  # 1440 bytes, compressible


def make_request(method: str = "GET", **headers: str) -> Request:
    raw = [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return Request(method, b"/", "1.1", Headers(raw), b"x.example", True, None, False, None, False)


class Fixed:
    """Answers ``body`` with ``content_type``, ``status`` and ``headers``."""

    def __init__(
        self,
        body: bytes = TEXT,
        content_type: str = "text/plain; charset=utf-8",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.status = status
        self.headers = headers or {}

    async def handle(self, request: Request, response: Response) -> None:
        response.status = self.status
        response.headers["content-type"] = self.content_type
        for name, value in self.headers.items():
            response.headers[name] = value
        response.body = self.body


async def answer(app: Compress, request: Request) -> Response:
    response = Response()
    await app.handle(request, response)
    return response


def decode(response: Response) -> bytes:
    coding = response.headers.get("content-encoding")
    if coding == "gzip":
        return gzip.decompress(response.body)
    if coding == "br":
        return bytes(brotli.decompress(response.body))
    assert coding is None, coding
    return response.body


# -- negotiation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip, deflate, br, zstd", "br"),  # Chromium over HTTPS
        ("gzip, deflate", "gzip"),  # Chromium over plain HTTP
        ("br;q=0.5, gzip", "gzip"),  # the higher q wins
        ("br;q=0.8, gzip;q=0.8", "br"),  # a tie goes to brotli
        ("GZIP", "gzip"),  # codings are case-insensitive
        ("x-gzip", "gzip"),  # the old name (RFC 9110 §8.4.1.3)
        ("*", "br"),
        ("*;q=0.5, br;q=0", "gzip"),  # * stands for the codings not named
        ("gzip;q=0, br;q=0", None),  # q=0 refuses
        ("*;q=0", None),
        ("identity", None),
        ("deflate, zstd", None),  # nothing we speak
        ("", None),
        ("gzip;q=nonsense", None),  # an unreadable q is 0
    ],
)
async def test_coding_follows_accept_encoding(accept: str, coding: str | None) -> None:
    response = await answer(Compress(Fixed), make_request(accept_encoding=accept))
    assert response.headers.get("content-encoding") == coding
    assert decode(response) == TEXT
    assert response.headers["vary"] == "Accept-Encoding"  # in every case: it could have been


async def test_no_accept_encoding_gets_identity_and_vary() -> None:
    response = await answer(Compress(Fixed), make_request())
    assert "content-encoding" not in response.headers
    assert response.body == TEXT
    assert response.headers["vary"] == "Accept-Encoding"


async def test_without_brotli_only_gzip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compress_module, "brotli", None)
    app = Compress(Fixed)
    assert app.encodings == {b"gzip"}
    response = await answer(app, make_request(accept_encoding="br, gzip;q=0.1"))
    assert response.headers["content-encoding"] == "gzip"
    response = await answer(app, make_request(accept_encoding="br"))
    assert "content-encoding" not in response.headers


# -- what is compressed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/html; charset=utf-8", True),
        ("TEXT/CSS", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("application/atom+xml", True),
        ("application/javascript", True),
        ("image/svg+xml", True),
        ("image/png", False),
        ("application/octet-stream", False),  # not listed
        ("application/jsonx", False),
        ("text/event-stream", False),  # never, even though text/* is listed
        ("", False),
        (None, False),
    ],
)
def test_compressible_by_default(content_type: str | None, expected: bool) -> None:
    assert compressible(content_type, DEFAULT_CONTENT_TYPES) is expected


@pytest.mark.parametrize(
    "content_type", ["image/png", "video/mp4", "application/zip", "font/woff2"]
)
def test_already_compressed_types_never_even_if_listed(content_type: str) -> None:
    assert not compressible(content_type, ["image/*", "video/*", "application/*", "font/*"])


def test_listed_types_replace_the_defaults() -> None:
    assert compressible("application/octet-stream", ["application/octet-stream"])
    assert not compressible("text/html", ["application/json"])


async def test_threshold_is_inclusive() -> None:
    body = b"a" * 500
    at = await answer(Compress(Fixed(body)), make_request(accept_encoding="gzip"))
    below = await answer(Compress(Fixed(body[:-1])), make_request(accept_encoding="gzip"))
    assert at.headers.get("content-encoding") == "gzip"
    assert "content-encoding" not in below.headers
    assert "vary" not in below.headers  # too small whatever the client accepts
    small = Compress(Fixed(b"a" * 100), minimum_size=100)
    custom = await answer(small, make_request(accept_encoding="gzip"))
    assert custom.headers.get("content-encoding") == "gzip"


async def test_incompressible_body_is_sent_as_it_is() -> None:
    noise = os.urandom(4000)
    response = await answer(Compress(Fixed(noise)), make_request(accept_encoding="gzip"))
    assert "content-encoding" not in response.headers
    assert response.body == noise
    assert response.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("app", "request_headers"),
    [
        (Fixed(headers={"content-encoding": "gzip"}), {}),  # the app encoded it itself
        (Fixed(status=206, headers={"content-range": "bytes 0-1439/5000"}), {}),
        (Fixed(headers={"content-range": "bytes */5000"}), {}),
        (Fixed(), {"range": "bytes=0-99"}),  # a range request: byte positions stay the app's
        (Fixed(status=204), {}),
        (Fixed(status=304), {}),
        (Fixed(content_type="image/png"), {}),
        (Fixed(headers={"cache-control": "public, no-transform"}), {}),
    ],
)
async def test_left_alone(app: Fixed, request_headers: dict[str, str]) -> None:
    request = make_request(accept_encoding="gzip, br", **request_headers)
    response = await answer(Compress(app), request)
    assert response.body == app.body
    assert response.headers.get("content-encoding") == app.headers.get("content-encoding")


async def test_error_pages_are_compressed_too() -> None:
    app = Fixed(content_type="text/html", status=404)
    response = await answer(Compress(app), make_request(accept_encoding="gzip"))
    assert response.status == 404
    assert response.headers["content-encoding"] == "gzip"


# -- headers ------------------------------------------------------------------------------------


async def test_vary_is_appended_to_the_apps() -> None:
    app = Fixed(headers={"vary": "Origin, accept-language"})
    response = await answer(Compress(app), make_request(accept_encoding="gzip"))
    assert response.headers.getlist("vary") == ["Origin, accept-language, Accept-Encoding"]
    app = Fixed(headers={"vary": "accept-encoding"})
    response = await answer(Compress(app), make_request(accept_encoding="gzip"))
    assert response.headers.getlist("vary") == ["accept-encoding"]
    app = Fixed(headers={"vary": "*"})
    response = await answer(Compress(app), make_request(accept_encoding="gzip"))
    assert response.headers.getlist("vary") == ["*"]


@pytest.mark.parametrize(
    ("etag", "accept", "expected"),
    [
        ('"v1"', "gzip", 'W/"v1"'),  # strong ETags name exact bytes: no longer these
        ('W/"v1"', "gzip", 'W/"v1"'),
        ('"v1"', "identity", '"v1"'),  # not compressed: unchanged
    ],
)
async def test_etag_becomes_weak_when_compressed(etag: str, accept: str, expected: str) -> None:
    response = await answer(
        Compress(Fixed(headers={"etag": etag})), make_request(accept_encoding=accept)
    )
    assert response.headers["etag"] == expected


async def test_head_gets_the_headers_of_get() -> None:
    app = Compress(Fixed(headers={"etag": '"v1"'}))
    get = await answer(app, make_request("GET", accept_encoding="gzip"))
    head = await answer(app, make_request("HEAD", accept_encoding="gzip"))
    assert list(head.headers) == list(get.headers)
    assert len(head.body) == len(get.body)  # the server's Content-Length, for HEAD too


async def test_levels_are_checked() -> None:
    with pytest.raises(ValueError, match="gzip_level"):
        Compress(Fixed, gzip_level=10)
    with pytest.raises(ValueError, match="brotli_quality"):
        Compress(Fixed, brotli_quality=12)
    with pytest.raises(TypeError, match="content_types"):
        Compress(Fixed, content_types="text/html")


async def test_settings_change_the_bytes() -> None:
    body = b"".join(b"line %d of a log that repeats itself somewhat\n" % i for i in range(2000))
    fast = await answer(Compress(Fixed(body), gzip_level=1), make_request(accept_encoding="gzip"))
    best = await answer(Compress(Fixed(body), gzip_level=9), make_request(accept_encoding="gzip"))
    assert len(best.body) < len(fast.body) < len(body)
    assert decode(fast) == decode(best) == body


async def test_large_body_is_compressed_off_the_event_loop() -> None:
    body = b"".join(b"%08d, " % i for i in range(OFFLOAD_SIZE // 10 + 10))
    assert len(body) >= OFFLOAD_SIZE
    response = await answer(Compress(Fixed(body)), make_request(accept_encoding="br"))
    assert response.headers["content-encoding"] == "br"
    assert decode(response) == body


# -- round trips ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    body=st.one_of(
        st.binary(min_size=0, max_size=3000),
        st.text(alphabet='ab {}":,\n', min_size=0, max_size=5000).map(str.encode),
    ),
    accept=st.sampled_from(["gzip", "br", "br, gzip", "identity", "gzip;q=0.2, br;q=0.1"]),
    minimum_size=st.integers(min_value=0, max_value=600),
)
async def test_any_body_round_trips(body: bytes, accept: str, minimum_size: int) -> None:
    app = Compress(Fixed(body, "application/json"), minimum_size=minimum_size)
    response = await answer(app, make_request(accept_encoding=accept))
    assert decode(response) == body
    if "content-encoding" in response.headers:
        assert len(response.body) < len(body)  # never sent bigger than it was
