"""The handler contract, checked when a server is built.

A handler is a plain class.  ``Server(Handler)`` calls :func:`check_handler`,
which refuses a class that cannot work — no ``handle``, a plain ``def`` where
``async def`` is needed, the wrong number of parameters — with a
:class:`~peregrine_rt.exceptions.HandlerError` naming the class, the method and
the signature expected.  It is Python's answer to a compile error: the mistake
shows up when the server is built, not on the first request.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

from .exceptions import HandlerError

__all__ = ["HandlerSpec", "check_handler"]

# method name -> (parameters after self, required?)
_CONTRACT: dict[str, tuple[tuple[str, ...], bool]] = {
    "handle": (("request", "response"), True),
    "startup": ((), False),
    "background": ((), False),
    "shutdown": ((), False),
    "on_open": (("ws",), False),
    "on_message": (("ws", "message"), False),
    "on_close": (("ws", "code", "reason"), False),
}
_WS_CALLBACKS = ("on_open", "on_message", "on_close")
# keyword arguments the server may pass: background() can report when it is ready
_KEYWORDS: dict[str, tuple[str, ...]] = {"background": ("task_status",)}


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """What :func:`check_handler` learnt about a handler class."""

    cls: type
    name: str
    has_startup: bool
    has_shutdown: bool
    has_websocket: bool
    has_on_open: bool = False
    has_on_close: bool = False
    has_background: bool = False
    background_reports_ready: bool = False  # background() takes task_status


def _expected(method: str) -> str:
    params = ", ".join(("self", *_CONTRACT[method][0]))
    return f"async def {method}({params})"


def _accepts(func: Any, nargs: int, keywords: tuple[str, ...] = ()) -> bool:
    """Whether ``func`` can be called with ``nargs`` positionals (self included).

    ``keywords`` are keyword arguments the caller may pass (``task_status``):
    a keyword-only parameter of one of those names may be required.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return True
    params = list(sig.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        required = [p for p in positional if p.default is inspect.Parameter.empty]
        return len(required) <= nargs
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    keyword_required = [
        p
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.default is inspect.Parameter.empty
        and p.name not in keywords
    ]
    return not keyword_required and len(required) <= nargs <= len(positional)


def _calls_upgrade(func: Any) -> bool:
    """Whether the source of ``func`` calls something named ``upgrade`` (best effort)."""
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return False  # no source (e.g. built at run time): the request-time check remains
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name == "upgrade":
                return True
    return False


def check_handler(handler: type | object) -> HandlerSpec:
    """Check ``handler`` (a class, or an instance of one) against the contract.

    Raises:
        HandlerError: naming the class, the method and the expected signature.
    """
    cls = handler if isinstance(handler, type) else type(handler)
    name = cls.__qualname__
    if isinstance(handler, type):
        try:
            init_sig = inspect.signature(cls)
        except (TypeError, ValueError):
            init_sig = None
        if init_sig is not None and any(
            p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            for p in init_sig.parameters.values()
        ):
            raise HandlerError(
                f"{name}() must be callable without arguments: the server creates one "
                f"instance per process (its signature is {name}{init_sig}); pass an "
                "instance instead if it needs arguments"
            )
    found: dict[str, bool] = {}
    funcs: dict[str, Any] = {}
    contract = dict(_CONTRACT)
    # Mixins (peregrine_rt.mixins) name the methods they need from the handler.
    for base in reversed(cls.__mro__):
        for method, params in vars(base).get("_peregrine_requires", {}).items():
            contract[method] = (params, True)
    for method, (params, required) in contract.items():
        attr = inspect.getattr_static(cls, method, None)
        expected = f"async def {method}({', '.join(('self', *params))})"
        if attr is None:
            if required:
                raise HandlerError(f"{name} has no '{method}' method; a handler needs {expected}")
            found[method] = False
            continue
        func = getattr(cls, method)
        if isinstance(attr, (staticmethod, classmethod)) or not callable(func):
            raise HandlerError(f"{name}.{method} must be a plain method: {expected}")
        if not inspect.iscoroutinefunction(func):
            kind = "an async generator" if inspect.isasyncgenfunction(func) else "a plain 'def'"
            raise HandlerError(f"{name}.{method} must be {expected}; it is {kind}")
        if not _accepts(func, len(params) + 1, _KEYWORDS.get(method, ())):
            try:
                actual = f"def {method}{inspect.signature(func)}"
            except (TypeError, ValueError):  # pragma: no cover - checked above
                actual = method
            raise HandlerError(f"{name}.{method} must be {expected}; it is {actual}")
        found[method] = True
        funcs[method] = func
    ws = [m for m in _WS_CALLBACKS if found[m]]
    handle = funcs["handle"]
    # StaticMixin.handle upgrades only when the handler accepts WebSockets.
    trusted = getattr(handle, "__module__", "") == "peregrine_rt.mixins"
    if not found["on_message"] and not trusted and _calls_upgrade(handle):
        raise HandlerError(
            f"{name}.handle calls upgrade() but {name} has no on_message: a handler that "
            f"accepts WebSockets needs {_expected('on_message')}"
        )
    if ws and not found["on_message"]:
        raise HandlerError(
            f"{name} defines {', '.join(ws)} but not on_message: a handler that accepts "
            f"WebSockets needs {_expected('on_message')}"
        )
    return HandlerSpec(
        cls=cls,
        name=name,
        has_startup=found["startup"],
        has_shutdown=found["shutdown"],
        has_background=found["background"],
        background_reports_ready=found["background"]
        and "task_status" in inspect.signature(funcs["background"]).parameters,
        has_websocket=found["on_message"],
        has_on_open=found["on_open"],
        has_on_close=found["on_close"],
    )
