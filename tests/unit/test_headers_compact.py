"""Headers.compact(): a long-kept request (a WebSocket's) drops its split headers, not values."""

from __future__ import annotations

from peregrine_rt._http import Headers, RequestParser

REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: example\r\nX-Token: a\r\nX-Token: b\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n\r\n"
)


def parsed_headers() -> Headers:
    parser = RequestParser()
    parser.feed(REQUEST)
    head = parser.next_event()
    headers = head.headers  # type: ignore[union-attr]
    assert isinstance(headers, Headers)
    return headers


def test_after_compact_every_lookup_gives_what_it_gave_before() -> None:
    headers = parsed_headers()
    before = (list(headers.raw), headers["x-token"], headers.getlist("x-token"), dict(headers))
    headers.compact()
    after = (list(headers.raw), headers["x-token"], headers.getlist("x-token"), dict(headers))
    assert after == before
    assert headers.get("sec-websocket-protocol") == "chat"


def test_compact_frees_the_split_forms_of_a_block_and_keeps_given_pairs() -> None:
    headers = parsed_headers()
    split = headers.raw
    headers.compact()
    assert headers.raw is not split  # split again from the block
    pairs = [(b"Host", b"x")]
    given = Headers(pairs)
    given.compact()  # nothing to split them from: kept
    assert given.raw is pairs
    assert given["host"] == "x"
