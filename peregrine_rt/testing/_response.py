"""The test client's side of one HTTP/1.1 exchange: h11 on a stream, and the response.

:class:`ClientResponse` is what ``client.get()`` and the like return; the
``H11Connection`` that reads it lives here too, since a streamed response
keeps reading from it.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import math
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from http import HTTPStatus
from typing import Any, Generic, TypeVar

import h11
import trio

from .._http import Headers
from ..exceptions import HandshakeError
from ._websocket import (
    UNSET,
    ReceiveTimeout,
    Timeout,
    UnexpectedEvent,
    describe_bytes,
    resolve_timeout,
)

__all__ = ["ClientResponse", "H11Connection", "WebSocketRejected", "make_response"]

T = TypeVar("T")

_RECEIVE_SIZE = 65536
_KEPT = 4096  # bytes of a response kept to quote in failures


class ClientResponse:
    """A response as the test client received it.

    Attributes:
        status: the status code.
        reason: the reason phrase.
        http_version: ``"1.1"`` or ``"1.0"``.
        headers: a :class:`~peregrine_rt.Headers` (case-insensitive,
            ``getlist()`` for repeated fields, ``raw`` for the exact bytes).
        method, target: the request it answers.
        chunks: the body as it arrived: one item per chunk of a chunked body
            (one per ``send()`` of a streamed response), else per read.

    A response from ``client.get()`` and the like has its whole body; one
    from ``client.stream()`` has its head only: read the body with
    :meth:`aiter_bytes`, :meth:`aiter_lines`, :meth:`next_chunk` or :meth:`aread`.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        http_version: str,
        headers: Headers,
        *,
        method: str,
        target: str,
    ) -> None:
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.method = method
        self.target = target
        self.chunks: list[bytes] = []
        self._content: bytes | None = None
        self._conn: H11Connection | None = None
        self._partial: list[bytes] = []
        self._timeout: float | None = None

    def __repr__(self) -> str:
        return f"<ClientResponse {self.status} {self.reason} to {self.method} {self.target}>"

    @property
    def content(self) -> bytes:
        """The whole body (of a streamed response, once read to its end)."""
        if self._content is None:
            raise RuntimeError(
                "the body of this streamed response is not read yet: await response.aread()"
            )
        return self._content

    @property
    def charset(self) -> str:
        """The ``charset`` of the ``Content-Type``, or ``utf-8``."""
        content_type = self.headers.get("content-type") or ""
        match = re.search(r";\s*charset=\"?([\w.:-]+)", content_type, re.I)
        return match.group(1) if match else "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with :attr:`charset`."""
        return self.content.decode(self.charset, "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.content)

    @property
    def is_complete(self) -> bool:
        """Whether the whole body has been read."""
        return self._content is not None

    # -- streamed bodies ---------------------------------------------------------

    async def next_chunk(self, *, timeout: Timeout = UNSET) -> bytes | None:
        """The next chunk of the body as the server sent it, or ``None`` at its end.

        With chunked transfer coding (every streamed response to HTTP/1.1)
        one chunk is what one ``await send(piece)`` in the handler wrote.

        Raises:
            ReceiveTimeout: no whole chunk arrived within ``timeout`` seconds.
        """
        if self._content is not None:
            return None
        limit = resolve_timeout(timeout, self._timeout)
        with trio.move_on_after(math.inf if limit is None else limit):
            return await self._read_chunk()
        assert limit is not None
        received = "nothing"
        if self._partial:
            received = f"part of a chunk ({sum(map(len, self._partial))} bytes so far)"
        raise ReceiveTimeout(f"the next chunk of the response to {self._what}", received, limit)

    def aiter_bytes(self, *, timeout: Timeout = UNSET) -> AsyncIterator[bytes]:
        """Iterate over the rest of the body chunk by chunk (``timeout`` applies to each).

        Like the other ``aiter_*`` methods it returns a plain iterator, not an
        async generator: breaking out of ``async for`` needs no cleanup.
        """
        return _BodyIterator(self, timeout, lambda chunk: [] if chunk is None else [chunk])

    def aiter_text(self, *, timeout: Timeout = UNSET) -> AsyncIterator[str]:
        """Iterate over the rest of the body as text, decoded with :attr:`charset`."""
        decoder = codecs.getincrementaldecoder(self.charset)("replace")

        def decode(chunk: bytes | None) -> list[str]:
            text = decoder.decode(b"", final=True) if chunk is None else decoder.decode(chunk)
            return [text] if text else []

        return _BodyIterator(self, timeout, decode)

    def aiter_lines(self, *, timeout: Timeout = UNSET) -> AsyncIterator[str]:
        r"""Iterate over the rest of the body line by line, without line ends (``\n``, ``\r\n``)."""
        decoder = codecs.getincrementaldecoder(self.charset)("replace")
        pending = ""

        def split(chunk: bytes | None) -> list[str]:
            nonlocal pending
            if chunk is None:
                rest, pending = pending + decoder.decode(b"", final=True), ""
                return [rest] if rest else []
            *lines, pending = (pending + decoder.decode(chunk)).split("\n")
            return [line.removesuffix("\r") for line in lines]

        return _BodyIterator(self, timeout, split)

    async def aread(self, *, timeout: Timeout = UNSET) -> bytes:
        """Read the rest of the body and return the whole of it."""
        if self._content is not None:
            return self._content
        limit = resolve_timeout(timeout, self._timeout)
        with trio.move_on_after(math.inf if limit is None else limit):
            while await self._read_chunk() is not None:
                pass
            return self.content
        assert limit is not None
        raise ReceiveTimeout(f"the end of the response to {self._what}", self._progress(), limit)

    # -- the machinery -------------------------------------------------------------

    @property
    def _what(self) -> str:
        return f"{self.method} {self.target} ({self.status} {self.reason})"

    def _progress(self) -> str:
        size = sum(map(len, self.chunks)) + sum(map(len, self._partial))
        progress = f"{size} bytes of body in {len(self.chunks)} chunks so far"
        if self.headers.get("transfer-encoding"):
            progress += " (a streamed response: read it with client.stream())"
        return progress

    async def _read_chunk(self) -> bytes | None:
        conn = self._conn
        assert conn is not None
        chunked = "chunked" in (self.headers.get("transfer-encoding") or "").lower()
        while True:
            event = await conn.next_event("the rest of the response", self._what)
            if isinstance(event, h11.Data):
                self._partial.append(bytes(event.data))
                if chunked and not event.chunk_end:
                    continue
                chunk = b"".join(self._partial)
                self._partial.clear()
                self.chunks.append(chunk)
                return chunk
            if isinstance(event, h11.EndOfMessage):
                if self._partial:  # pragma: no cover - h11 ends chunks before the message
                    self.chunks.append(b"".join(self._partial))
                    self._partial.clear()
                self._content = b"".join(self.chunks)
                return None
            raise UnexpectedEvent(
                f"the body of the response to {self._what}", f"h11 event {event!r}"
            )


class _BodyIterator(Generic[T]):
    """Chunks of a response body turned into items by ``produce`` (``None``: the end)."""

    def __init__(
        self,
        response: ClientResponse,
        timeout: Timeout,
        produce: Callable[[bytes | None], list[T]],
    ) -> None:
        self._response = response
        self._timeout = timeout
        self._produce = produce
        self._items: deque[T] = deque()
        self._done = False

    def __aiter__(self) -> _BodyIterator[T]:
        return self

    async def __anext__(self) -> T:
        while not self._items:
            if self._done:
                raise StopAsyncIteration
            chunk = await self._response.next_chunk(timeout=self._timeout)
            self._done = chunk is None
            self._items.extend(self._produce(chunk))
        return self._items.popleft()


class WebSocketRejected(HandshakeError):
    """The server answered a WebSocket handshake with something other than 101.

    Attributes:
        response: the :class:`ClientResponse` (status, headers, body).
        status: its status code.
    """

    def __init__(self, response: ClientResponse) -> None:
        body = response.content
        detail = f": {body[:200]!r}" if body else ""
        super().__init__(
            f"the server refused the WebSocket handshake for {response.target} with "
            f"{response.status} {response.reason}{detail}",
            response.status,
        )
        self.response = response


# -- one HTTP/1.1 connection ------------------------------------------------------------


class H11Connection:
    """h11 over one stream: send a request, read its response."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.received = bytearray()  # the start of the current response, for failures
        self.send_failed = False
        self.eof = False

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data and not self.send_failed:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The server closed (e.g. it answered 413 early): read its answer.
                self.send_failed = True

    async def next_event(self, part: str, request: str) -> Any:
        """The next h11 event of ``part`` ("the response") of the response to ``request``."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                received = describe_bytes(bytes(self.received))
                if self.eof and not self.received:
                    raise UnexpectedEvent(
                        f"{part} to {request}",
                        "the server closed the connection (having sent nothing)",
                    ) from None
                closed = "the server closed the connection having sent " if self.eof else ""
                raise UnexpectedEvent(
                    f"a valid HTTP/1.1 response to {request}",
                    f"{closed}{received}, which h11 refuses: {exc}",
                ) from None
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.eof = True
                if len(self.received) < _KEPT:
                    self.received += data[: _KEPT - len(self.received)]
                self.h11.receive_data(bytes(data))
                continue
            if isinstance(event, h11.ConnectionClosed):  # pragma: no cover - h11 raises instead
                received = describe_bytes(bytes(self.received))
                raise UnexpectedEvent(
                    f"{part} to {request}",
                    f"the server closed the connection (having sent {received})",
                )
            return event

    async def send_request(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: Any
    ) -> None:
        self.received.clear()
        await self.send(h11.Request(method=method, target=target, headers=headers))
        if isinstance(body, bytes):
            if body:
                await self.send(h11.Data(data=body))
        elif isinstance(body, AsyncIterable):
            async for piece in body:
                if piece and not self.send_failed:
                    await self.send(h11.Data(data=bytes(piece)))
        elif body is not None:
            for piece in body:
                if piece and not self.send_failed:
                    await self.send(h11.Data(data=bytes(piece)))
        if not self.send_failed:
            # (After an early answer and close the body stays short of its declared
            # length: ending it would be an h11 error; the answer is what counts.)
            await self.send(h11.EndOfMessage())

    async def receive_head(self, method: str, target: str) -> ClientResponse:
        """The next final response's head (1xx responses are skipped)."""
        request = f"{method} {target}"
        while True:
            event = await self.next_event("the response", request)
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return make_response(event, method, target)
                continue
            raise UnexpectedEvent(  # pragma: no cover
                f"the response to {request}", f"h11 event {event!r}"
            )
        response = make_response(event, method, target)
        response._conn = self
        return response


def make_response(event: Any, method: str, target: str) -> ClientResponse:
    try:
        phrase = event.reason.decode("latin-1") or HTTPStatus(event.status_code).phrase
    except ValueError:
        phrase = ""
    return ClientResponse(
        event.status_code,
        phrase,
        event.http_version.decode("ascii"),
        Headers([(bytes(n), bytes(v)) for n, v in event.headers.raw_items()]),
        method=method,
        target=target,
    )
