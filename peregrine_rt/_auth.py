"""Identities and the two common ways to prove one: a session cookie, a bearer token.

* :class:`Identity` is what an ``authenticate`` hook returns: a name, an
  optional expiry (UNIX time) and the claims it came with.  ``upgrade()``
  makes it ``request.user`` and ``ws.user``; the socket reads its
  ``expires_at`` and closes with code 3000 at that time unless
  ``ws.set_user()`` is given a fresher identity first.
* :class:`Tokens` issues and verifies JSON Web Tokens signed with a shared
  secret (PyJWT, HMAC-SHA256 by default).  ``verify`` answers every bad token
  (bad signature, expired, malformed, wrong issuer or audience) with
  ``HTTPError(401)``; no PyJWT exception escapes.
* :func:`session_auth` and :func:`bearer_auth` build ``authenticate``
  callables (``async def (request) -> Identity | None``) for ``upgrade()``
  or for an HTTP handler (``identity = await auth(request)``).

Where a bearer token travels: browsers cannot set headers on a WebSocket, so
besides ``Authorization: Bearer <token>`` a token is taken from the query
string (``?token=``, which lands in access logs) or from a
``Sec-WebSocket-Protocol`` entry ``bearer.<token>`` (which does not).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import jwt

from ._sessions import Sessions, secret_list
from ._upgrade import offered_subprotocols
from .exceptions import HTTPError

if TYPE_CHECKING:
    from ._request import Request

__all__ = [
    "MAX_TOKEN_SIZE",
    "Authenticate",
    "Identity",
    "Tokens",
    "bearer_auth",
    "session_auth",
]

MAX_TOKEN_SIZE: Final = 8192  # longer tokens are refused unread
# HMAC keys at least as long as the hash output (RFC 7518 §3.2).
_ALGORITHMS: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
_REGISTERED: Final = frozenset(("sub", "iat", "exp", "iss", "aud"))
_CHALLENGE: Final = {"www-authenticate": 'Bearer error="invalid_token"'}

Authenticate = Callable[["Request"], Awaitable["Identity | None"]]
"""An ``authenticate`` hook: ``async def (request) -> Identity | None``."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on the other end of a request or a WebSocket.

    Attributes:
        name: the user's name or id (a token's ``sub``).
        expires_at: when this identity stops being valid, in UNIX time (a
            token's ``exp``), or ``None`` for never.  A WebSocket closes with
            code 3000 ``identity expired`` at that time, unless
            ``ws.set_user()`` was given a fresher identity.
        claims: what else came with it (a token's whole payload), read-only.

    Identities compare equal when all three fields are equal, and hash by
    name and expiry.
    """

    name: str
    expires_at: float | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))


class Tokens:
    """Issue and verify JSON Web Tokens signed with a shared secret (PyJWT).

    ::

        tokens = Tokens(secret)
        token = tokens.issue("ada", ttl=300, role="admin")
        identity = tokens.verify(token)  # Identity("ada", expires_at=..., claims={...})

    Args:
        secret_or_keys: the secret, or several **newest first**: tokens are
            signed with the first, and a token signed with any of them
            verifies (rotate as for :class:`~peregrine_rt.Sessions`).  At
            least as many bytes as the hash gives: 32 for HS256, 48 for
            HS384, 64 for HS512.
        algorithm: ``"HS256"``, ``"HS384"`` or ``"HS512"``.  ``"none"`` and
            the public-key algorithms are refused (verify those with PyJWT in
            an ``authenticate`` of your own).
        issuer: put in ``iss`` when issuing, and required when verifying.
        audience: put in ``aud`` when issuing, and required when verifying.
        leeway: seconds of clock difference allowed when checking ``exp``;
            the identity's ``expires_at`` (the socket's deadline) is ``exp``
            plus ``leeway`` too, so that a token accepted is not cut off at once.

    Raises:
        ValueError: an unknown or unsigned algorithm, no key, a key too short.
    """

    __slots__ = ("_keys", "algorithm", "audience", "issuer", "leeway")

    def __init__(
        self,
        secret_or_keys: str | bytes | Sequence[str | bytes],
        *,
        algorithm: str = "HS256",
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0,
    ) -> None:
        if algorithm not in _ALGORITHMS:
            raise ValueError(
                f"Tokens algorithm {algorithm!r} is not supported: use one of "
                f"{', '.join(_ALGORITHMS)} (never 'none', which signs nothing)"
            )
        if leeway < 0:
            raise ValueError(f"Tokens leeway must not be negative, not {leeway}")
        self._keys = secret_list(secret_or_keys, _ALGORITHMS[algorithm], f"Tokens ({algorithm})")
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def __repr__(self) -> str:
        return f"<Tokens {self.algorithm} issuer={self.issuer!r} audience={self.audience!r}>"

    def issue(self, name: str, *, ttl: float, **claims: Any) -> str:
        """A token for ``name`` (its ``sub``), valid ``ttl`` seconds from now.

        It carries ``sub``, ``iat`` and ``exp`` (whole seconds, ``exp``
        rounded up), ``iss`` and ``aud`` when configured, and ``claims``.

        Raises:
            ValueError: ``ttl`` not positive, an empty name, or a claim that
                would overwrite ``sub``, ``iat``, ``exp``, ``iss`` or ``aud``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("a token's name (sub) must be a non-empty string")
        if not ttl > 0:
            raise ValueError(f"a token's ttl must be positive seconds, not {ttl}")
        taken = _REGISTERED.intersection(claims)
        if taken:
            raise ValueError(f"claims {sorted(taken)} are set by Tokens.issue, not by the caller")
        now = time.time()
        payload: dict[str, Any] = {**claims, "sub": name, "iat": int(now)}
        payload["exp"] = math.ceil(now + ttl)
        if self.issuer is not None:
            payload["iss"] = self.issuer
        if self.audience is not None:
            payload["aud"] = self.audience
        return jwt.encode(payload, self._keys[0], algorithm=self.algorithm)

    def verify(self, token: str | bytes) -> Identity:
        """The identity a token proves: ``Identity(sub, exp + leeway, payload)``.

        Requires a valid signature by one of the keys, ``sub`` and ``exp``,
        ``exp`` in the future (give or take ``leeway``), and ``iss``/``aud``
        matching when configured.

        Raises:
            HTTPError: 401 (with ``WWW-Authenticate: Bearer``) for any token
                that does not pass, whatever is wrong with it; the detail says
                ``token expired`` or ``invalid token``.
        """
        if not token or len(token) > MAX_TOKEN_SIZE:
            raise HTTPError(401, "invalid token", _CHALLENGE)
        for key in self._keys:
            try:
                payload = jwt.decode(
                    token,
                    key,
                    algorithms=[self.algorithm],
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=self.leeway,
                    options={"require": ["exp", "sub"]},
                )
            except jwt.InvalidSignatureError:
                continue  # maybe an older key
            except jwt.ExpiredSignatureError:
                raise HTTPError(401, "token expired", _CHALLENGE) from None
            except (jwt.InvalidTokenError, ValueError, TypeError):
                raise HTTPError(401, "invalid token", _CHALLENGE) from None
            return _identity(payload, self.leeway)
        raise HTTPError(401, "invalid token", _CHALLENGE)


def _identity(payload: dict[str, Any], leeway: float) -> Identity:
    name, exp = payload["sub"], payload["exp"]
    if not isinstance(name, str) or not name or isinstance(exp, bool):
        raise HTTPError(401, "invalid token", _CHALLENGE)
    return Identity(name, float(exp) + leeway, payload)


def session_auth(sessions: Sessions, key: str = "user") -> Authenticate:
    """An ``authenticate`` hook that reads the user's name from a signed session.

    The identity is ``Identity(session[key])`` when the session cookie
    verifies and holds a non-empty string under ``key`` (what the login page
    saved: ``sessions.save(response, {"user": name})``); otherwise ``None``,
    which ``upgrade()`` answers with 401.  Such an identity does not expire
    on the socket: logging out (``sessions.clear``) does not close sockets
    already open; close them yourself if that matters.
    """

    async def authenticate(request: Request) -> Identity | None:
        name = sessions.load(request).get(key)
        if isinstance(name, str) and name:
            return Identity(name)
        return None

    authenticate.__qualname__ = f"session_auth({sessions.cookie!r}, key={key!r})"
    return authenticate


def bearer_auth(
    tokens: Tokens, *, query: str | None = "token", subprotocol_prefix: str | None = "bearer."
) -> Authenticate:
    """An ``authenticate`` hook that verifies a bearer token (see :class:`Tokens`).

    The token is looked for, in this order, in:

    1. the ``Authorization: Bearer <token>`` header (HTTP clients, servers);
    2. a ``Sec-WebSocket-Protocol`` entry ``<subprotocol_prefix><token>``:
       from a browser, ``new WebSocket(url, ["chat", "bearer." + token])``;
       or ``base64url.bearer.phx.<base64url(token)>``, what phoenix.js
       (``authToken``), peregrine.js and :mod:`peregrine_rt.client` send.
       The server must then choose a real subprotocol
       (``upgrade(..., subprotocols=["chat"])``), as browsers fail a
       handshake that offered subprotocols and got none back;
    3. the query parameter ``query`` (``wss://host/ws?token=...``).  Query
       strings end up in access logs and proxy logs: prefer the subprotocol,
       or give such tokens a short ``ttl``.

    ``None`` for ``query`` or ``subprotocol_prefix`` turns that carrier off.
    No token anywhere gives ``None`` (401 from ``upgrade()``); a token that
    does not verify raises ``HTTPError(401)``.
    """

    async def authenticate(request: Request) -> Identity | None:
        token = bearer_token(request, query=query, subprotocol_prefix=subprotocol_prefix)
        return None if token is None else tokens.verify(token)

    authenticate.__qualname__ = f"bearer_auth({tokens!r})"
    return authenticate


PHOENIX_TOKEN_PREFIX: Final = "base64url.bearer.phx."
"""How phoenix.js (``authToken``), peregrine.js and ``peregrine_rt.client`` (``token=``) offer a
token: a ``Sec-WebSocket-Protocol`` entry of this prefix and the token in unpadded base64url."""


def _unbase64url(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def bearer_token(
    request: Request, *, query: str | None = "token", subprotocol_prefix: str | None = "bearer."
) -> str | None:
    """The bearer token a request carries, found as :func:`bearer_auth` describes, or None."""
    headers = request.headers
    scheme, _, credentials = (headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if subprotocol_prefix:
        for entry in offered_subprotocols(headers):
            if entry.startswith(subprotocol_prefix) and len(entry) > len(subprotocol_prefix):
                return entry[len(subprotocol_prefix) :]
            if entry.startswith(PHOENIX_TOKEN_PREFIX):
                token = _unbase64url(entry[len(PHOENIX_TOKEN_PREFIX) :])
                if token:
                    return token
    if query is not None:
        token = request.query.get(query)
        if token:
            return token
    return None
