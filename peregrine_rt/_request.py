"""What a handler receives: :class:`Request`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from io import BytesIO
from typing import TYPE_CHECKING, Any

from ._http import RequestHead, parse_cookie_header, parse_query
from ._json import loads
from .exceptions import InvalidJSON

if TYPE_CHECKING:
    from ._config import Config
    from ._connection import HTTPConnection
    from ._forms import FormData
    from ._hub import Hub
    from .websocket import WebSocket

__all__ = ["QueryParams", "Request"]

error_log = logging.getLogger("peregrine_rt.error")


class QueryParams(Mapping[str, str]):
    """The parsed query string: a read-only multi-dict (first value wins for ``[]``)."""

    __slots__ = ("_dict", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        d: dict[str, str] = {}
        for k, v in items:
            d.setdefault(k, v)
        self._dict = d

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def getlist(self, key: str) -> list[str]:
        """Every value of ``key``, in order."""
        return [v for k, v in self._items if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """All ``(name, value)`` pairs, repeats included, in order."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"QueryParams({self._items!r})"


def _reserve(buf: BytesIO, need: int, length: int) -> int:
    """Make room in ``buf`` for ``need`` bytes of a body of ``length``; return the room made.

    The room doubles with what arrived, never trusting the announced length
    beyond that (a client announcing 1 MiB and sending 10 bytes gets 20
    bytes reserved), and jumps to exactly ``length`` near the end, so that
    the last allocation is the body's size: no growth slack (BytesIO grows by
    an eighth, and within an eighth it would over-allocate).
    """
    room = 2 * need
    if room * 4 >= length * 3:
        room = length
    room = max(room, need)
    here = buf.tell()
    buf.seek(room - 1)
    buf.write(b"\0")  # BytesIO allocates exactly this size when it jumps more than 1/8
    buf.seek(here)
    return room


class Request(RequestHead):
    """An HTTP request as a handler sees it.

    Everything the parser read (``method``, ``path``, ``raw_path``,
    ``raw_query``, ``target``, ``http_version``, ``headers``, ``host``,
    ``keep_alive``, ``content_length``, ``chunked``, ``upgrade``) plus:

    Attributes:
        client: the peer's ``(host, port)``, or ``None`` (Unix sockets, memory streams).
        scheme: ``"http"`` or ``"https"``.
        state: a dict for the handler's per-request data.

    The body is read on demand, with the server's size limit and body timeout:
    ``await request.body()``, ``await request.json()``, or
    ``async for chunk in request.stream()``.  A client that sent
    ``Expect: 100-continue`` gets its ``100 Continue`` only then.

    ``body()`` holds the body once, in one buffer, however it was chunked: at
    most the body's size (with ``Content-Length``) or an eighth more (chunked)
    while it grows, plus the piece being received.
    """

    __slots__ = (
        "_body",
        "_conn",
        "_cookies",
        "_handler",
        "_path_params",
        "_query",
        "_root_path",
        "_state",
        "_user",
        "_websocket",
        "client",
        "scheme",
    )

    _conn: HTTPConnection
    _body: bytes | None
    _query: QueryParams
    _state: dict[str, Any]
    _cookies: dict[str, str]
    _path_params: dict[str, Any]
    _handler: Any
    _root_path: str
    _user: Any
    _websocket: WebSocket
    client: tuple[str, int] | None
    scheme: str

    @property
    def query(self) -> QueryParams:  # type: ignore[override]  # richer than the parser's list
        """The query string as a :class:`QueryParams` multi-dict (parsed on first use)."""
        try:
            return self._query
        except AttributeError:
            q = self._query = QueryParams(parse_query(self.raw_query))
            return q

    @property
    def state(self) -> dict[str, Any]:
        """Per-request scratch space for the handler (and mixins)."""
        try:
            return self._state
        except AttributeError:
            s: dict[str, Any] = {}
            self._state = s
            return s

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the client (``Cookie`` header), first value of each name."""
        try:
            return self._cookies
        except AttributeError:
            cookies: dict[str, str] = {}
            for header in self.headers.getlist("cookie"):
                parse_cookie_header(header, cookies)
            for name, value in cookies.items():
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    cookies[name] = value[1:-1]
            self._cookies = cookies
            return cookies

    @property
    def path_params(self) -> dict[str, Any]:
        """The parameters the :class:`~peregrine_rt.Router` matched in the path, converted.

        ``{"id": 3}`` for ``/items/3`` under the route ``/items/{id:int}``;
        empty when no router matched a pattern.
        """
        try:
            return self._path_params
        except AttributeError:
            params: dict[str, Any] = {}
            self._path_params = params
            return params

    @path_params.setter
    def path_params(self, params: dict[str, Any]) -> None:
        self._path_params = params

    @property
    def root_path(self) -> str:
        """The prefix a router mounted the handler under (``""`` at the top).

        ``mount()`` moved it from ``path`` to here: a handler mounted
        at ``/api`` sees ``/items`` for ``/api/items``, and builds its own
        URLs as ``request.root_path + "/items"``.
        """
        try:
            return self._root_path  # "" from bind(); mount() adds to it
        except AttributeError:  # a Request built by hand, never bound
            return ""

    def mount(self, prefix: str) -> None:
        """Move ``prefix`` from the start of ``path`` to ``root_path`` (for routers).

        Raises:
            ValueError: ``path`` does not start with ``prefix``.
        """
        self.strip_prefix(prefix)
        self._root_path = self.root_path + prefix

    @property
    def handler(self) -> Any:
        """The handler answering this request, when it is not the server's own (else ``None``).

        A router sets it while a mounted handler or a route's handler runs, so
        that :func:`~peregrine_rt.upgrade` calls *that* handler's
        ``authenticate`` by default, not the router's.
        """
        try:
            return self._handler
        except AttributeError:
            return None

    @handler.setter
    def handler(self, handler: Any) -> None:
        self._handler = handler

    @property
    def user(self) -> Any:
        """The identity the handshake's ``authenticate`` hook returned (``None`` before).

        :func:`~peregrine_rt.upgrade` sets it, then hands it to the socket as
        :attr:`WebSocket.user <peregrine_rt.WebSocket.user>`; an HTTP
        handler may set it too (``request.user = ...``) for the code it calls.
        """
        try:
            return self._user
        except AttributeError:
            return None

    @user.setter
    def user(self, identity: Any) -> None:
        self._user = identity

    @property
    def websocket(self) -> WebSocket | None:
        """The socket :func:`~peregrine_rt.upgrade` turned this request into, or ``None``."""
        try:
            return self._websocket
        except AttributeError:
            return None

    @websocket.setter
    def websocket(self, ws: WebSocket) -> None:
        self._websocket = ws

    def bind(self, connection: HTTPConnection, client: tuple[str, int] | None, scheme: str) -> None:
        """Attach the request to the connection that read it (the connection calls it)."""
        self._conn = connection
        self.client = client
        self.scheme = scheme
        # Set, not left unset: reading an unset slot raises and clears an
        # AttributeError inside getattr(), 6x slower than a read.
        self._root_path = ""
        self._body = None

    @property
    def connection(self) -> HTTPConnection:
        """The connection that read this request, for the server's collaborators (``upgrade()``)."""
        return self._conn

    @property
    def config(self) -> Config:
        """The :class:`~peregrine_rt.Config` of the server that read this request."""
        return self._conn.server.config

    @property
    def hub(self) -> Hub:
        """The server's hub (publish from HTTP handlers, subscribe SSE streams)."""
        return self._conn.server.hub

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the body in pieces as they arrive (each call starts where the last stopped).

        After :meth:`body` (or ``json()``) read the whole body, it yields that
        body once more, so a handler's ``form()`` still works behind a
        middleware that looked at the body first.
        """
        body = self._body
        if body is not None:
            if body:
                yield body
            return
        conn = self._conn
        while True:
            chunk = await conn.read_body_chunk(self)
            if chunk is None:
                return
            yield chunk

    async def body(self) -> bytes:
        """The whole body (read once, then kept).

        Raises:
            LimitExceeded: the body is over ``Config.max_body_size`` (the server
                answers 413 if the handler lets it propagate).
        """
        body = self._body
        if body is None:
            body = self._body = await self._read_body()
        return body

    async def _read_body(self) -> bytes:
        # One buffer, never a list of pieces (a body of 2-byte chunks used to
        # cost 27 times its size that way).  BytesIO.getvalue() hands its
        # buffer over without a copy, where a bytearray would need one (twice
        # the body at the end).
        read = self._conn.read_body_chunk
        first = await read(self)
        if first is None:
            return b""
        piece = await read(self)
        if piece is None:
            return first  # all of it came in one piece
        buf = BytesIO()
        buf.write(first)
        del first
        length = self.content_length  # None for a chunked body: BytesIO grows by 1/8 steps
        reserved = 0
        while piece is not None:
            if length is not None and buf.tell() + len(piece) > reserved:
                reserved = _reserve(buf, buf.tell() + len(piece), length)
            buf.write(piece)
            piece = await read(self)
        buf.truncate()  # what was reserved but not filled (after stream() took a part)
        return buf.getvalue()

    async def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: an ``InvalidJSON`` (from ``peregrine_rt.exceptions``,
                also a :class:`~peregrine_rt.RemoteProtocolError`): the body
                is not JSON, or nests deeper than ``Config.json_max_depth``.
                Uncaught, the client gets 400 with the reason (``invalid
                JSON: Expecting value: line 1 column 1``, ``JSON nested deeper
                than 64 levels``).  Either way it is one warning line on
                ``peregrine_rt.error``, without a traceback.
            LimitExceeded: the body is over ``Config.max_body_size`` (413).
        """
        body = await self.body()
        try:
            return loads(body, self.config.json_max_depth)
        except InvalidJSON as exc:
            error_log.warning("%r: %s", self, exc)
            raise

    async def form(
        self,
        *,
        max_fields: int | None = None,
        max_files: int | None = None,
        max_part_size: int | None = None,
    ) -> FormData:
        """The body parsed as a form (urlencoded or ``multipart/form-data``).

        Read once, then kept.  Uploaded files stream to a spooled temporary
        file (in memory up to ``Config.form_spool_size`` bytes, on disk
        beyond); the limits default to the ``Config.form_*`` fields.

        Raises:
            HTTPError: 400 for a body that is not a well-formed form of a
                supported type (415 for another content type), or over the
                field or file count; 413 for a part over ``max_part_size``.
            LimitExceeded: the body is over ``Config.max_body_size`` (413).
        """
        from ._forms import read_form  # noqa: PLC0415  # the form parser, on first use

        return await read_form(
            self, max_fields=max_fields, max_files=max_files, max_part_size=max_part_size
        )

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target.decode('ascii', 'replace')}>"
