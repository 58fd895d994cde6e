"""What the request parser produces.

A request is a :class:`RequestHead`, then zero or more :class:`Data`, then one
:class:`EndOfMessage`.  ``NEED_DATA`` and ``PAUSED`` are sentinels, as in h11.

:class:`RequestHead` is a plain slotted class rather than a frozen dataclass:
it is built once per request on the hot path, and a frozen dataclass pays an
``object.__setattr__`` call per field (several hundred nanoseconds in all).
Treat it as immutable all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from ._headers import Headers
from ._target import decode_path, parse_query

__all__ = ["NEED_DATA", "PAUSED", "Data", "EndOfMessage", "RequestHead", "Sentinel"]


class Sentinel(Enum):
    """Non-event answers of :meth:`RequestParser.next_event`."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
"""Feed more bytes (or EOF) before the next event can be produced."""
PAUSED: Final = Sentinel.PAUSED
"""The request is complete; call ``start_next_cycle()`` after responding."""


class RequestHead:
    """A parsed request line and header block.

    Attributes:
        method: the method, e.g. ``"GET"`` (case-sensitive, as RFC 9110 says).
        target: the request-target exactly as sent.
        http_version: ``"1.1"`` or ``"1.0"``.
        headers: the header fields (:class:`Headers`, split on first use).
        host: the Host header value, lower-cased (``None`` if absent, only
            possible in HTTP/1.0).
        keep_alive: whether the client allows the connection to be reused.
        content_length: the body length, ``None`` when chunked or absent.
        chunked: whether the body uses chunked transfer coding.
        upgrade: the ``Upgrade`` value when ``Connection: upgrade`` asks for one.
        expect_continue: whether the client waits for ``100 Continue``.

    ``path``, ``raw_path``, ``raw_query`` and ``authority`` are
    computed on first use (the parser has already validated what they read).
    """

    __slots__ = (
        "_authority",
        "_path",
        "_raw_path",
        "_raw_query",
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "http_version",
        "keep_alive",
        "method",
        "target",
        "upgrade",
    )

    method: str
    target: bytes
    http_version: str
    headers: Headers
    host: bytes | None
    keep_alive: bool
    content_length: int | None
    chunked: bool
    upgrade: bytes | None
    expect_continue: bool

    def __init__(
        self,
        method: str,
        target: bytes,
        http_version: str,
        headers: Headers,
        host: bytes | None,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        upgrade: bytes | None,
        expect_continue: bool,
        split: tuple[bytes, bytes, str, bytes | None] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        # (raw_path, raw_query, path, authority), or None for a plain origin-form
        # target without "%" (split on first use; nothing there can fail).
        if split is None:
            self._path: str | None = None
        else:
            self._raw_path, self._raw_query, self._path, self._authority = split

    def _split(self) -> str:
        raw_path, _, raw_query = self.target.partition(b"?")
        self._raw_path = raw_path
        self._raw_query = raw_query
        self._authority = None
        path = self._path = decode_path(raw_path)
        return path

    @property
    def path(self) -> str:
        """The path, percent-decoded and normalised (see ``decode_path``)."""
        path = self._path
        if path is None:
            path = self._split()
        return path

    def strip_prefix(self, prefix: str) -> None:
        """Drop ``prefix`` from :attr:`path` (what a router mounting a handler does).

        ``prefix`` is a decoded path without a trailing slash (``/api``); it
        must match whole segments.  What remains starts with ``/`` (``/``
        for the prefix itself).  ``raw_path`` and ``target`` keep what the
        client sent.

        Raises:
            ValueError: ``path`` does not start with ``prefix`` at a segment boundary.
        """
        path = self.path  # split first: raw_path stays readable
        rest = path[len(prefix) :]
        if not path.startswith(prefix) or rest[:1] not in ("", "/"):
            raise ValueError(f"{path!r} is not under {prefix!r}")
        self._path = rest or "/"

    @property
    def raw_path(self) -> bytes:
        """The path part of the target, still percent-encoded."""
        if self._path is None:
            self._split()
        return self._raw_path

    @property
    def raw_query(self) -> bytes:
        """The query part of the target without the ``?`` (``b""`` if none)."""
        if self._path is None:
            self._split()
        return self._raw_query

    @property
    def authority(self) -> bytes | None:
        """The authority of an absolute-form or authority-form target, else ``None``."""
        if self._path is None:
            self._split()
        return self._authority

    @property
    def has_body(self) -> bool:
        """Whether a body follows the head (chunked, or a non-zero Content-Length)."""
        return self.chunked or bool(self.content_length)

    @property
    def query(self) -> list[tuple[str, str]]:
        """The query string parsed into ``(name, value)`` pairs (computed on each access)."""
        return parse_query(self.raw_query)

    def __repr__(self) -> str:
        return (
            f"RequestHead(method={self.method!r}, target={self.target!r}, "
            f"http_version={self.http_version!r}, headers={self.headers!r})"
        )


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of the request body (never empty)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The end of the request body, with the chunked trailer fields if any."""

    trailers: tuple[tuple[bytes, bytes], ...] = ()


Event = RequestHead | Data | EndOfMessage
