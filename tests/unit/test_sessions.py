"""Signed cookie sessions: what verifies, what silently becomes "no session", the cookie set."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace
from typing import Any, cast

import itsdangerous.timed
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peregrine_rt._http import RequestParser
from peregrine_rt._request import Request
from peregrine_rt._response import Response
from peregrine_rt._sessions import MAX_COOKIE_SIZE, Sessions

NEW = "n" * 24 + "-newest-key"
OLD = "o" * 24 + "-older-key"


def request_with(cookie: str | None = None, *, name: str = "session") -> Request:
    """A parsed request carrying ``Cookie: name=cookie`` (no server needed)."""
    head = b"GET / HTTP/1.1\r\nHost: example.test\r\n"
    if cookie is not None:
        head += f"Cookie: theme=dark; {name}={cookie}\r\n".encode("latin-1")
    parser = RequestParser(head_class=Request)
    parser.feed(head + b"\r\n")
    request = parser.next_event()
    assert isinstance(request, Request)
    return request


def cookie_of(response: Response, name: str = "session") -> tuple[str, dict[str, str]]:
    """The value and the attributes (lower-cased names) of the response's ``Set-Cookie``."""
    headers = response.headers.getlist("set-cookie")
    assert len(headers) == 1, headers
    first, *attributes = headers[0].split("; ")
    cookie_name, _, value = first.partition("=")
    assert cookie_name == name
    parsed = {}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        parsed[key.lower()] = val
    return value, parsed


def saved(sessions: Sessions, data: dict[str, Any]) -> str:
    response = Response()
    sessions.save(response, data)
    return cookie_of(response, sessions.cookie)[0]


def test_a_saved_session_loads_back() -> None:
    sessions = Sessions(NEW)
    value = saved(sessions, {"user": "ada", "n": [1, 2]})
    assert sessions.load(request_with(value)) == {"user": "ada", "n": [1, 2]}


def test_no_cookie_is_an_empty_session() -> None:
    assert Sessions(NEW).load(request_with()) == {}
    assert Sessions(NEW).load(request_with("")) == {}


def test_load_is_cached_on_the_request() -> None:
    sessions = Sessions(NEW)
    request = request_with(saved(sessions, {"user": "ada"}))
    first = sessions.load(request)
    first["cart"] = 3
    assert sessions.load(request) is first
    # Another Sessions object (another cookie name) has its own entry.
    other = Sessions(NEW, cookie="prefs")
    assert other.load(request) == {}


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def tamper(value: str, position: int) -> str:
    """``value`` with the character at ``position`` changed so that its decoded bytes change.

    A base64 character becomes the one whose top sextet bit differs (that bit
    is used even in a segment's last character); a separator dot becomes ``A``.
    """
    char = value[position]
    changed = "A" if char == "." else B64[B64.index(char) ^ 32]
    return value[:position] + changed + value[position + 1 :]


def test_a_tampered_byte_anywhere_means_no_session() -> None:
    sessions = Sessions(NEW)
    value = saved(sessions, {"user": "ada"})
    assert sessions.load(request_with(value)) == {"user": "ada"}
    assert len(value) > 40
    for position in range(len(value)):
        assert sessions.decode(tamper(value, position)) == {}, position
    assert sessions.decode(value + "A") == {}
    assert sessions.decode(value[:-1]) == {}


def test_rotation_old_keys_verify_new_cookies_use_the_newest() -> None:
    old_cookie = saved(Sessions(OLD), {"user": "ada"})
    rotated = Sessions([NEW, OLD])
    assert rotated.load(request_with(old_cookie)) == {"user": "ada"}
    new_cookie = saved(rotated, {"user": "bob"})
    # Signed with NEW (the first): NEW alone verifies it, OLD alone does not.
    assert Sessions(NEW).load(request_with(new_cookie)) == {"user": "bob"}
    assert Sessions(OLD).load(request_with(new_cookie)) == {}
    # Once OLD is dropped, its cookies stop verifying.
    assert Sessions(NEW).load(request_with(old_cookie)) == {}


def test_the_salt_separates_uses_of_one_key() -> None:
    value = saved(Sessions(NEW, salt="app-a"), {"user": "ada"})
    assert Sessions(NEW, salt="app-b").load(request_with(value)) == {}
    assert Sessions(NEW, salt="app-a").load(request_with(value)) == {"user": "ada"}


def test_an_expired_cookie_means_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # itsdangerous reads the time as time.time() in its timed module.
    now = [1_800_000_000.0]
    monkeypatch.setattr(itsdangerous.timed, "time", SimpleNamespace(time=lambda: now[0]))
    sessions = Sessions(NEW, max_age=3600)
    value = saved(sessions, {"user": "ada"})
    now[0] += 3600
    assert sessions.load(request_with(value)) == {"user": "ada"}  # exactly max_age: still valid
    now[0] += 1
    assert sessions.load(request_with(value)) == {}
    # A session without max_age does not grow too old.
    forever = Sessions(NEW, max_age=None)
    assert forever.load(request_with(saved(forever, {"a": 1}))) == {"a": 1}
    now[0] += 10 * 365 * 86400
    assert forever.load(request_with(saved(forever, {"a": 1}))) == {"a": 1}


def test_a_signed_value_that_is_not_a_dict_means_no_session() -> None:
    sessions = Sessions(NEW)
    # Sign a list the way Sessions signs, with its serializer configuration.
    serializer = itsdangerous.URLSafeTimedSerializer([NEW.encode()], salt="peregrine_rt.session")
    value = serializer.dumps(["user", "ada"])
    assert isinstance(serializer.loads(value), list)  # the signature is good
    assert sessions.load(request_with(value)) == {}


def test_an_oversized_cookie_is_ignored_unread(caplog: pytest.LogCaptureFixture) -> None:
    sessions = Sessions(NEW)
    caplog.set_level(logging.DEBUG, logger="peregrine_rt.sessions")
    assert sessions.decode("x" * (MAX_COOKIE_SIZE + 1)) == {}
    assert "bytes long" in caplog.text


def test_a_rejected_cookie_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="peregrine_rt.sessions")
    assert Sessions(NEW).load(request_with("garbage.value")) == {}
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=300))
def test_any_garbage_cookie_gives_an_empty_session_and_never_raises(garbage: str) -> None:
    assert Sessions(NEW).decode(garbage) == {}


@given(
    st.lists(
        st.sampled_from(
            [*"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", "."]
        ),
        max_size=200,
    ).map("".join)
)
def test_any_garbage_in_the_signed_alphabet_gives_an_empty_session(garbage: str) -> None:
    # The alphabet of real cookies: base64url and dots, so that the garbage
    # reaches the payload decoding and the timestamp parsing.
    assert Sessions(NEW).decode(garbage) == {}


def test_save_sets_every_attribute() -> None:
    sessions = Sessions(
        NEW,
        cookie="sid",
        max_age=600,
        path="/app",
        domain="example.test",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    response = Response()
    sessions.save(response, {"user": "ada"})
    value, attributes = cookie_of(response, "sid")
    assert attributes == {
        "max-age": "600",
        "path": "/app",
        "domain": "example.test",
        "secure": "",
        "httponly": "",
        "samesite": "Strict",
    }
    assert sessions.load(request_with(value, name="sid")) == {"user": "ada"}


def test_default_attributes_and_secure_auto() -> None:
    sessions = Sessions(NEW)
    plain = Response()
    sessions.save(plain, {"a": 1})
    _, attributes = cookie_of(plain)
    assert attributes == {
        "max-age": str(14 * 86400),
        "path": "/",
        "httponly": "",
        "samesite": "Lax",
    }
    # "auto": Secure when the response goes out over HTTPS.
    tls = Response(cast("Any", SimpleNamespace(transport=SimpleNamespace(scheme="https"))))
    sessions.save(tls, {"a": 1})
    assert "secure" in cookie_of(tls)[1]
    # secure=False never, samesite="none" always (browsers require it).
    never = Response(cast("Any", SimpleNamespace(transport=SimpleNamespace(scheme="https"))))
    Sessions(NEW, secure=False).save(never, {"a": 1})
    assert "secure" not in cookie_of(never)[1]
    cross = Response()
    Sessions(NEW, samesite="none", secure=False, httponly=False, max_age=None).save(cross, {})
    assert cookie_of(cross)[1] == {"path": "/", "secure": "", "samesite": "None"}


def test_clear_expires_the_cookie_with_the_same_scope() -> None:
    response = Response()
    Sessions(NEW, cookie="sid", path="/app", domain="example.test", secure=True).clear(response)
    value, attributes = cookie_of(response, "sid")
    assert value == ""
    assert attributes["max-age"] == "0"
    assert attributes["path"] == "/app"
    assert attributes["domain"] == "example.test"


def test_a_second_save_or_a_clear_replaces_the_first_in_one_response() -> None:
    sessions = Sessions(NEW)
    response = Response()
    response.set_cookie("theme", "dark")
    response.set_cookie("session_id_other", "x")  # a longer name with the same start
    sessions.save(response, {"user": "ada"})
    sessions.save(response, {"user": "bob"})
    mine = [h for h in response.headers.getlist("set-cookie") if h.startswith("session=")]
    assert len(mine) == 1
    value = mine[0].split(";")[0].partition("=")[2]
    assert sessions.decode(value) == {"user": "bob"}
    sessions.clear(response)
    cookies = response.headers.getlist("set-cookie")
    assert [h.split(";")[0] for h in cookies] == ["theme=dark", "session_id_other=x", "session="]


def test_save_refuses_a_cookie_browsers_would_drop() -> None:
    sessions = Sessions(NEW)

    big = {"blob": os.urandom(3000).hex()}  # random: compression does not help
    response = Response()
    with pytest.raises(
        ValueError, match=r"session cookie 'session' would be \d+ bytes, over the 4096"
    ):
        sessions.save(response, big)
    assert response.headers.getlist("set-cookie") == []
    # Just under the limit is fine.
    sessions.save(response, {"blob": os.urandom(1000).hex()})


def test_save_refuses_what_is_not_a_json_object() -> None:
    with pytest.raises(TypeError, match="a session is a dict, not list"):
        Sessions(NEW).save(Response(), cast("Any", ["a"]))
    with pytest.raises(TypeError):
        Sessions(NEW).save(Response(), {"when": object()})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("", "the secret key is 0 bytes, shorter than 16"),
        ("short", "the secret key is 5 bytes, shorter than 16"),
        ([], "needs at least one secret key"),
        ([NEW, "x" * 15], "secret key #1 is 15 bytes"),
        (b"\x00" * 15, "15 bytes"),
    ],
)
def test_short_or_missing_secrets_are_refused(keys: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sessions(keys)


def test_other_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="str or bytes, not int"):
        Sessions([NEW, cast("Any", 12345678901234567890)])
    with pytest.raises(ValueError, match="samesite"):
        Sessions(NEW, samesite=cast("Any", "Lax "))
    with pytest.raises(ValueError, match="max_age"):
        Sessions(NEW, max_age=0)
    with pytest.raises(ValueError, match="secure"):
        Sessions(NEW, secure=cast("Any", "yes"))
    assert Sessions(b"b" * 16).load(request_with()) == {}  # 16 bytes is enough
