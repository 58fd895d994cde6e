"""Identity, Tokens and the two authenticate helpers, without a server."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace
from typing import Any, cast

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import peregrine_rt._auth
from peregrine_rt._auth import Identity, Tokens, bearer_auth, bearer_token, session_auth
from peregrine_rt._http import RequestParser
from peregrine_rt._request import Request
from peregrine_rt._response import Response
from peregrine_rt._sessions import Sessions
from peregrine_rt.exceptions import HTTPError

SECRET = "s" * 32
OLDER = "o" * 32
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_request(target: str = "/ws", **headers: str) -> Request:
    """A parsed request with these headers (``sec_websocket_protocol=`` style names)."""
    lines = [f"GET {target} HTTP/1.1", "Host: example.test"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    parser = RequestParser(head_class=Request)
    parser.feed(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    request = parser.next_event()
    assert isinstance(request, Request)
    return request


def refused(tokens: Tokens, token: str | bytes) -> HTTPError:
    with pytest.raises(HTTPError) as caught:
        tokens.verify(token)
    error = caught.value
    assert error.status == 401
    assert error.headers == {"www-authenticate": 'Bearer error="invalid_token"'}
    return error


def at(monkeypatch: pytest.MonkeyPatch, when: float) -> None:
    """Make Tokens.issue see the time ``when`` (verification keeps PyJWT's real clock)."""
    monkeypatch.setattr(peregrine_rt._auth, "time", SimpleNamespace(time=lambda: when))


# -- Identity ------------------------------------------------------------------


def test_identity_is_frozen_with_read_only_claims() -> None:
    claims = {"role": "admin"}
    who = Identity("ada", 123.0, claims)
    claims["role"] = "changed after the fact"
    assert who.claims == {"role": "admin"}  # a copy
    with pytest.raises(TypeError):
        who.claims["role"] = "x"  # type: ignore[index]  # read-only on purpose
    with pytest.raises(dataclasses.FrozenInstanceError):
        who.name = "bob"  # type: ignore[misc]  # frozen on purpose
    assert Identity("ada") == Identity("ada", None, {})
    assert Identity("ada", claims={"a": 1}) != Identity("ada", claims={"a": 2})
    assert {Identity("ada", claims={"a": 1}), Identity("ada")} == {
        Identity("ada", claims={"a": 1}),
        Identity("ada"),
    }
    assert Identity("ada").expires_at is None


# -- Tokens --------------------------------------------------------------------


def test_issue_then_verify() -> None:
    tokens = Tokens(SECRET)
    before = time.time()
    token = tokens.issue("ada", ttl=300, role="admin")
    who = tokens.verify(token)
    assert who.name == "ada"
    assert who.expires_at is not None
    assert before + 300 <= who.expires_at <= time.time() + 301
    assert who.claims["role"] == "admin"
    assert who.claims["sub"] == "ada"
    assert isinstance(who.claims["iat"], int)
    # What a browser or another service sees: a standard HS256 JWT.
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["exp"] == who.expires_at
    assert tokens.verify(token.encode()) == who  # bytes too


def test_a_tampered_character_anywhere_is_refused() -> None:
    tokens = Tokens(SECRET)
    token = tokens.issue("ada", ttl=300)
    assert tokens.verify(token).name == "ada"
    for position, char in enumerate(token):
        changed = "A" if char == "." else B64[B64.index(char) ^ 32]
        refused(tokens, token[:position] + changed + token[position + 1 :])


def test_rotation_old_keys_verify_new_tokens_use_the_newest() -> None:
    old_token = Tokens(OLDER).issue("ada", ttl=300)
    rotated = Tokens([SECRET, OLDER])
    assert rotated.verify(old_token).name == "ada"
    new_token = rotated.issue("bob", ttl=300)
    assert Tokens(SECRET).verify(new_token).name == "bob"
    refused(Tokens(OLDER), new_token)
    refused(Tokens(SECRET), old_token)  # OLDER dropped: its tokens stop verifying


def test_an_expired_token_is_refused_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = Tokens(SECRET)
    at(monkeypatch, time.time() - 100)
    token = tokens.issue("ada", ttl=90)  # expired ten seconds ago
    assert refused(tokens, token).detail == "token expired"
    # Leeway forgives a small clock difference, and moves the deadline with it.
    forgiving = Tokens(SECRET, leeway=30).verify(token)
    assert forgiving.name == "ada"
    assert forgiving.expires_at == forgiving.claims["exp"] + 30
    refused(Tokens(SECRET, leeway=5), token)
    # A tampered expired token is "invalid", not "expired": the signature comes first.
    assert refused(tokens, token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")).detail == (
        "invalid token"
    )


def test_issuer_and_audience_must_match() -> None:
    strict = Tokens(SECRET, issuer="auth.example", audience="chat")
    token = strict.issue("ada", ttl=60)
    assert strict.verify(token).claims["aud"] == "chat"
    refused(Tokens(SECRET, issuer="other", audience="chat"), token)
    refused(Tokens(SECRET, issuer="auth.example", audience="billing"), token)
    refused(Tokens(SECRET), token)  # an audience nobody expects is refused too
    refused(strict, Tokens(SECRET).issue("ada", ttl=60))  # no iss, no aud


def forged(payload: dict[str, Any], key: str | None = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)  # type: ignore[arg-type]  # None for "none"


def test_unsigned_other_algorithm_and_incomplete_tokens_are_refused() -> None:
    tokens = Tokens(SECRET)
    exp = int(time.time()) + 60
    assert tokens.verify(forged({"sub": "ada", "exp": exp})).name == "ada"  # the control
    refused(tokens, forged({"sub": "ada", "exp": exp}, None, "none"))
    refused(tokens, forged({"sub": "ada", "exp": exp}, SECRET * 2, "HS512"))
    refused(tokens, forged({"sub": "ada"}))  # no exp: would never expire
    refused(tokens, forged({"exp": exp}))  # no sub
    refused(tokens, forged({"sub": 42, "exp": exp}))
    refused(tokens, forged({"sub": "", "exp": exp}))
    refused(tokens, forged({"sub": "ada", "exp": "tomorrow"}))
    refused(tokens, forged({"sub": "ada", "exp": True}))
    refused(tokens, forged({"sub": "ada", "exp": exp, "nbf": exp}))  # not valid yet
    refused(tokens, "")
    refused(tokens, "a.b.c")
    refused(tokens, forged({"sub": "ada", "exp": exp, "pad": "x" * 9000}))


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_any_garbage_token_is_a_401_never_a_library_error(garbage: str | bytes) -> None:
    refused(Tokens(SECRET), garbage)


@given(st.lists(st.sampled_from([*B64, "."]), max_size=200).map("".join))
def test_any_garbage_in_the_token_alphabet_is_a_401(garbage: str) -> None:
    refused(Tokens(SECRET), garbage)


def test_issue_refuses_bad_arguments() -> None:
    tokens = Tokens(SECRET)
    with pytest.raises(ValueError, match="ttl must be positive"):
        tokens.issue("ada", ttl=0)
    with pytest.raises(ValueError, match="non-empty string"):
        tokens.issue("", ttl=10)
    with pytest.raises(ValueError, match=r"claims \['exp', 'sub'\] are set by Tokens.issue"):
        tokens.issue("ada", ttl=10, sub="bob", exp=1)


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((SECRET,), {"algorithm": "none"}, "'none' is not supported"),
        ((SECRET,), {"algorithm": "RS256"}, "'RS256' is not supported"),
        (("x" * 31,), {}, "the secret key is 31 bytes, shorter than 32"),
        ((SECRET,), {"algorithm": "HS512"}, "shorter than 64"),
        (([],), {}, "at least one secret key"),
        ((SECRET,), {"leeway": -1}, "leeway"),
    ],
)
def test_tokens_refuse_weak_settings(
    args: tuple[Any, ...], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Tokens(*args, **options)


def test_hs384_and_hs512_work_with_long_enough_keys() -> None:
    for algorithm, size in (("HS384", 48), ("HS512", 64)):
        tokens = Tokens("k" * size, algorithm=algorithm)
        token = tokens.issue("ada", ttl=5)
        assert jwt.get_unverified_header(token)["alg"] == algorithm
        assert tokens.verify(token).name == "ada"
        refused(Tokens("k" * 64, algorithm="HS512" if algorithm == "HS384" else "HS384"), token)


# -- where the bearer token is found -----------------------------------------------


def test_bearer_token_carriers_and_their_order() -> None:
    assert bearer_token(make_request(authorization="Bearer abc")) == "abc"
    assert bearer_token(make_request(authorization="bearer   abc ")) == "abc"
    assert bearer_token(make_request(authorization="Basic abc")) is None
    assert bearer_token(make_request(authorization="Bearer ")) is None
    assert bearer_token(make_request(sec_websocket_protocol="chat, bearer.t1")) == "t1"
    assert bearer_token(make_request(sec_websocket_protocol="chat, bearer.")) is None
    assert bearer_token(make_request("/ws?token=q1")) == "q1"
    assert bearer_token(make_request("/ws?token=")) is None
    assert bearer_token(make_request("/ws")) is None
    everything = make_request(
        "/ws?token=q", authorization="Bearer h", sec_websocket_protocol="chat, bearer.p"
    )
    assert bearer_token(everything) == "h"
    both = make_request("/ws?token=q", sec_websocket_protocol="bearer.p")
    assert bearer_token(both) == "p"
    # Carriers turned off, or renamed.
    assert bearer_token(both, subprotocol_prefix=None) == "q"
    assert bearer_token(both, subprotocol_prefix=None, query=None) is None
    assert bearer_token(make_request("/ws?jwt=z"), query="jwt") == "z"
    assert (
        bearer_token(make_request(sec_websocket_protocol="auth~x"), subprotocol_prefix="auth~")
        == "x"
    )


async def test_bearer_auth_admits_refuses_and_returns_none() -> None:
    tokens = Tokens(SECRET)
    auth = bearer_auth(tokens)
    token = tokens.issue("ada", ttl=60)
    who = await auth(make_request(sec_websocket_protocol=f"chat, bearer.{token}"))
    assert who is not None
    assert who.name == "ada"
    assert (await auth(make_request(f"/ws?token={token}"))) == who
    assert (await auth(make_request(authorization=f"Bearer {token}"))) == who
    assert await auth(make_request()) is None
    with pytest.raises(HTTPError) as caught:
        await auth(make_request(f"/ws?token={token[:-2]}xx"))
    assert caught.value.status == 401
    off = bearer_auth(tokens, query=None)
    assert await off(make_request(f"/ws?token={token}")) is None
    assert "bearer_auth" in auth.__qualname__


async def test_session_auth_reads_the_name_from_the_session() -> None:
    sessions = Sessions("k" * 16)
    response = Response()
    sessions.save(response, {"user": "ada", "uid": 7})
    value = response.headers["set-cookie"].split(";")[0].partition("=")[2]
    auth = session_auth(sessions)
    assert await auth(make_request(cookie=f"session={value}")) == Identity("ada")
    assert await session_auth(sessions, key="uid")(make_request(cookie=f"session={value}")) is None
    assert await auth(make_request()) is None
    # The first character: all 6 of its bits are data.  (The last one of a
    # base64 signature may carry unused bits, so changing it may change nothing.)
    tampered = ("A" if value[0] != "A" else "B") + value[1:]
    assert await auth(make_request(cookie=f"session={tampered}")) is None
    empty = Response()
    sessions.save(empty, {"user": ""})
    empty_value = empty.headers["set-cookie"].split(";")[0].partition("=")[2]
    assert await auth(make_request(cookie=f"session={empty_value}")) is None
    assert "session_auth" in auth.__qualname__


def test_identity_equality_survives_the_claims_proxy() -> None:
    who = Identity("ada", claims={"a": [1]})
    assert cast("Any", who.claims) == {"a": [1]}
    assert repr(who).startswith("Identity(name='ada', expires_at=None, claims=")


def test_the_phoenix_clients_token_subprotocol() -> None:
    """phoenix.js's authToken, peregrine.js and peregrine_rt.client: base64url.bearer.phx.<b64>."""
    import base64

    token = Tokens(SECRET).issue("ada", ttl=60)
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    offered = f"phoenix, base64url.bearer.phx.{encoded}"
    assert bearer_token(make_request(sec_websocket_protocol=offered)) == token
    broken = "phoenix, base64url.bearer.phx.%%%"
    assert bearer_token(make_request(sec_websocket_protocol=broken)) is None
    assert (
        bearer_token(make_request(sec_websocket_protocol=offered), subprotocol_prefix=None) is None
    )
