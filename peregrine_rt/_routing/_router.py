"""``Router``: a handler that sends requests to routes, mounted handlers and WebSocket routes.

A router is an ordinary handler (``Server(router)``), so everything it holds
is checked when it is built: an endpoint that is not ``async def (request,
response)``, a handler breaking the contract, a pattern that is malformed or
names an unknown type, two routes that clash, a name taken twice all raise
:class:`~peregrine_rt.exceptions.HandlerError` naming the route.

Dispatch (``handle``), in order:

1. the route table (``_table.py``): a static path is one dict lookup, a
   pattern a walk down a tree of segments;
2. mounts, longest prefix first: ``request.mount(prefix)`` moves the prefix
   to ``root_path`` and the mounted handler answers;
3. a path some route takes with other methods: 405 with ``Allow``;
4. with ``redirect_slashes``, a 307 to the path with (or without) its
   trailing slash if a route takes that one; else 404.

bench/routing.py measures the cost: dispatching to the last of 100 routes is
a few per cent of a whole in-process request (figures in bench/RESULTS.md).

WebSockets.  The server calls the router's ``on_open``/``on_message``/
``on_close`` for every socket; the router keeps which handler's hooks each
socket belongs to (``_sockets``, dropped in ``on_close``) and hands the
events over.  A WebSocket route answers the handshake itself (``upgrade()``
with the route's ``authenticate``, else its handler's own, else none).  A
mounted handler may call ``upgrade()`` itself: the router then finds the
socket in ``request.websocket``.  While a handler runs, the router names it
in ``request.handler``, and ``upgrade()`` calls that handler's
``authenticate`` by default (not the router's).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

import trio

from .._browser import serve_browser_client
from .._handler import HandlerSpec, check_handler
from .._upgrade import upgrade
from ..exceptions import HandlerError, HTTPError
from ._table import (
    Route,
    RouteTable,
    Sockets,
    WebSocketRoute,
    build_url,
    check_endpoint,
    check_methods,
    check_websocket_handler,
)

if TYPE_CHECKING:
    from .._hub import Hub
    from .._request import Request
    from .._response import Response
    from ..websocket import WebSocket
    from ._table import Authenticate

__all__ = ["Router", "delete", "get", "patch", "post", "put", "route"]

error_log = logging.getLogger("peregrine_rt.error")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_MARK = "__peregrine_routes__"  # where the module-level decorators note their routes
_UNSET: Any = object()  # "upgrade()'s default" for a WebSocket route's options
# Which handlers each lifecycle hook has visited, shared by the routers of one tree.
_DONE: contextvars.ContextVar[dict[str, set[int]]] = contextvars.ContextVar("peregrine_rt_done")


@contextlib.contextmanager
def _once() -> Iterator[None]:
    """Open the record of visited handlers, unless an outer router has (see Router._each)."""
    if _DONE.get(None) is not None:
        yield
        return
    token = _DONE.set(collections.defaultdict(set))
    try:
        yield
    finally:
        _DONE.reset(token)


# -- the module-level decorators (routes of a Router subclass) ----------------------


@dataclass(frozen=True, slots=True)
class _Declared:
    path: str
    methods: tuple[str, ...]
    name: str | None


def route(
    path: str, *, methods: Iterable[str] = ("GET",), name: str | None = None
) -> Callable[[F], F]:
    """Declare a method of a :class:`Router` subclass as the endpoint of ``path``.

    The method is ``async def name(self, request, response)``; GET routes
    answer HEAD too.  Decorators stack: one method may serve several routes
    (give all but one a ``name=``).  ``name`` defaults to the method's name.
    """
    declared = _Declared(path, tuple(methods), name)

    def decorate(func: F) -> F:
        setattr(func, _MARK, (*getattr(func, _MARK, ()), declared))
        return func

    return decorate


def get(path: str, *, name: str | None = None) -> Callable[[F], F]:
    """:func:`route` for GET (and so HEAD)."""
    return route(path, methods=("GET",), name=name)


def post(path: str, *, name: str | None = None) -> Callable[[F], F]:
    """:func:`route` for POST."""
    return route(path, methods=("POST",), name=name)


def put(path: str, *, name: str | None = None) -> Callable[[F], F]:
    """:func:`route` for PUT."""
    return route(path, methods=("PUT",), name=name)


def patch(path: str, *, name: str | None = None) -> Callable[[F], F]:
    """:func:`route` for PATCH."""
    return route(path, methods=("PATCH",), name=name)


def delete(path: str, *, name: str | None = None) -> Callable[[F], F]:
    """:func:`route` for DELETE."""
    return route(path, methods=("DELETE",), name=name)


# -- the router ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mount:
    prefix: str  # "" for a mount at "/"
    handler: Any
    name: str | None


class Router:
    """A handler that sends each request to the route, mount or WebSocket route it matches.

    Declare routes on an instance::

        router = Router()

        @router.get("/items/{id:int}")
        async def item(request, response):
            response.json({"id": request.path_params["id"]})

    or as methods of a subclass, with the module-level :func:`get`,
    :func:`post`, :func:`route`... (``async def item(self, request,
    response)``); a subclass adds mounts and WebSocket routes in its
    ``__init__``, after ``super().__init__()``.  ``Server(router)`` and
    ``Server(MyRouter)`` both work; :doc:`web/routing` tells the whole story.

    Args:
        redirect_slashes: when no route, mount or other method takes a path,
            but the same path with (or without) a trailing slash has a
            route, answer 307 to that one (as Starlette does).  Not for
            WebSocket handshakes, nor towards a ``//`` path.

    Error handling:
        Every way of adding a route raises
        :class:`~peregrine_rt.exceptions.HandlerError` at once, naming the
        route, for: an endpoint that is not ``async def (request, response)``
        or a handler that breaks the handler contract; a malformed pattern,
        a parameter type it does not know, a duplicate parameter; a route
        with the shape and a method of another one; a name taken.  Decorated
        methods of a subclass are checked when the class is defined.
    """

    _declared: ClassVar[tuple[tuple[str, tuple[_Declared, ...]], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared: dict[str, tuple[_Declared, ...]] = {}
        for base in reversed(cls.__mro__):
            for attr, value in vars(base).items():
                marks = getattr(value, _MARK, None)
                if marks:
                    declared[attr] = marks
                else:
                    declared.pop(attr, None)  # overridden without a route
        table = RouteTable()  # a dry run: malformed patterns and clashes show up now
        for attr, marks in declared.items():
            func = getattr(cls, attr)
            for mark in marks:
                where = f"{cls.__qualname__}.{attr} ({' '.join(mark.methods)} {mark.path})"
                check_endpoint(func, where, 3)
                methods = check_methods(mark.methods, where)
                table.add(Route(mark.path, methods, mark.name or attr, func))
        cls._declared = tuple(declared.items())

    def __init__(self, *, redirect_slashes: bool = True) -> None:
        self.redirect_slashes = redirect_slashes
        self._table = RouteTable()
        self._mounts: list[_Mount] = []
        self._instances: dict[type, Any] = {}  # a handler class is made once
        self._children: dict[int, tuple[Any, HandlerSpec]] = {}  # by id(): every handler held
        self._sockets_of: dict[int, Sockets] = {}  # by id() of the handler
        self._sockets: dict[WebSocket, Sockets] = {}  # an open socket -> its handler's hooks
        self._hub: Hub | None = None
        for attr, marks in self._declared:
            for mark in marks:
                self.route(
                    mark.path, getattr(self, attr), methods=mark.methods, name=mark.name or attr
                )

    # -- adding routes ------------------------------------------------------------

    def _adopt(self, handler: Any, where: str, *, websocket: bool = False) -> Any:
        """The instance of a handler class or instance, checked and kept for its lifecycle."""
        if isinstance(handler, type) and handler in self._instances:
            instance = self._instances[handler]
            spec = self._children[id(instance)][1]
        else:
            if websocket:
                spec = check_websocket_handler(handler, where)
            else:
                try:
                    spec = check_handler(handler)
                except HandlerError as exc:
                    raise HandlerError(f"{where}: {exc}") from None
            instance = handler() if isinstance(handler, type) else handler
            if isinstance(handler, type):
                self._instances[handler] = instance
        if id(instance) not in self._children:
            self._children[id(instance)] = (instance, spec)
            if spec.has_websocket:
                self._sockets_of[id(instance)] = Sockets(
                    instance.on_open if spec.has_on_open else None,
                    instance.on_message,
                    instance.on_close if spec.has_on_close else None,
                )
            attach = getattr(instance, "attach_hub", None)
            if self._hub is not None and callable(attach):
                attach(self._hub)
        if websocket and id(instance) not in self._sockets_of:
            check_websocket_handler(handler, where)  # adopted as an HTTP handler first
        return instance

    @overload
    def route(
        self,
        path: str,
        endpoint: None = None,
        *,
        methods: Iterable[str] = ("GET",),
        name: str | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def route(
        self,
        path: str,
        endpoint: Any,
        *,
        methods: Iterable[str] = ("GET",),
        name: str | None = None,
    ) -> None: ...

    def route(
        self,
        path: str,
        endpoint: Any = None,
        *,
        methods: Iterable[str] = ("GET",),
        name: str | None = None,
    ) -> Callable[[F], F] | None:
        """Add a route: ``path`` for ``methods`` goes to ``endpoint``.

        Without ``endpoint``, return a decorator that adds the function it
        decorates.

        Args:
            path: a pattern such as ``/items/{id:int}`` (types ``str``, the
                default, ``int``, ``float``, ``uuid``, and ``path`` for the
                rest of the path, ``/`` included).
            endpoint: ``async def (request, response)``, or a handler (a
                class, made once by the router, or an instance) whose
                ``handle`` answers with the whole path.
            methods: the HTTP methods; with GET, HEAD is answered too.
            name: for :meth:`url_for`; a function's name by default.

        Raises:
            HandlerError: see the class.
        """
        if endpoint is None:

            def decorate(func: F) -> F:
                self.route(path, func, methods=methods, name=name)
                return func

            return decorate
        label = name or getattr(endpoint, "__qualname__", None) or type(endpoint).__qualname__
        shown = methods if isinstance(methods, str) else " ".join(methods)
        where = f"route {shown} {path} ({label})"
        found = check_methods(methods, where)
        if isinstance(endpoint, type) or (
            not inspect.isroutine(endpoint) and hasattr(endpoint, "handle")
        ):
            handler = self._adopt(endpoint, where)
            self._table.add(Route(path, found, name, None, handler=handler))
        else:
            check_endpoint(endpoint, where, 2)
            default = getattr(endpoint, "__name__", None)
            self._table.add(Route(path, found, name or default, endpoint))
        return None

    def get(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Decorate an endpoint for GET (and HEAD) on ``path``: see :meth:`route`."""
        return self.route(path, methods=("GET",), name=name)

    def post(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Decorate an endpoint for POST on ``path``: see :meth:`route`."""
        return self.route(path, methods=("POST",), name=name)

    def put(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Decorate an endpoint for PUT on ``path``: see :meth:`route`."""
        return self.route(path, methods=("PUT",), name=name)

    def patch(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Decorate an endpoint for PATCH on ``path``: see :meth:`route`."""
        return self.route(path, methods=("PATCH",), name=name)

    def delete(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Decorate an endpoint for DELETE on ``path``: see :meth:`route`."""
        return self.route(path, methods=("DELETE",), name=name)

    def mount(self, prefix: str, handler: Any, *, name: str | None = None) -> None:
        """Hand every path under ``prefix`` to ``handler`` (a handler class or instance, a Router).

        The handler sees ``request.path`` without the prefix (``/items``
        for ``/api/items`` under ``/api``) and the prefix in
        ``request.root_path``.  Routes are tried before mounts, and a mount
        at ``/`` takes every path no route took.  A mounted Router's names
        are reachable from :meth:`url_for` as ``"NAME:route"`` when the
        mount has a ``name``, or as they are when it has none.

        Raises:
            HandlerError: the prefix is not a literal path (``/api``), is
                mounted already, or the handler breaks the contract.
        """
        where = f"mount {prefix} ({getattr(handler, '__qualname__', type(handler).__qualname__)})"
        clean = prefix.rstrip("/")
        if not prefix.startswith("/") or "{" in prefix or "}" in prefix or "//" in prefix:
            raise HandlerError(f"{where}: a mount prefix is a literal path such as /api")
        for mount in self._mounts:
            if mount.prefix == clean or (name is not None and mount.name == name):
                raise HandlerError(
                    f"{where}: {mount.prefix or '/'} (name {mount.name!r}) is mounted already"
                )
        instance = self._adopt(handler, where)
        self._mounts.append(_Mount(clean, instance, name))
        self._mounts.sort(key=lambda m: -len(m.prefix))

    def websocket(
        self,
        path: str,
        handler: Any,
        *,
        authenticate: Authenticate | None = None,
        subprotocols: tuple[str, ...] | list[str] = (),
        name: str | None = None,
        compression: bool | None = None,
        max_message_size: int | None = _UNSET,
        allowed_origins: tuple[str, ...] | None = _UNSET,
    ) -> None:
        """Add a WebSocket route: the router answers the handshake, ``handler`` gets the socket.

        ``handler`` (a class, made once, or an instance) needs
        ``on_message(ws, message)``; its ``on_open`` and ``on_close`` are
        called too, and it needs no ``handle``.  A GET without ``Upgrade``
        gets 426.  ``request.path_params`` (``ws.request.path_params``) holds
        the path's parameters.

        Args:
            authenticate: ``async def (request) -> identity`` run before the
                socket is accepted (see :func:`~peregrine_rt.upgrade`); by
                default the handler's own ``authenticate`` method if it has
                one, else no check.
            subprotocols, compression, max_message_size, allowed_origins:
                passed to :func:`~peregrine_rt.upgrade` (left out: its defaults).
            name: for :meth:`url_for`.

        Raises:
            HandlerError: see the class; also a handler without ``on_message``.
        """
        where = f"websocket {path} ({getattr(handler, '__qualname__', type(handler).__qualname__)})"
        instance = self._adopt(handler, where, websocket=True)
        if authenticate is None:
            authenticate = getattr(instance, "authenticate", None)
        options: dict[str, Any] = {"subprotocols": tuple(subprotocols), "compression": compression}
        if max_message_size is not _UNSET:
            options["max_message_size"] = max_message_size
        if allowed_origins is not _UNSET:
            options["allowed_origins"] = allowed_origins
        target = WebSocketRoute(self._sockets_of[id(instance)], authenticate, options)
        self._table.add(Route(path, frozenset({"GET"}), name, None, instance, target))

    def url_for(self, name: str, /, **params: Any) -> str:
        """The path of the route ``name`` with ``params`` filled in, percent-encoded.

        ``"api:item"`` looks up ``item`` in the router mounted with
        ``name="api"``; a name this router lacks is looked up in its mounted
        routers without a name.  The path is relative to this router
        (prefix ``request.root_path`` if it is mounted itself).

        Raises:
            KeyError: no route has that name.
            ValueError: a parameter is missing, unexpected, or does not fit
                its type (``{id:int}`` takes a non-negative ``int``).
        """
        route = self._table.names.get(name)
        if route is not None:
            return build_url(route, params)
        first, sep, rest = name.partition(":")
        for mount in self._mounts:
            build = getattr(mount.handler, "url_for", None)
            if build is None or (mount.name != first if sep else mount.name is not None):
                continue
            try:
                return mount.prefix + str(build(rest if sep else name, **params))
            except KeyError:
                if sep:
                    raise
        raise KeyError(f"no route named {name!r} (names: {', '.join(sorted(self._table.names))})")

    # -- serving --------------------------------------------------------------------

    async def handle(self, request: Request, response: Response) -> None:
        """Answer ``request`` through the route or mount it matches (else 404, 405, a redirect)."""
        path = request.path
        hit = self._table.lookup(path, request.method)
        if hit is None:
            await self._no_route(request, response, path)
            return
        route, request.path_params = hit
        if route.call is not None:
            await route.call(request, response)
        elif route.websocket is not None:
            target = route.websocket
            ws = await upgrade(
                request, response, authenticate=target.authenticate, **target.options
            )
            self._sockets[ws] = target.sockets
        else:
            await self._delegate(route.handler, request, response)

    async def _delegate(self, handler: Any, request: Request, response: Response) -> None:
        outer = request.handler
        request.handler = handler  # upgrade() calls this handler's authenticate
        try:
            await handler.handle(request, response)
        finally:
            request.handler = outer
        ws = request.websocket
        if ws is not None and ws not in self._sockets:
            sockets = self._sockets_of.get(id(handler))
            if sockets is not None:
                self._sockets[ws] = sockets

    async def _no_route(self, request: Request, response: Response, path: str) -> None:
        for mount in self._mounts:
            prefix = mount.prefix
            if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/"):
                request.mount(prefix)
                request.path_params = {}
                await self._delegate(mount.handler, request, response)
                return
        allowed = self._table.allowed(path)
        if allowed:
            raise HTTPError(405, headers={"allow": ", ".join(sorted(allowed))})
        if serve_browser_client(request, response):
            return  # peregrine.js, the Channels browser client, unless a route took the path
        if self.redirect_slashes and path != "/" and request.upgrade is None:
            other = path[:-1] if path.endswith("/") else f"{path}/"
            raw = request.raw_path.decode("latin-1")
            if raw.endswith("/") == path.endswith("/") and self._table.allowed(other):
                location = raw[:-1] if raw.endswith("/") else f"{raw}/"
                if location.startswith("/") and not location.startswith("//"):
                    query = request.raw_query.decode("latin-1")
                    response.redirect(f"{location}?{query}" if query else location, 307)
                    return
        raise HTTPError(404)

    async def on_open(self, ws: WebSocket) -> None:
        """Hand the new socket to the ``on_open`` of the handler whose route accepted it."""
        sockets = self._sockets.get(ws)
        if sockets is None:
            raise RuntimeError(
                f"{ws!r} was accepted by a route's function, which has no WebSocket hooks: "
                "add WebSocket routes with Router.websocket(path, Handler)"
            )
        if sockets.on_open is not None:
            await sockets.on_open(ws)

    async def on_message(self, ws: WebSocket, message: str | bytes) -> None:
        """Hand the message to the ``on_message`` of the socket's handler."""
        await self._sockets[ws].on_message(ws, message)

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        """Hand the close to the socket's handler's ``on_close`` and forget the socket."""
        sockets = self._sockets.pop(ws, None)
        if sockets is not None and sockets.on_close is not None:
            await sockets.on_close(ws, code, reason)

    # -- lifecycle ----------------------------------------------------------------

    def _each(self, hook: str, *, last_first: bool = False) -> Iterator[tuple[Any, HandlerSpec]]:
        """The handlers held whose ``hook`` has not run yet in this call of the outermost router.

        A handler held twice (by a router and by one mounted in it) is
        visited once: the routers of one tree share a record of the handlers
        visited for each hook, in a context variable of the task (a child
        task, as background() starts, sees its parent's).
        """
        done = _DONE.get()[hook]
        children = list(self._children.values())
        for instance, spec in reversed(children) if last_first else children:
            if id(instance) not in done:
                done.add(id(instance))
                yield instance, spec

    def route_for(self, path: str) -> str | None:
        """The route that takes ``path`` (for some method), described, or None.

        Mounted routers are searched too (by the rest of the path); other
        mounted handlers are not, since what they take is theirs to decide.
        The server uses it to refuse an app whose route hides one of its
        own endpoints (``Config.ops_prefix``).
        """
        allowed = self._table.allowed(path)
        if allowed:
            return f"{', '.join(sorted(allowed))} {path}"
        for mount in self._mounts:
            prefix = mount.prefix
            if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("", "/"):
                inner = getattr(mount.handler, "route_for", None)
                if callable(inner):
                    found = inner(path[len(prefix) :] or "/")
                    if found is not None:
                        return f"{found} (mounted at {prefix or '/'})"
        return None

    def attach_hub(self, hub: Hub) -> None:
        """Give the server's hub to every handler held that takes one (``attach_hub``)."""
        self._hub = hub
        with _once():
            for instance, _ in self._each("attach_hub"):
                attach = getattr(instance, "attach_hub", None)
                if callable(attach):
                    attach(hub)

    async def startup(self) -> None:
        """Run the ``startup()`` of every handler held, in the order they were added.

        If one raises, those already started are shut down, then it propagates.
        """
        started: list[tuple[Any, HandlerSpec]] = []
        with _once():
            try:
                for instance, spec in self._each("startup"):
                    if spec.has_startup:
                        await instance.startup()
                    started.append((instance, spec))
            except BaseException:
                await self._shutdown(reversed(started))
                raise

    async def shutdown(self) -> None:
        """Run every held handler's ``shutdown()``, last added first (each one's error logged)."""
        with _once():
            await self._shutdown(self._each("shutdown", last_first=True))

    @staticmethod
    async def _shutdown(children: Iterable[tuple[Any, HandlerSpec]]) -> None:
        for instance, spec in children:
            if spec.has_shutdown:
                try:
                    await instance.shutdown()
                except Exception:
                    error_log.exception("%s.shutdown() raised", spec.name)

    async def background(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the ``background()`` of every handler held, together; ready when all are.

        An exception from one ends the others and propagates (the server logs
        it and shuts down; before ready, the server does not start).
        """
        with _once():
            runners = [(i, s) for i, s in self._each("background") if s.has_background]
            if not runners:
                task_status.started()
                return
            async with trio.open_nursery() as nursery:
                for instance, spec in runners:
                    if spec.background_reports_ready:
                        await nursery.start(instance.background)
                    else:
                        nursery.start_soon(instance.background)
                task_status.started()
