"""Signed cookie sessions: :class:`Sessions`.

The session is a small JSON object kept by the browser in one cookie, signed
(HMAC-SHA1 over the data and a timestamp, by Pallets' ``itsdangerous``) so that
the client can read it but not change it.  Nothing is stored on the server.

* **Keys** are given newest first.  New cookies are signed with the newest
  key; a cookie signed with any of the keys is accepted.  To rotate: put a new
  key in front, keep the old one until the cookies it signed have expired
  (``max_age``), then drop it.
* **A cookie that does not verify means "no session"**: tampered, signed with
  a key no longer listed, older than ``max_age``, garbled, too long, or
  holding something other than a JSON object, :meth:`Sessions.load` returns
  ``{}`` and logs one line at DEBUG on ``peregrine_rt.sessions``.  It never
  raises: a stale cookie must not turn a page into a 500.
* **Size**: browsers keep a cookie only up to 4096 bytes (name and value).
  :meth:`Sessions.save` refuses a bigger one with a ``ValueError``, rather
  than letting the browser drop it silently.  Keep an id in the session and
  the rest on the server.
* **Secrecy**: the data is signed, not encrypted.  Anyone holding the cookie
  can read it (base64 of JSON, compressed when that helps): never put a
  password or a secret in it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from itsdangerous import BadData, URLSafeTimedSerializer

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response

__all__ = ["MAX_COOKIE_SIZE", "MIN_SECRET_LENGTH", "Sessions"]

log = logging.getLogger("peregrine_rt.sessions")

MAX_COOKIE_SIZE: Final = 4096  # bytes of name=value a browser keeps (RFC 6265 §6.1)
MIN_SECRET_LENGTH: Final = 16  # bytes; secrets.token_urlsafe(32) gives 43
DEFAULT_MAX_AGE: Final = 14 * 24 * 3600  # two weeks, in seconds
_SAMESITE = ("lax", "strict", "none")


def secret_list(keys: str | bytes | Sequence[str | bytes], minimum: int, what: str) -> list[bytes]:
    """The keys as a list of bytes, newest first, each checked to be long enough.

    Raises:
        ValueError: no key, or a key shorter than ``minimum`` bytes.
        TypeError: a key that is neither ``str`` nor ``bytes``.
    """
    given = [keys] if isinstance(keys, (str, bytes)) else list(keys)
    if not given:
        raise ValueError(f"{what} needs at least one secret key")
    out: list[bytes] = []
    for position, key in enumerate(given):
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"{what} secret keys are str or bytes, not {type(key).__name__}")
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < minimum:
            name = "the secret key" if len(given) == 1 else f"secret key #{position}"
            raise ValueError(
                f"{what}: {name} is {len(raw)} bytes, shorter than {minimum}; "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        out.append(raw)
    return out


class Sessions:
    """Signed cookie sessions with key rotation.

    ::

        sessions = Sessions(["new-key...", "old-key..."])  # newest first
        data = sessions.load(request)        # {} when there is no valid session
        sessions.save(response, {"user": "ada"})
        sessions.clear(response)             # log out

    Args:
        secret_keys: one key, or several **newest first**.  New cookies are
            signed with the first; a cookie signed with any of them verifies.
            Each must be at least 16 bytes (``secrets.token_urlsafe(32)``).
        cookie: the cookie's name.
        max_age: seconds a cookie stays valid, both as its ``Max-Age`` and as
            the oldest signature :meth:`load` accepts (the browser may keep a
            cookie longer than asked; the signature's timestamp decides).
            ``None``: a browser-session cookie (no ``Max-Age``) whose signature
            never grows too old; only a key rotation ends it.
        path: the cookie's ``Path``.
        domain: the cookie's ``Domain`` (``None``: this host only).
        secure: ``"auto"`` (the default) marks the cookie ``Secure`` when the
            request came over HTTPS, so that development over
            ``http://localhost`` works and production over TLS is protected.
            Behind a proxy that terminates TLS the server sees plain HTTP:
            pass ``True`` there.
        httponly: ``HttpOnly``: page scripts cannot read the cookie.
        samesite: ``"lax"``, ``"strict"`` or ``"none"`` (``"none"`` implies
            ``Secure``, as browsers require).
        salt: separates these signatures from other uses of the same keys;
            two ``Sessions`` with different salts do not accept each other's
            cookies.

    Raises:
        ValueError: no key, a key shorter than 16 bytes, or a bad ``samesite``
            or ``max_age``.
    """

    __slots__ = (
        "_serializer",
        "_state_key",
        "cookie",
        "domain",
        "httponly",
        "max_age",
        "path",
        "samesite",
        "secure",
    )

    def __init__(
        self,
        secret_keys: str | bytes | Sequence[str | bytes],
        *,
        cookie: str = "session",
        max_age: int | None = DEFAULT_MAX_AGE,
        path: str = "/",
        domain: str | None = None,
        secure: bool | Literal["auto"] = "auto",
        httponly: bool = True,
        samesite: Literal["lax", "strict", "none"] = "lax",
        salt: str = "peregrine_rt.session",
    ) -> None:
        keys = secret_list(secret_keys, MIN_SECRET_LENGTH, "Sessions")
        if max_age is not None and max_age <= 0:
            raise ValueError(f"Sessions max_age must be positive seconds or None, not {max_age}")
        if samesite not in _SAMESITE:
            raise ValueError(f"Sessions samesite must be one of {_SAMESITE}, not {samesite!r}")
        if secure not in (True, False, "auto"):
            raise ValueError(f"Sessions secure must be True, False or 'auto', not {secure!r}")
        self.cookie = cookie
        self.max_age = max_age
        self.path = path
        self.domain = domain
        self.secure = secure
        self.httponly = httponly
        self.samesite = samesite
        # itsdangerous wants its key list oldest first (it signs with the last).
        self._serializer = URLSafeTimedSerializer(keys[::-1], salt=salt)
        self._state_key = f"peregrine_rt.sessions.{cookie}.{id(self):x}"

    def __repr__(self) -> str:
        return f"<Sessions cookie={self.cookie!r} max_age={self.max_age}>"

    def load(self, request: Request) -> dict[str, Any]:
        """The request's session data, or ``{}`` if its cookie is missing or does not verify.

        The dict is kept on ``request.state``: later calls for the same
        request return the same object, so a change made to it is seen by
        the rest of the request (save it with :meth:`save` to keep it).
        Never raises for what the client sent.
        """
        state = request.state
        cached: dict[str, Any] | None = state.get(self._state_key)
        if cached is None:
            cached = state[self._state_key] = self.decode(request.cookies.get(self.cookie))
        return cached

    def decode(self, value: str | None) -> dict[str, Any]:
        """The data of one cookie value, or ``{}`` when it does not verify (see :meth:`load`)."""
        if not value:
            return {}
        if len(value) > MAX_COOKIE_SIZE:
            log.debug("session cookie %r ignored: %d bytes long", self.cookie, len(value))
            return {}
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadData as exc:  # bad signature, expired, bad payload
            log.debug("session cookie %r ignored: %s", self.cookie, exc)
            return {}
        if not isinstance(data, dict):
            log.debug("session cookie %r ignored: it holds a %s", self.cookie, type(data).__name__)
            return {}
        return data

    def encode(self, data: dict[str, Any]) -> str:
        """The signed cookie value for ``data`` (a JSON object), signed with the newest key.

        Raises:
            TypeError: ``data`` is not a dict, or holds something JSON cannot encode.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a session is a dict, not {type(data).__name__}")
        value: str = self._serializer.dumps(data)
        return value

    def save(self, response: Response, data: dict[str, Any]) -> None:
        """Set the session cookie to ``data``, with every attribute this object was given.

        It replaces an earlier ``save`` or ``clear`` of this cookie in the
        same response.

        Raises:
            ValueError: the cookie would be over 4096 bytes, more than browsers keep.
            TypeError: ``data`` is not a dict, or holds something JSON cannot encode.
        """
        value = self.encode(data)
        size = len(self.cookie) + 1 + len(value)
        if size > MAX_COOKIE_SIZE:
            raise ValueError(
                f"the session cookie {self.cookie!r} would be {size} bytes, over the "
                f"{MAX_COOKIE_SIZE} browsers keep: store less in the session "
                "(an id, with the rest on the server)"
            )
        self._set(response, value, self.max_age)

    def clear(self, response: Response) -> None:
        """Tell the browser to forget the session cookie (log out)."""
        self._set(response, "", 0)

    def _set(self, response: Response, value: str, max_age: int | None) -> None:
        # A second save (or a clear) in the same response replaces the first.
        prefix = f"{self.cookie}=".encode()
        headers = response.headers
        headers.raw = [
            (name, v)
            for name, v in headers.raw
            if name != b"set-cookie" or not v.startswith(prefix)
        ]
        secure = self.secure
        if secure == "auto":
            conn = response.connection
            secure = conn is not None and conn.transport.scheme == "https"
        response.set_cookie(
            self.cookie,
            value,
            max_age=max_age,
            path=self.path,
            domain=self.domain,
            secure=secure,
            httponly=self.httponly,
            samesite=self.samesite,
        )
