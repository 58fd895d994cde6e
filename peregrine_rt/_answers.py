"""Every response head the server writes is built here, its own answers included.

A handler's response, a streamed response's head, a file's head, and the
server's own answers (400-431 for a bad request, 408 on a timeout, 500 for an
invalid response, 503 at the connection limit) all go through
:class:`ResponseHeads`, so that they carry the same standard headers
(``Server`` when ``Config.server_header`` is set; ``Date`` from the writer).
The 101 of a WebSocket handshake takes :attr:`ResponseHeads.standard` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING

from ._http import encode_fixed_response, encode_response, encode_response_head

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["ResponseHeads", "error_body"]

Fields = Sequence[tuple[bytes, bytes]]

_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")


def error_body(status: int, detail: str = "") -> bytes:
    """The short text body of the server's own answers: status, phrase, and a detail line."""
    text = f"{status} {HTTPStatus(status).phrase}\n"
    if detail:
        text += detail + "\n"
    return text.encode("utf-8", "replace")


class ResponseHeads:
    """Builds response heads with the server's standard headers (one per server).

    Attributes:
        standard: the ``(name, value)`` pairs every response carries besides
            ``Date`` and the framing headers (``Server``, when configured).
        fixed: ``fixed(status, headers, body, method, version, keep_alive)``,
            a whole response with a fixed body, headers already validated
            (the hot path; raises LocalProtocolError for an impossible one,
            such as a body on a 204).
    """

    __slots__ = ("fixed", "standard")

    def __init__(self, config: Config) -> None:
        self.standard: list[tuple[bytes, bytes]] = (
            [(b"server", config.server_header.encode("latin-1"))] if config.server_header else []
        )
        # The hot path: with no standard header to add, the writer itself (one
        # Python call less per request).
        self.fixed: Callable[[int, Fields, bytes, str, str, bool], bytes] = (
            self._fixed if self.standard else encode_fixed_response
        )

    def _with_standard(self, headers: Fields) -> Fields:
        standard = self.standard
        if not standard:
            return headers
        return [*headers, *standard] if headers else standard

    def _fixed(
        self,
        status: int,
        headers: Fields,
        body: bytes,
        method: str,
        version: str,
        keep_alive: bool,
    ) -> bytes:
        """A whole response with a fixed body (headers already validated: the hot path).

        Raises:
            LocalProtocolError: the response is impossible (a body on a 204…).
        """
        return encode_fixed_response(
            status, self._with_standard(headers), body, method, version, keep_alive
        )

    def head(
        self,
        status: int,
        headers: Fields,
        *,
        version: str,
        keep_alive: bool,
        content_length: int | None = None,
        chunked: bool = False,
    ) -> bytes:
        """The head of a streamed or file response (headers already validated)."""
        return encode_response_head(
            status,
            self._with_standard(headers),
            version=version,
            keep_alive=keep_alive,
            content_length=content_length,
            chunked=chunked,
            check=False,
        )

    def error(
        self,
        status: int,
        detail: str = "",
        *,
        method: str = "GET",
        version: str = "1.1",
        keep_alive: bool = False,
        extra: Fields = (),
    ) -> bytes:
        """One of the server's own answers: a short ``text/plain`` body saying what went wrong."""
        return encode_response(
            status,
            self._with_standard([_TEXT_PLAIN, *extra]),
            error_body(status, detail),
            method=method,
            version=version,
            keep_alive=keep_alive,
            check=False,
        )
