"""Handlers that wrap a handler: :class:`Middleware`, the base of ``CORS`` and ``Compress``.

A middleware is itself a handler (``Server(CORS(Api, ...))``): its ``handle``
does something around ``await self.app.handle(request, response)``, and
every other hook the server may call (``startup``, ``shutdown``,
``background``, ``authenticate``, the WebSocket callbacks, ``attach_hub``)
reaches the wrapped handler unchanged.

The server learns which optional hooks a handler has from its *class*
(:func:`~peregrine_rt._handler.check_handler`): a class with ``on_message``
accepts WebSockets, one without refuses ``upgrade()``.  A wrapper must
therefore have exactly the hooks of what it wraps, no more: a CORS wrapper
around a plain HTTP handler must not claim to accept WebSockets, and one
around a handler without ``authenticate`` must not make ``upgrade()`` call
an ``authenticate`` that is not there.  Two designs were possible:

* forward every hook always and make each forwarder cope with a missing
  inner hook — the server would then believe every wrapped handler accepts
  WebSockets, run ``on_open`` for nothing, and ``upgrade()`` would stop
  refusing a handler without ``on_message``;
* give each wrapper the hooks of its inner handler.

This module does the second: ``Middleware.__init__`` checks the inner
handler against the contract (a broken inner handler fails when the wrapper
is built, naming the inner class) and switches the instance to a subclass of
its own class made for that hook set (cached, one per middleware class and
inner class), whose forwarders have the contract's signatures, so that
``check_handler`` finds on the wrapper what it would find on the inner
handler.  The subclass is named after both (``CORS(Api)``), which is the name
the server logs.  Hooks the middleware class defines itself are kept as they
are (it then calls the inner one, if it wants to).

``authenticate`` is the exception: the server never asks the class for it,
``upgrade()`` looks it up on the handler instance each time it runs (on
``request.handler`` when a router set it, else on the server's handler, this
wrapper).  So the wrapper answers that lookup (``__getattr__``) with what the
wrapped handler answers at that moment.

The forwarders are there for the contract check.  At run time the instance
holds the inner handler's bound methods under the same names, so that a
WebSocket message reaches the inner ``on_message`` without an extra
coroutine per message, however deep the wrapping.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, ClassVar

from ._handler import HandlerSpec, check_handler
from .exceptions import HandlerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._hub import Hub
    from ._request import Request
    from ._response import Response, ResponseHeaders
    from .websocket import WebSocket

__all__ = ["Middleware", "add_vary"]


# -- forwarders: the contract's signatures, calling the same hook on self.app --------


async def _startup(self: Middleware) -> None:
    await self.app.startup()


async def _shutdown(self: Middleware) -> None:
    await self.app.shutdown()


async def _background(self: Middleware) -> None:
    await self.app.background()


async def _background_ready(self: Middleware, *, task_status: Any) -> None:
    await self.app.background(task_status=task_status)


async def _on_open(self: Middleware, ws: WebSocket) -> None:
    await self.app.on_open(ws)


async def _on_message(self: Middleware, ws: WebSocket, message: str | bytes) -> None:
    await self.app.on_message(ws, message)


async def _on_close(self: Middleware, ws: WebSocket, code: int, reason: str) -> None:
    await self.app.on_close(ws, code, reason)


def _hooks(spec: HandlerSpec, inner: object) -> dict[str, Callable[..., Any]]:
    """The forwarders a wrapper of ``inner`` needs: one per optional hook ``inner`` has."""
    hooks: dict[str, Callable[..., Any]] = {}
    if spec.has_startup:
        hooks["startup"] = _startup
    if spec.has_shutdown:
        hooks["shutdown"] = _shutdown
    if spec.has_background:
        hooks["background"] = _background_ready if spec.background_reports_ready else _background
    if spec.has_on_open:
        hooks["on_open"] = _on_open
    if spec.has_websocket:
        hooks["on_message"] = _on_message
    if spec.has_on_close:
        hooks["on_close"] = _on_close
    return hooks


# (middleware class, inner handler class, hooks) -> the subclass made for them
_VARIANTS: dict[tuple[type, type, tuple[str, ...]], type] = {}
_BASES: dict[type, type] = {}  # such a subclass -> the middleware class it was made from


def _defines(cls: type, name: str) -> bool:
    return any(name in vars(base) for base in cls.__mro__ if base is not object)


class Middleware:
    """A handler that wraps another: override :meth:`handle`, call ``self.app.handle``.

    ::

        class Timing(pr.Middleware):
            async def handle(self, request, response):
                started = time.perf_counter()
                await self.app.handle(request, response)
                response.headers["server-timing"] = f"app;dur={...}"

        server = pr.Server(Timing(Api))

    Args:
        app: the handler to wrap: a class (instantiated once, here) or an
            instance; another middleware too.

    The wrapper has the optional hooks of ``app`` and no others (see the
    module docstring): ``startup``, ``shutdown``, ``background`` (with
    ``task_status`` if ``app``'s takes it), ``on_open``, ``on_message``,
    ``on_close``; ``authenticate`` is ``app``'s whenever ``upgrade()`` looks
    for it; and ``attach_hub`` is passed on when ``app`` has one.  So
    WebSockets keep working through any number of wrappers, and a wrapper of
    an HTTP-only handler refuses ``upgrade()`` as the handler would.  A
    subclass that defines one of these hooks itself keeps its own and calls
    ``self.app``'s when it wants to.

    A middleware *class* can be an app of its own, served as a class
    (``Server(Board)``, ``peregrine-rt examples.board:Board``): the server
    checks a class before it makes the instance, so the class names what it
    wraps in ``wraps``, and gets that handler's hooks when it is defined::

        class Board(pr.CORS):
            wraps = Routes  # checked here; Board gets Routes' WebSocket hooks

            def __init__(self):
                super().__init__(Routes, allow_origins=["http://localhost:5173"])

    Error handling:
        :class:`~peregrine_rt.exceptions.HandlerError` when ``app`` breaks the
        handler contract, raised here, when the wrapper is built (or when a
        class with ``wraps`` is defined), and when ``app`` is not what the
        class's ``wraps`` names.

    Attributes:
        app: the wrapped handler instance.
        wraps: (a class attribute) the handler class a middleware class
            always wraps, for a middleware class served as a class.
    """

    app: Any
    wraps: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inner = vars(cls).get("wraps")
        if inner is None:
            return
        spec = check_handler(inner)
        for hook, forwarder in _hooks(spec, inner).items():
            if not _defines(cls, hook):
                setattr(cls, hook, _renamed(forwarder, hook, cls.__qualname__))

    def __init__(self, app: type | object) -> None:
        declared = type(self).wraps
        if declared is not None and (app if isinstance(app, type) else type(app)) is not declared:
            raise HandlerError(
                f"{type(self).__qualname__} declares wraps = {declared.__qualname__} but was "
                f"given {app!r}: the server checked the hooks of {declared.__qualname__}"
            )
        spec = check_handler(app)
        inner = app() if isinstance(app, type) else app
        self.app = inner
        cls = type(self)
        base = _BASES.get(cls, cls)
        hooks = {name: f for name, f in _hooks(spec, inner).items() if not _defines(base, name)}
        key = (base, type(inner), tuple(hooks))
        variant = _VARIANTS.get(key)
        if variant is None:
            name = f"{base.__qualname__}({spec.name})"
            namespace: dict[str, Any] = {"__module__": base.__module__}
            for hook, forwarder in hooks.items():
                namespace[hook] = _renamed(forwarder, hook, name)
            variant = type(base.__name__, (base,), namespace)
            variant.__qualname__ = name
            _VARIANTS[key] = variant
            _BASES[variant] = base
        self.__class__ = variant
        for hook in hooks:  # the run-time shortcut: the inner handler's bound methods
            setattr(self, hook, getattr(inner, hook))

    async def handle(self, request: Request, response: Response) -> None:
        """Pass the request to the wrapped handler; subclasses do something around it."""
        await self.app.handle(request, response)

    def attach_hub(self, hub: Hub) -> None:
        """Pass the server's hub on to the wrapped handler, if it takes one."""
        attach = getattr(self.app, "attach_hub", None)
        if callable(attach):
            attach(hub)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__}>"

    if not TYPE_CHECKING:  # invisible to type checkers: a typo stays an error there

        def __getattr__(self, name: str) -> Any:
            # upgrade() looks ``authenticate`` up on the server's handler (this
            # wrapper) each time it runs: answer what the wrapped handler answers.
            if name == "authenticate" and "app" in self.__dict__:
                return getattr(self.app, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _renamed(forwarder: Callable[..., Any], hook: str, owner: str) -> Callable[..., Any]:
    """A copy of ``forwarder`` named ``owner.hook``, so that tracebacks and errors read right."""
    method = types.FunctionType(
        forwarder.__code__, forwarder.__globals__, hook, None, forwarder.__closure__
    )
    method.__qualname__ = f"{owner}.{hook}"
    method.__annotations__ = dict(forwarder.__annotations__)
    return method


def add_vary(headers: ResponseHeaders, name: str) -> None:
    """Make the response's ``Vary`` name ``name`` (kept as one field, others appended to).

    Nothing changes when ``Vary`` already names it (any case) or is ``*``.
    """
    present = [v.strip() for value in headers.getlist("vary") for v in value.split(",")]
    lowered = {v.lower() for v in present if v}
    if name.lower() in lowered or "*" in lowered:
        return
    headers["vary"] = ", ".join([*(v for v in present if v), name])
