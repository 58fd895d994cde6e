"""Request-target helpers: path decoding, the four target forms, the query string."""

from __future__ import annotations

import pytest

from peregrine_rt._http import decode_path, parse_query, split_target
from peregrine_rt.exceptions import RemoteProtocolError

# -- decode_path ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/", "/"),
        (b"/a/b", "/a/b"),
        (b"/a/b/", "/a/b/"),
        (b"/a//b", "/a//b"),  # empty segments are kept
        (b"/a%20b", "/a b"),
        (b"/%41%42c", "/ABc"),
        (b"/caf%C3%A9", "/caf\u00e9"),
        (b"/caf%c3%a9", "/caf\u00e9"),
        (b"/%F0%9F%A6%85", "/\U0001f985"),
        (b"/a%3Fb%23c", "/a?b#c"),  # encoded delimiters are data
        (b"/100%25", "/100%"),
        # RFC 3986 §5.2.4 remove_dot_segments
        (b"/a/./b", "/a/b"),
        (b"/a/../b", "/b"),
        (b"/a/b/c/./../../g", "/a/g"),
        (b"/a/b/../../c", "/c"),
        # ... also when the dots are percent-encoded (decoded first)
        (b"/a/%2e/b", "/a/b"),
        (b"/a/%2e%2e/b", "/b"),
        (b"/a/%2E%2E/b", "/b"),
        (b"/a/.%2e/b", "/b"),
        (b"/a/%2e./b", "/b"),
        # trailing dot segments leave a directory path
        (b"/a/b/..", "/a/"),
        (b"/a/b/.", "/a/b/"),
        (b"/a/b/%2e%2e", "/a/"),
        (b"/a/b/%2e", "/a/b/"),
        (b"/a/b/../", "/a/"),
        (b"/a/..", "/"),
        (b"/.", "/"),
        # never above the root
        (b"/..", "/"),
        (b"/../../etc/passwd", "/etc/passwd"),
        (b"/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"),
        (b"/a/../../../b", "/b"),
        # dots that are not dot segments
        (b"/...", "/..."),
        (b"/a/.hidden", "/a/.hidden"),
        (b"/a/..b", "/a/..b"),
        (b"/a/%2e%2e%2e", "/a/..."),
        (b"/a./b", "/a./b"),
    ],
)
def test_decode_path(raw: bytes, path: str) -> None:
    assert decode_path(raw) == path


@pytest.mark.parametrize(
    "raw",
    [
        b"/a%2Fb",
        b"/a%2fb",
        b"/..%2f..%2fetc%2fpasswd",
        b"/%2e%2e%2f",
        b"/a%00",
        b"/%00/b",
        b"/%ff",  # not UTF-8
        b"/caf%e9",  # latin-1, not UTF-8
        b"/%C3",  # truncated sequence
        b"/%c0%af",  # overlong encoding of "/"
        b"/%ed%a0%80",  # a surrogate
    ],
)
def test_decode_path_refuses(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_path(raw)
    assert info.value.status_hint == 400


# -- split_target ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        # origin-form
        ("GET", b"/", (b"/", b"", None)),
        ("GET", b"/p", (b"/p", b"", None)),
        ("GET", b"/p?q=1", (b"/p", b"q=1", None)),
        ("GET", b"/p?", (b"/p", b"", None)),
        ("GET", b"/p?a?b=/c", (b"/p", b"a?b=/c", None)),  # RFC 3986 §3.4: "?" and "/" in a query
        ("POST", b"/a%2Fb?x", (b"/a%2Fb", b"x", None)),  # still encoded: decoding is separate
        # absolute-form
        ("GET", b"http://example.com/p?q", (b"/p", b"q", b"example.com")),
        ("GET", b"http://example.com", (b"/", b"", b"example.com")),
        ("GET", b"http://example.com?q=1", (b"/", b"q=1", b"example.com")),
        ("GET", b"https://example.com:8443/a/b", (b"/a/b", b"", b"example.com:8443")),
        ("GET", b"http://[::1]:8080/x", (b"/x", b"", b"[::1]:8080")),
        ("GET", b"http://127.0.0.1/", (b"/", b"", b"127.0.0.1")),
        ("OPTIONS", b"http://example.com", (b"/", b"", b"example.com")),
        # asterisk-form
        ("OPTIONS", b"*", (b"*", b"", None)),
        # authority-form
        ("CONNECT", b"example.com:443", (b"", b"", b"example.com:443")),
        ("CONNECT", b"[::1]:8443", (b"", b"", b"[::1]:8443")),
    ],
)
def test_split_target(
    method: str, target: bytes, expected: tuple[bytes, bytes, bytes | None]
) -> None:
    assert split_target(method, target) == expected


@pytest.mark.parametrize(
    ("method", "target"),
    [
        # RFC 9112 §3.2.4: asterisk-form is only for OPTIONS
        ("GET", b"*"),
        ("POST", b"*"),
        # not one of the four forms
        ("GET", b"foo"),
        ("GET", b"foo/bar"),
        ("GET", b"?q"),
        ("GET", b"http:/example.com/"),
        # RFC 9110 §4.2.4: userinfo is deprecated; refused
        ("GET", b"http://user@example.com/"),
        ("GET", b"http://user:pw@example.com/"),
        # a bad authority
        ("GET", b"http://exa mple.com/"),
        ("GET", b"http://exa<mple.com/"),
        ("GET", b"http://example.com:80a/"),
        ("GET", b"http://[::1/"),
        # RFC 9110 §4.2.1: an "http" URI with an empty host MUST be rejected
        ("GET", b"http:///etc/passwd"),
        ("GET", b"http://:80/"),
        # authority-form is only host:port (RFC 9112 §3.2.3) ...
        ("CONNECT", b"example.com:443/"),
        ("CONNECT", b"example.com:443?x"),
        ("CONNECT", b"user@example.com:443"),
        ("CONNECT", b"http://example.com:443"),
        # ... with a port (RFC 9110 §9.3.6: "A server MUST reject a CONNECT
        # request that targets an empty or invalid port number")
        ("CONNECT", b"example.com"),
        ("CONNECT", b"example.com:"),
        ("CONNECT", b"/"),
    ],
)
def test_split_target_refuses(method: str, target: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        split_target(method, target)
    assert info.value.status_hint == 400


# -- parse_query --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        (b"", []),
        (b"a=1", [("a", "1")]),
        (b"a=1&b=2", [("a", "1"), ("b", "2")]),
        (b"a=1&a=2", [("a", "1"), ("a", "2")]),  # repeats kept, in order
        (b"b=2&a=1", [("b", "2"), ("a", "1")]),
        (b"a=&b", [("a", ""), ("b", "")]),  # blank values kept
        (b"=x", [("", "x")]),
        (b"a=1&&b=2", [("a", "1"), ("b", "2")]),  # empty pieces dropped
        (b"q=a+b", [("q", "a b")]),  # "+" is a space (form encoding)
        (b"q=a%2Bb", [("q", "a+b")]),
        (b"a%3Db=c%26d", [("a=b", "c&d")]),
        (b"d=1=2", [("d", "1=2")]),
        (b"q=caf%C3%A9", [("q", "caf\u00e9")]),
        (b"q=%ff", [("q", "\ufffd")]),  # invalid UTF-8 replaced, never raises
        (b"a=1;b=2", [("a", "1;b=2")]),  # only "&" separates
    ],
)
def test_parse_query(raw: bytes, pairs: list[tuple[str, str]]) -> None:
    assert parse_query(raw) == pairs
