"""The route table of :class:`~peregrine_rt.Router`: patterns, converters, matching, url_for.

Static paths are one dict lookup.  Patterns with parameters live in a tree of
segments, so a lookup costs the depth of the path, not the number of routes.
At each segment a literal wins over a parameter, a segment mixing text and
parameters (``{name}.{ext}``) over a whole-segment one, a typed parameter
(``int``, ``float``, ``uuid``) over ``{name}``, and ``{rest:path}`` comes
last; a dead end backtracks.  So the order routes were added in never
matters, and two routes of one shape (the same literal segments and the same
types at the same positions) taking a method in common clash: the table
refuses the second with a :class:`~peregrine_rt.exceptions.HandlerError`.
The routes of one shape are a leaf, keyed by method, which answers HEAD with
its GET route (not a WebSocket one) and knows its ``Allow`` header.

The checks of what a route holds (an endpoint, a WebSocket route's handler,
methods) are here too, for the router to call.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .._handler import HandlerSpec, check_handler
from ..exceptions import HandlerError

if TYPE_CHECKING:
    from .._request import Request
    from .._response import Response
    from ..websocket import WebSocket

    Authenticate = Callable[[Request], Awaitable[Any]]

__all__ = [
    "CONVERTERS",
    "Converter",
    "Param",
    "Route",
    "RouteTable",
    "Sockets",
    "WebSocketRoute",
    "build_url",
    "check_endpoint",
    "check_methods",
    "check_websocket_handler",
    "parse_pattern",
]

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")
_SAFE = "!$&'()*+,;=:@"  # characters a path segment may carry unencoded (RFC 3986 pchar)
_PARAM = re.compile(r"\{([^{}]*)\}")
_FLOAT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


# -- converters ---------------------------------------------------------------------


def _parse_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def _parse_float(text: str) -> float:
    if _FLOAT.fullmatch(text) is None:
        raise ValueError(text)
    return float(text)


def _parse_uuid(text: str) -> uuid.UUID:
    if _UUID.fullmatch(text) is None:
        raise ValueError(text)
    return uuid.UUID(text)


def _parse_str(text: str) -> str:
    if not text:
        raise ValueError(text)
    return text


def _format_int(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a non-negative int")
    return str(value)


def _format_float(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a non-negative float")
    if not math.isfinite(value) or value < 0:
        raise ValueError("a non-negative finite float")
    return format(Decimal(repr(float(value) + 0.0)), "f")  # +0.0: no "-0.0"; never "1e+20"


def _format_uuid(value: Any) -> str:
    if isinstance(value, str):
        value = uuid.UUID(value)  # ValueError if it is not one
    if not isinstance(value, uuid.UUID):
        raise ValueError("a uuid.UUID")
    return str(value)


def _format_text(value: Any, *, slash: bool) -> str:
    if not isinstance(value, str) or not (value or slash) or "\x00" in value:
        raise ValueError("a non-empty str without NUL" if not slash else "a str without NUL")
    parts = value.split("/")
    if (not slash and len(parts) > 1) or any(p in (".", "..") for p in parts):
        raise ValueError("a str without '.' or '..' segments" + ("" if slash else " or '/'"))
    return quote(value, safe=_SAFE + ("/" if slash else ""))


@dataclass(frozen=True, slots=True)
class Converter:
    regex: str  # for a parameter inside a segment of text (``{name}.{ext}``)
    rank: int  # its place among a segment's parameters: lower is tried first
    parse: Callable[[str], Any]  # raises ValueError: no match
    format: Callable[[Any], str]  # for url_for; raises ValueError/TypeError


CONVERTERS: dict[str, Converter] = {
    "int": Converter(r"[0-9]+", 1, _parse_int, _format_int),
    "float": Converter(_FLOAT.pattern, 2, _parse_float, _format_float),
    "uuid": Converter(_UUID.pattern, 3, _parse_uuid, _format_uuid),
    "str": Converter(r"[^/]+", 4, _parse_str, functools.partial(_format_text, slash=False)),
    "path": Converter(r".*", 5, str, functools.partial(_format_text, slash=True)),
}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str
    converter: Converter


Segment = str | tuple[str | Param, ...]  # a literal, or pieces with a parameter


def parse_pattern(pattern: str, where: str) -> tuple[tuple[Segment, ...], tuple[str, ...]]:
    """``/items/{id:int}`` -> its segments and parameter names, or HandlerError."""
    if not pattern.startswith("/"):
        raise HandlerError(f"{where}: a path pattern starts with '/'")
    segments: list[Segment] = []
    names: list[str] = []
    texts = pattern[1:].split("/")
    for index, text in enumerate(texts):
        pieces: list[str | Param] = []
        pos = 0
        for match in _PARAM.finditer(text):
            pieces.append(text[pos : match.start()])
            name, _, kind = match.group(1).partition(":")
            kind = kind or "str"
            if not name.isidentifier():
                raise HandlerError(
                    f"{where}: the parameter {match.group(0)} needs a name that is a Python "
                    "identifier, as in {id:int}"
                )
            if kind not in CONVERTERS:
                raise HandlerError(
                    f"{where}: unknown parameter type {kind!r} in {match.group(0)}; the types "
                    f"are {', '.join(sorted(CONVERTERS))}"
                )
            if name in names:
                raise HandlerError(f"{where}: the parameter {name!r} appears twice")
            if kind == "path" and (index != len(texts) - 1 or match.group(0) != text):
                raise HandlerError(
                    f"{where}: a path parameter ({match.group(0)}) must be the whole last segment"
                )
            names.append(name)
            pieces.append(Param(name, kind, CONVERTERS[kind]))
            pos = match.end()
        pieces.append(text[pos:])
        if any(isinstance(p, str) and ("{" in p or "}" in p) for p in pieces):
            raise HandlerError(f"{where}: unbalanced '{{' or '}}' in the segment {text!r}")
        if text in (".", ".."):
            raise HandlerError(f"{where}: a '{text}' segment never reaches a route")
        if any(isinstance(p, Param) for p in pieces):
            segments.append(tuple(p for p in pieces if p))  # without the empty texts
        else:
            segments.append(text)
    return tuple(segments), tuple(names)


# -- the route table ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sockets:
    """The WebSocket hooks of one handler (``None``: it has no such hook)."""

    on_open: Callable[[WebSocket], Awaitable[None]] | None
    on_message: Callable[[WebSocket, str | bytes], Awaitable[None]]
    on_close: Callable[[WebSocket, int, str], Awaitable[None]] | None


@dataclass(frozen=True, slots=True)
class WebSocketRoute:
    sockets: Sockets
    authenticate: Authenticate | None
    options: dict[str, Any]  # upgrade()'s keyword arguments


@dataclass(eq=False, slots=True)
class Route:
    pattern: str
    methods: frozenset[str]
    name: str | None
    call: Callable[[Request, Response], Awaitable[None]] | None  # None: not a function
    handler: Any = None  # a handler instance, whose handle() answers
    websocket: WebSocketRoute | None = None
    segments: tuple[Segment, ...] = ()
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        name = f" (name {self.name!r})" if self.name else ""
        return f"route {'|'.join(sorted(self.methods))} {self.pattern}{name}"


class _Leaf:
    """The routes of one shape, by method; ``allow`` is their Allow header."""

    __slots__ = ("allow", "by_method", "routes")

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.by_method: dict[str, Route] = {}

    def add(self, route: Route) -> None:
        for other in self.routes:
            if other.methods & route.methods:
                raise HandlerError(
                    f"{route} clashes with {other}: both take "
                    f"{', '.join(sorted(other.methods & route.methods))} on paths of the same "
                    "shape; remove one, or give them different methods"
                )
        self.routes.append(route)
        by_method = {m: r for r in self.routes for m in r.methods}
        get_route = by_method.get("GET")
        if get_route is not None and get_route.websocket is None:
            by_method.setdefault("HEAD", get_route)
        self.by_method = by_method


class _Edge:
    """A dynamic step of the tree: one segment matched by a shape of parameters."""

    __slots__ = ("key", "node", "parse", "parsers", "rank", "regex")

    def __init__(self, key: str, segment: tuple[str | Param, ...]) -> None:
        params = [p for p in segment if isinstance(p, Param)]
        self.key = key
        self.node = _Node()
        self.parsers = tuple(p.converter.parse for p in params)
        self.parse = self.parsers[0]  # a whole-segment parameter's (regex None)
        self.rank = 0 if len(segment) > 1 else params[0].converter.rank
        self.regex = None
        if len(segment) > 1:
            self.regex = re.compile(
                "".join(
                    f"({p.converter.regex})" if isinstance(p, Param) else re.escape(p)
                    for p in segment
                )
            )

    def match(self, text: str) -> list[Any] | None:
        """The converted values of a segment mixing text and parameters, or ``None``."""
        assert self.regex is not None  # a whole-segment parameter is matched by _walk itself
        found = self.regex.fullmatch(text)
        if found is None:
            return None
        try:
            return [parse(value) for parse, value in zip(self.parsers, found.groups(), strict=True)]
        except ValueError:
            return None


class _Node:
    __slots__ = ("dynamic", "leaf", "literal", "tail")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.dynamic: list[_Edge] = []  # by rank, then in the order added
        self.tail: _Leaf | None = None  # a {rest:path} parameter here
        self.leaf: _Leaf | None = None


def _walk(
    node: _Node, segs: list[str], i: int, values: list[Any], method: str | None, seen: list[_Leaf]
) -> tuple[Route, list[Any]] | None:
    """The first route taking ``method`` on ``segs[i:]``; other leaves matched go to ``seen``."""
    if i == len(segs):
        leaf = node.leaf
        if leaf is not None:
            route = leaf.by_method.get(method) if method else None
            if route is not None:
                return route, values
            seen.append(leaf)
        return None
    child = node.literal.get(segs[i])
    if child is not None:
        hit = _walk(child, segs, i + 1, values, method, seen)
        if hit is not None:
            return hit
    for edge in node.dynamic:
        if edge.regex is None:  # the common case, inline: one parameter, the whole segment
            try:
                got = [edge.parse(segs[i])]
            except ValueError:
                continue
        else:
            found = edge.match(segs[i])
            if found is None:
                continue
            got = found
        hit = _walk(edge.node, segs, i + 1, values + got, method, seen)
        if hit is not None:
            return hit
    tail = node.tail
    if tail is not None:
        route = tail.by_method.get(method) if method else None
        if route is not None:
            return route, [*values, "/".join(segs[i:])]
        seen.append(tail)
    return None


class RouteTable:
    """Static paths in a dict, patterns in a tree of segments, names for url_for."""

    def __init__(self) -> None:
        self.static: dict[str, _Leaf] = {}
        self.root = _Node()
        self.names: dict[str, Route] = {}

    def add(self, route: Route) -> None:
        route.segments, route.names = parse_pattern(route.pattern, str(route))
        if route.name is not None:
            if ":" in route.name:
                raise HandlerError(f"{route}: a route name has no ':' (it separates mounts)")
            if route.name in self.names:
                raise HandlerError(
                    f"{route} has the name of {self.names[route.name]}: give one of them "
                    "another name="
                )
        if not route.names:
            leaf = self.static.setdefault(route.pattern, _Leaf())
        else:
            node = self.root
            for segment in route.segments[:-1]:
                node = self._step(node, segment)
            last = route.segments[-1]
            if isinstance(last, tuple) and isinstance(last[0], Param) and last[0].kind == "path":
                leaf = node.tail = node.tail or _Leaf()
            else:
                node = self._step(node, last)
                leaf = node.leaf = node.leaf or _Leaf()
        leaf.add(route)
        if route.name is not None:
            self.names[route.name] = route

    @staticmethod
    def _step(node: _Node, segment: Segment) -> _Node:
        if isinstance(segment, str):
            return node.literal.setdefault(segment, _Node())
        key = "".join(f"{{{p.kind}}}" if isinstance(p, Param) else p for p in segment)
        for edge in node.dynamic:
            if edge.key == key:
                return edge.node
        edge = _Edge(key, segment)
        node.dynamic.append(edge)
        node.dynamic.sort(key=lambda e: e.rank)  # stable: the order added within a rank
        return edge.node

    def lookup(self, path: str, method: str) -> tuple[Route, dict[str, Any]] | None:
        """The route for ``method`` on ``path`` and its converted parameters, or ``None``."""
        leaf = self.static.get(path)
        if leaf is not None:
            route = leaf.by_method.get(method)
            if route is not None:
                return route, {}
        if path[:1] == "/" and (self.root.literal or self.root.dynamic or self.root.tail):
            hit = _walk(self.root, path[1:].split("/"), 0, [], method, [])
            if hit is not None:
                route, values = hit
                return route, dict(zip(route.names, values, strict=False))  # equal lengths
        return None

    def allowed(self, path: str) -> set[str]:
        """Every method some route takes on ``path`` (empty: no route matches it)."""
        leaves = [self.static[path]] if path in self.static else []
        if path[:1] == "/":
            _walk(self.root, path[1:].split("/"), 0, [], None, leaves)
        return {method for leaf in leaves for method in leaf.by_method}


def build_url(route: Route, params: dict[str, Any]) -> str:
    missing = [n for n in route.names if n not in params]
    extra = sorted(set(params) - set(route.names))
    if missing or extra:
        problems = [f"missing {', '.join(missing)}"] * bool(missing)
        problems += [f"unexpected {', '.join(extra)}"] * bool(extra)
        raise ValueError(f"url_for({route.name!r}): {'; '.join(problems)} (the {route})")
    parts: list[str] = []
    for segment in route.segments:
        if isinstance(segment, str):
            parts.append(quote(segment, safe=_SAFE))
            continue
        text = ""
        for piece in segment:
            if isinstance(piece, str):
                text += quote(piece, safe=_SAFE)
                continue
            value = params[piece.name]
            try:
                text += piece.converter.format(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"url_for({route.name!r}): {piece.name}={value!r} does not fit "
                    f"{{{piece.name}:{piece.kind}}}, which takes {exc}"
                ) from None
        parts.append(text)
    return "/" + "/".join(parts)


# -- checks -------------------------------------------------------------------------


def check_endpoint(func: Any, where: str, nargs: int) -> None:
    """Refuse an endpoint that is not ``async def (request, response)`` (``nargs``: with self)."""
    expected = (
        "async def (self, request, response)" if nargs == 3 else "async def (request, response)"
    )
    name = getattr(func, "__qualname__", repr(func))
    if not inspect.iscoroutinefunction(func):
        raise HandlerError(f"{where}: {name} must be {expected}; it is not a coroutine function")
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # no signature to read: trust it
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    kw_required = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if kw_required or len(required) > nargs or (len(positional) < nargs and not varargs):
        bare = [p.replace(annotation=p.empty, default=p.empty) for p in params]
        actual = inspect.Signature(bare).__str__()  # without annotations: (request, *, user)
        raise HandlerError(f"{where}: {name} must be {expected}; it is async def {name}{actual}")


def check_websocket_handler(handler: Any, where: str) -> HandlerSpec:
    """check_handler's rules for a handler that needs on_message and no handle."""
    try:
        return check_handler(handler, websocket_only=True)
    except HandlerError as exc:
        raise HandlerError(f"{where}: {exc}") from None


def check_methods(methods: Iterable[str], where: str) -> frozenset[str]:
    if isinstance(methods, str):
        methods = [methods]
    found = frozenset(m.upper() for m in methods)
    bad = sorted(m for m in found if _METHOD.fullmatch(m) is None)
    if not found or bad:
        raise HandlerError(f"{where}: methods must be HTTP method names, not {sorted(methods)!r}")
    return found
