"""The handler contract as types: :class:`HTTPHandler` and :class:`WebSocketHandler`.

A handler never has to inherit from anything: these are
:class:`typing.Protocol` classes, so a type checker matches a class against
them by its methods alone.  Annotate with them where a handler is passed
around (``def make_server(handler: type[pr.HTTPHandler]) -> pr.Server``), or
check a class where it is written, with a line that costs nothing at run time
(``_: type[pr.WebSocketHandler] = Echo``), and mypy reports a missing
``on_message`` or a wrong parameter there, before the server is built.

What a Protocol cannot say, the server still checks when it is built
(``Server(Handler)``): the optional hooks (a Protocol member is always
required), that a method is ``async def`` rather than a ``def`` returning an
awaitable, the number of parameters of an untyped method, and a misspelt hook
name (``on_mesage``).  Those checks are the authority; these types are the
same contract, seen earlier.

The parameters are positional-only (``/``) because the server passes them by
position: a handler may name them as it likes (``handle(self, req, resp)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._request import Request
    from ._response import Response
    from .websocket import WebSocket

__all__ = ["HTTPHandler", "WebSocketHandler"]


class HTTPHandler(Protocol):
    """A handler that answers HTTP requests: what every handler is.

    The server creates one instance per process (or is given one) and calls
    :meth:`handle` for every request.  Optional lifecycle hooks, called if the
    class defines them (each ``async def``, without arguments):

    * ``startup(self)``: once, before the first connection is accepted.
    * ``background(self)`` or ``background(self, *, task_status)``: a task
      for the server's whole life, started after ``startup``.
    * ``shutdown(self)``: once, after the last connection closed.

    :doc:`handlers` describes each one.
    """

    async def handle(self, request: Request, response: Response, /) -> None:
        """Answer ``request`` by filling in ``response``.

        The response is sent when this returns.  Calling
        :func:`~peregrine_rt.upgrade` here turns the connection into a
        WebSocket, which needs a :class:`WebSocketHandler`.
        """
        ...


class WebSocketHandler(HTTPHandler, Protocol):
    """A handler that also accepts WebSockets: ``handle`` calls :func:`~peregrine_rt.upgrade`.

    Besides :meth:`on_message`, the server calls these hooks if the class
    defines them (each ``async def``):

    * ``on_open(self, ws)``: once the socket is open, before its first message.
    * ``on_close(self, ws, code, reason)``: exactly once for every socket that
      opened, whatever closed it (the peer, an error, a timeout, shutdown).

    ``on_open`` or ``on_close`` without ``on_message`` is refused when the
    server is built.  The :doc:`websockets` guide shows the whole lifecycle.
    """

    async def on_message(self, ws: WebSocket, message: str | bytes, /) -> None:
        """Handle one message from ``ws``: ``str`` for a text frame, ``bytes`` for binary.

        Messages of one socket arrive in order, one call at a time.
        """
        ...
