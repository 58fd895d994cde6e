"""CORS: which origins, methods and headers pass, and the headers each answer carries.

The middleware is driven directly here (a Request built by hand, a Response
without a connection); tests/integration/test_middleware.py runs it in a
server and tests/e2e/test_cors_browser.py in Chromium.
"""

from __future__ import annotations

from typing import Any

import pytest

from peregrine_rt._cors import CORS, SAFELISTED_HEADERS
from peregrine_rt._http import Headers
from peregrine_rt._request import Request
from peregrine_rt._response import Response
from peregrine_rt.exceptions import HTTPError

SITE = "https://app.example"


def make_request(method: str = "GET", **headers: str) -> Request:
    """A request as the parser makes it; ``origin=...`` becomes an ``Origin`` header."""
    raw = [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return Request(
        method, b"/api", "1.1", Headers(raw), b"api.example", True, None, False, None, False
    )


class Api:
    """Answers JSON; counts the requests it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handle(self, request: Request, response: Response) -> None:
        self.seen.append(request.method)
        response.json({"ok": True})


class Failing:
    async def handle(self, request: Request, response: Response) -> None:
        response.headers["x-dropped"] = "yes"
        raise HTTPError(405, "no", headers={"Allow": "GET", "Vary": "Accept"})


async def answer(app: CORS, request: Request) -> Response:
    response = Response()
    await app.handle(request, response)
    return response


def cors_headers(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers if k.startswith("access-control-")}


# -- construction ----------------------------------------------------------------------


def test_wildcard_with_credentials_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"browsers refuse .*list the origins"):
        CORS(Api, allow_origins=["*"], allow_credentials=True)


@pytest.mark.parametrize("origin", [f"{SITE}/", f"{SITE}/path", "app.example", "*.example"])
def test_an_origin_browsers_never_send_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin as browsers send it"):
        CORS(Api, allow_origins=[origin])


@pytest.mark.parametrize(
    "name", ["allow_origins", "allow_methods", "allow_headers", "expose_headers"]
)
def test_a_string_where_a_list_belongs_is_refused(name: str) -> None:
    options: dict[str, Any] = {name: "x"}
    with pytest.raises(TypeError, match=f"{name} must be a list"):
        CORS(Api, **options)


def test_negative_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age"):
        CORS(Api, allow_origins=[SITE], max_age=-1)


# -- which origins ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (SITE, True),
        ("HTTPS://APP.EXAMPLE", True),  # the configured list is matched case-insensitively
        ("https://app.example:443", False),  # browsers omit a default port: no match
        ("http://app.example", False),
        ("https://eu.app.example", True),  # the regex
        ("https://eu.app.example.evil", False),  # fullmatch, not search
        ("https://a.b.app.example", False),
        ("null", False),
    ],
)
def test_origin_allowed_by_list_or_full_regex_match(origin: str, allowed: bool) -> None:
    cors = CORS(Api, allow_origins=[SITE], allow_origin_regex=r"https://[a-z]+\.app\.example")
    assert cors.origin_allowed(origin) is allowed


def test_null_origin_only_when_listed() -> None:
    assert CORS(Api, allow_origins=["null"]).origin_allowed("null")
    assert CORS(Api, allow_origins=["*"]).origin_allowed("null")


# -- simple (actual) requests --------------------------------------------------------


async def test_allowed_origin_is_echoed_with_credentials_and_exposed_headers() -> None:
    cors = CORS(Api, allow_origins=[SITE], allow_credentials=True, expose_headers=["X-Total"])
    response = await answer(cors, make_request(origin=SITE))
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Total",
    }
    assert response.headers["vary"] == "Origin"
    assert response.body == b'{"ok":true}'


async def test_disallowed_origin_runs_the_app_but_gets_no_cors_headers() -> None:
    cors = CORS(Api, allow_origins=[SITE])
    response = await answer(cors, make_request("POST", origin="https://evil.example"))
    assert cors.app.seen == ["POST"]  # CORS guards reading, not the server
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "Origin"  # a cache must not serve it to SITE


async def test_wildcard_sends_star_and_no_vary() -> None:
    cors = CORS(Api, allow_origins=["*"])
    response = await answer(cors, make_request(origin="https://anyone.example"))
    assert cors_headers(response) == {"access-control-allow-origin": "*"}
    assert "vary" not in response.headers


async def test_request_without_origin_only_gets_vary() -> None:
    cors = CORS(Api, allow_origins=[SITE])
    response = await answer(cors, make_request())
    assert cors_headers(response) == {}
    assert response.headers["vary"] == "Origin"
    response = await answer(CORS(Api, allow_origins=["*"]), make_request())
    assert "vary" not in response.headers


async def test_vary_of_the_app_is_kept_and_extended() -> None:
    class Negotiating:
        async def handle(self, request: Request, response: Response) -> None:
            response.headers["vary"] = "Accept-Language"  # replaces what CORS set before
            response.text("hola")

    response = await answer(CORS(Negotiating, allow_origins=[SITE]), make_request(origin=SITE))
    assert response.headers["vary"] == "Accept-Language, Origin"
    assert response.headers["access-control-allow-origin"] == SITE


async def test_an_http_error_carries_the_cors_headers_to_the_server() -> None:
    cors = CORS(Failing, allow_origins=[SITE], allow_credentials=True)
    with pytest.raises(HTTPError) as caught:
        await answer(cors, make_request(origin=SITE))
    assert caught.value.status == 405
    assert caught.value.headers == {
        "Allow": "GET",
        "vary": "Accept, Origin",
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
    }


async def test_an_http_error_to_a_disallowed_origin_only_gets_vary() -> None:
    with pytest.raises(HTTPError) as caught:
        await answer(CORS(Failing, allow_origins=[SITE]), make_request(origin="https://x.example"))
    assert caught.value.headers == {"Allow": "GET", "vary": "Accept, Origin"}


# -- preflights ---------------------------------------------------------------------------


def preflight(method: str = "PUT", headers: str | None = None, origin: str = SITE) -> Request:
    extra = {} if headers is None else {"access_control_request_headers": headers}
    return make_request("OPTIONS", origin=origin, access_control_request_method=method, **extra)


async def test_allowed_preflight_is_answered_without_the_app() -> None:
    cors = CORS(
        Api,
        allow_origins=[SITE],
        allow_methods=["GET", "PUT"],
        allow_headers=["X-Token"],
        allow_credentials=True,
        max_age=60,
    )
    response = await answer(cors, preflight("PUT", "x-token, content-type"))
    assert cors.app.seen == []
    assert response.status == 204
    assert response.body == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": SITE,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "x-token, content-type",
        "access-control-max-age": "60",
    }
    assert response.headers["vary"] == "Origin"


@pytest.mark.parametrize(
    ("request_", "refused"),
    [
        (preflight("PUT", origin="https://evil.example"), "origin"),
        (preflight("DELETE"), "method"),
        (preflight("GET", "x-token, x-other"), "headers"),
        (preflight("DELETE", "x-other", origin="https://evil.example"), "origin, method, headers"),
        (preflight(""), "method"),
    ],
)
async def test_refused_preflight_is_400_naming_what_and_without_cors_headers(
    request_: Request, refused: str
) -> None:
    cors = CORS(Api, allow_origins=[SITE], allow_methods=["PUT", "GET"], allow_headers=["x-token"])
    response = await answer(cors, request_)
    assert response.status == 400
    assert response.body == f"Disallowed CORS {refused}\n".encode()
    assert cors_headers(response) == {}
    assert cors.app.seen == []


async def test_safelisted_headers_need_no_listing() -> None:
    cors = CORS(Api, allow_origins=[SITE], allow_methods=["PUT"])
    response = await answer(cors, preflight("PUT", ", ".join(sorted(SAFELISTED_HEADERS))))
    assert response.status == 204


async def test_wildcard_methods_and_headers_echo_what_was_asked() -> None:
    cors = CORS(Api, allow_origins=[SITE], allow_methods=["*"], allow_headers=["*"])
    response = await answer(cors, preflight("PURGE", "X-Anything"))
    assert response.status == 204
    assert response.headers["access-control-allow-methods"] == "PURGE"
    assert response.headers["access-control-allow-headers"] == "x-anything"


async def test_options_without_request_method_is_an_ordinary_request() -> None:
    cors = CORS(Api, allow_origins=[SITE])
    response = await answer(cors, make_request("OPTIONS", origin=SITE))
    assert cors.app.seen == ["OPTIONS"]
    assert response.headers["access-control-allow-origin"] == SITE


async def test_handshake_requests_pass_untouched() -> None:
    cors = CORS(Api, allow_origins=[SITE])
    request = Request(
        "GET",
        b"/ws",
        "1.1",
        Headers([(b"origin", b"https://evil.example")]),
        b"api.example",
        True,
        None,
        False,
        b"websocket",
        False,
    )
    response = await answer(cors, request)
    assert "vary" not in response.headers
    assert cors_headers(response) == {}
