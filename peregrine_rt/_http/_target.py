"""The request-target: its four forms, safe path decoding, and the query string.

``decode_path`` is the one place a path is percent-decoded.  It is strict so that
no later consumer (a router, the static file server, a user's ``open()``) can be
tricked by encoding:

* each ``/``-separated segment is decoded on its own, and a segment that would
  decode to contain ``/`` (``%2F``) or NUL (``%00``) is refused, so an encoded
  slash can never become a separator;
* dot segments (``.`` and ``..``, also written ``%2e``) are resolved after
  decoding (RFC 3986 §5.2.4), so the result never climbs above ``/``;
* bytes must decode as UTF-8.

Refusals raise :class:`~peregrine_rt.exceptions.RemoteProtocolError` (400).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote_to_bytes

from ..exceptions import RemoteProtocolError
from ._abnf import absolute_target_re, host_re

__all__ = ["decode_path", "parse_query", "split_target"]


def decode_path(raw: bytes) -> str:
    """Percent-decode an origin-form path safely (see the module docstring)."""
    # find(), not `in`: for bytes, `in` first tries the operand as an int
    # (an exception raised and cleared), twice as slow on every request.
    if raw.find(b"%") < 0 and raw.find(b"/.") < 0:
        return raw.decode("ascii")
    segments: list[str] = []
    for seg in raw.split(b"/")[1:]:
        if b"%" in seg:
            decoded = unquote_to_bytes(seg)
            if b"/" in decoded or b"\x00" in decoded:
                raise RemoteProtocolError("encoded '/' or NUL in the request path")
            try:
                text = decoded.decode("utf-8")
            except UnicodeDecodeError:
                raise RemoteProtocolError("request path is not valid UTF-8") from None
        else:
            text = seg.decode("ascii")
        if text == ".":
            continue
        if text == "..":
            if segments:
                segments.pop()
            continue
        segments.append(text)
    # A trailing dot segment leaves a directory path ("/a/b/.." -> "/a/").
    last = raw.rsplit(b"/", 1)[-1]
    trailing = last in (b".", b"..") or (b"%" in last and unquote_to_bytes(last) in (b".", b".."))
    path = "/" + "/".join(segments)
    if trailing and segments:
        path += "/"
    return path


def split_target(method: str, target: bytes) -> tuple[bytes, bytes, bytes | None]:
    """Split a request-target into ``(raw_path, raw_query, authority)``.

    Accepts the four forms of RFC 9112 §3.2: origin-form (``/p?q``), absolute-form
    (``http://host/p?q``), authority-form (``host:port``, CONNECT only) and
    asterisk-form (``*``, OPTIONS only).  ``authority`` is None for origin-form.
    """
    if method == "CONNECT":
        # RFC 9112 §3.2.3: authority-form = uri-host ":" port; RFC 9110 §9.3.6:
        # an empty or invalid port is refused.
        host, sep, port = target.rpartition(b":")
        if (
            not sep
            or not host
            or not port.isdigit()
            or b"/" in target
            or b"?" in target
            or b"@" in target
            or not host_re.fullmatch(target)
        ):
            raise RemoteProtocolError("CONNECT needs an authority-form target (host:port)")
        return b"", b"", target
    if target[:1] == b"/":
        path, _, query = target.partition(b"?")
        return path, query, None
    if target == b"*":
        if method != "OPTIONS":
            raise RemoteProtocolError("the asterisk-form target is only allowed with OPTIONS")
        return b"*", b"", None
    m = absolute_target_re.fullmatch(target)
    if m is None:
        raise RemoteProtocolError(f"invalid request-target {target[:100]!r}")
    authority = m.group("authority")
    if b"@" in authority:
        # RFC 9110 §4.2.4: userinfo is deprecated and a classic source of confusion.
        raise RemoteProtocolError("userinfo in the request-target is not accepted")
    if not host_re.fullmatch(authority) or not _host_part(authority):
        # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
        raise RemoteProtocolError(f"invalid authority in the request-target {authority[:100]!r}")
    rest = m.group("rest") or b"/"
    if rest[:1] == b"?":
        rest = b"/" + rest
    path, _, query = rest.partition(b"?")
    return path, query, authority


def _host_part(authority: bytes) -> bytes:
    """The host of ``host[:port]`` (IPv6 literals keep their brackets)."""
    if authority.startswith(b"["):
        return authority[: authority.find(b"]") + 1]
    return authority.partition(b":")[0]


def parse_query(raw: bytes) -> list[tuple[str, str]]:
    """Parse a raw query string into ``(name, value)`` pairs, blank values kept.

    ``+`` means space and values are decoded as UTF-8 (invalid bytes replaced),
    as browsers encode forms.
    """
    return parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8")
