"""One ASGI ``websocket`` scope: the app's task, its inbox, and the hooks that feed it.

peregrine_rt runs a socket's life after ``handle()`` returns (``on_open``,
``on_message`` per message, ``on_close``), while an ASGI app is one coroutine
that drives ``receive``/``send`` itself from the ``websocket.connect`` to the
end.  So the app runs in a task of the adapter's nursery (the handler's
``background()``, which lives as long as the server), and:

1. ``handle()`` puts ``websocket.connect`` in the inbox, starts the app, and
   waits for its answer: ``websocket.accept`` (``upgrade()`` with this object
   as ``hooks``, the app's subprotocol and headers), ``websocket.close``
   (403), ``websocket.http.response.start``/``body`` (that HTTP response: a
   denial), or the app ending first (500);
2. ``send(websocket.accept)`` returns once the ``101`` is written, so the
   app's next ``send`` finds the socket open;
3. ``on_message`` puts each message in the inbox, a bounded memory channel:
   when the app falls behind, ``on_message`` waits, the socket is not read,
   and TCP pushes back on the client (the heartbeat's pongs wait too);
4. ``on_close`` closes the inbox: the app's ``receive()`` gives what is left,
   then ``websocket.disconnect`` with the close code and reason;
5. an app that returns while the socket is open closes it with 1000, one that
   raises with 1011 (logged).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from .._upgrade import upgrade
from ..exceptions import ConnectionClosed
from ._http import response_headers
from ._scope import ClientGone

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .._request import Request
    from .._response import Response
    from ..websocket import WebSocket

    App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

__all__ = ["WebSocketSession"]

error_log = logging.getLogger("peregrine_rt.error")

# What the app answered to websocket.connect.
_ACCEPT, _CLOSE, _DENY, _ENDED = "accept", "close", "deny", "ended"


class WebSocketSession:
    """The ASGI side of one WebSocket: see the module docstring.

    Its ``on_open``/``on_message``/``on_close`` are the hooks ``upgrade()``
    gets; the server calls them as it would a handler's.
    """

    def __init__(self, app: App, scope: dict[str, Any], queue_size: int) -> None:
        self._app = app
        self._scope = scope
        self._inbox, self._outlet = trio.open_memory_channel[dict[str, Any]](
            math.inf if queue_size <= 0 else queue_size
        )
        self._answered = trio.Event()
        self._answer: str | None = None
        self._accept: dict[str, Any] = {}
        self._deny_head: dict[str, Any] | None = None
        self._deny_body: list[bytes] = []
        self._upgraded = trio.Event()
        self._failure: BaseException | None = None
        self.ws: WebSocket | None = None
        self._close: tuple[int, str] = (1006, "")

    # -- handle(): the handshake ---------------------------------------------------------

    async def handshake(self, nursery: trio.Nursery, request: Request, response: Response) -> None:
        """Start the app and answer the handshake as it says (see the module docstring).

        Raises:
            HandshakeError: ``upgrade()`` refused the handshake (the response is set).
            BaseException: the app's own error, when it ended before answering (a 500).
        """
        self._inbox.send_nowait({"type": "websocket.connect"})
        nursery.start_soon(self._run)
        try:
            await self._answered.wait()
            answer = self._answer
            if answer == _ACCEPT:
                accept = self._accept
                for name, value in accept.get("headers", ()):
                    response.headers.add(bytes(name), bytes(value))
                subprotocol = accept.get("subprotocol")
                self.ws = await upgrade(
                    request,
                    response,
                    subprotocols=(subprotocol,) if subprotocol else (),
                    authenticate=None,
                    hooks=self,
                )
            elif answer == _CLOSE:
                response.status = 403
            elif answer == _DENY:
                assert self._deny_head is not None
                head = response_headers(self._deny_head)
                response.status = head.status
                response.headers.raw = head.headers
                response.body = b"".join(self._deny_body)
            else:
                failure = self._failure
                if failure is not None:
                    raise failure
                raise RuntimeError("the ASGI app returned without answering websocket.connect")
        finally:
            if self.ws is None:
                self._inbox.close()  # refused, denied or failed: the app sees a disconnect
            self._upgraded.set()

    # -- the app's task -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self.receive, self.send)
        except Exception as exc:
            if self._answer is None:
                self._failure = exc  # handshake() raises it: logged with the request, a 500
            else:
                error_log.exception("ASGI app raised on WebSocket %s", self._scope["path"])
                await self._close_after(1011, "internal error")
        else:
            await self._close_after(1000, "")
        finally:
            if self._answer is None:
                self._answer = _ENDED
                self._answered.set()
            self._outlet.close()

    async def _close_after(self, code: int, reason: str) -> None:
        ws = self.ws
        if ws is not None and not ws.closed:
            with trio.move_on_after(ws.request.config.ws_close_timeout):
                await ws.close(code, reason)

    async def receive(self) -> dict[str, Any]:
        try:
            return await self._outlet.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            code, reason = self._close
            return {"type": "websocket.disconnect", "code": code, "reason": reason}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        ws = self.ws
        if kind == "websocket.send":
            if ws is None:
                if self._answer == _ACCEPT:  # upgrade() refused the handshake
                    raise ClientGone("the WebSocket handshake failed")
                raise RuntimeError("websocket.send before websocket.accept")
            text = message.get("text")
            try:
                await ws.send(text if text is not None else message["bytes"])
            except ConnectionClosed as exc:
                raise ClientGone(f"the WebSocket is closed ({exc.code})") from exc
        elif kind == "websocket.accept":
            self._answer_with(_ACCEPT, kind)
            self._accept = message
            await self._upgraded.wait()
        elif kind == "websocket.close":
            if self._answer is None:
                self._answer_with(_CLOSE, kind)
            elif ws is not None:
                await ws.close(message.get("code") or 1000, message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            self._answer_check(kind)
            if self._deny_head is not None:
                raise RuntimeError("websocket.http.response.start sent twice")
            self._deny_head = message
        elif kind == "websocket.http.response.body":
            self._answer_check(kind)
            if self._deny_head is None:
                raise RuntimeError(
                    "websocket.http.response.body before websocket.http.response.start"
                )
            self._deny_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._answer_with(_DENY, kind)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for a websocket scope")

    def _answer_check(self, kind: str) -> None:
        if self._answer is not None:
            raise RuntimeError(f"{kind} after the handshake was answered ({self._answer})")

    def _answer_with(self, answer: str, kind: str) -> None:
        self._answer_check(kind)
        self._answer = answer
        self._answered.set()

    # -- the hooks the server calls ----------------------------------------------------------

    async def on_open(self, ws: WebSocket) -> None:
        """Nothing to do: the app has its ``websocket.accept`` answered already."""

    async def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        event = (
            {"type": "websocket.receive", "text": message}
            if type(message) is str
            else {"type": "websocket.receive", "bytes": message}
        )
        try:
            await self._inbox.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the app has ended: nobody reads

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        self._close = (code, reason)
        self._inbox.close()
