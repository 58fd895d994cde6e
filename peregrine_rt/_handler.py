"""The handler contract, checked when a server is built.

A handler is a plain class.  ``Server(Handler)`` calls :func:`check_handler`,
which refuses a class that cannot work — no ``handle``, a plain ``def`` where
``async def`` is needed, the wrong number of parameters — with a
:class:`~peregrine_rt.exceptions.HandlerError` naming the class, the method and
the signature expected.  It is Python's answer to a compile error: the mistake
shows up when the server is built, not on the first request.

A misspelt hook is the same kind of mistake, and Python would never report
it: ``on_mesage`` is a perfectly good method that nothing calls.
:func:`near_miss` finds the methods whose names look like a hook but are not
one (``onMessage``, ``on_mesage``, ``handel``, or another framework's name,
``on_connect``), and ``check_handler`` refuses them with the hook they
probably meant.  It errs on the side of silence: a helper named after a hook
(``handle_ws``, ``on_message_json``), a different word of the same stem
(``start``, ``handler``), a name that does not start with ``on`` next to an
``on_*`` hook (``message``, ``close``) and a private name (``_connect``) all
pass.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .exceptions import HandlerError

if TYPE_CHECKING:
    from collections.abc import Container, Iterable

__all__ = ["HandlerSpec", "check_handler", "near_miss"]

# method name -> (parameters after self, required?)
_CONTRACT: dict[str, tuple[tuple[str, ...], bool]] = {
    "handle": (("request", "response"), True),
    "startup": ((), False),
    "background": ((), False),
    "shutdown": ((), False),
    "on_open": (("ws",), False),
    "on_message": (("ws", "message"), False),
    "on_close": (("ws", "code", "reason"), False),
    "authenticate": (("request",), False),
}
_WS_CALLBACKS = ("on_open", "on_message", "on_close")
# keyword arguments the server may pass: background() can report when it is ready
_KEYWORDS: dict[str, tuple[str, ...]] = {"background": ("task_status",)}

# How close (difflib's ratio) a name must be to a hook to be taken for a typo
# of it.  0.8 takes on_mesage (0.95), handel (0.83), on_opne (0.86) and leaves
# the on_* names people use for their own callbacks: on_json, on_join, on_ping,
# on_pong (all 0.71 against on_open), on_leave, on_event, on_closing (0.78).
NEAR_MISS_CUTOFF = 0.8
# Other frameworks' names for our hooks (JavaScript's onopen, Django Channels'
# connect/receive/disconnect, Starlette's on_startup, ...), keyed by the name
# lowercased with its underscores removed, so on_connect, onConnect and
# onconnect are one entry.
_ALIASES: dict[str, str] = {
    "onconnect": "on_open",
    "onconnected": "on_open",
    "connect": "on_open",
    "ondisconnect": "on_close",
    "ondisconnected": "on_close",
    "disconnect": "on_close",
    "onreceive": "on_message",
    "onrecv": "on_message",
    "onmsg": "on_message",
    "receive": "on_message",
    "onrequest": "handle",
    "onstart": "startup",
    "onstartup": "startup",
    "onstop": "shutdown",
    "onshutdown": "shutdown",
    "onauthenticate": "authenticate",
}
# Modules whose classes define hooks on purpose: the mixins (their methods
# are never near misses) and the Protocols (whose stubs are not hooks).
_OWN_MODULES = ("peregrine_rt.mixins", "peregrine_rt.handlers")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# A mixin's setting: a class variable it declares without a value
# (``static: ClassVar[DirServer]``), which the handler class must give.
_SETTING = re.compile(r"(?:typing\.)?ClassVar\[(?P<type>\w+)\]")


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


def _normalise(name: str) -> str:
    """``onMessage`` -> ``on_message``: camelCase split into snake_case, lowercased."""
    return _CAMEL.sub("_", name).lower()


def near_miss(name: str, hooks: Iterable[str], defined: Container[str] = ()) -> str | None:
    """The hook that the method ``name`` was probably meant to be, or ``None``.

    Args:
        name: a public method name that is not itself a hook.
        hooks: the hooks the server calls (with the mixins' own, ``on_json``).
        defined: the hooks the class does define.  A plain word that another
            framework uses for a hook (``connect``, ``receive``) is a near miss
            only while the class lacks the hook it stands for: next to an
            ``on_open``, ``connect`` is a helper.

    A name is a near miss when, once camelCase is split and it is lowercased,
    it is a hook spelt with other underscores (``onMessage``, ``shut_down``),
    another framework's name for one (:data:`_ALIASES`), or within
    :data:`NEAR_MISS_CUTOFF` of one by :func:`difflib.get_close_matches` —
    except a helper named after the hook (``handle_ws``, ``on_message_json``),
    a different word of the same stem (``start``, ``handler``; an ``on_`` name
    such as ``on_messages`` is still a near miss), and a name not starting with
    ``on`` measured against an ``on_*`` hook (``message``, ``close``).
    """
    hooks = list(hooks)
    snake = _normalise(name)
    compact = snake.replace("_", "")
    for hook in hooks:
        if hook.replace("_", "") == compact:
            return hook
    alias = _ALIASES.get(compact)
    if alias in hooks:
        if snake.startswith("on") or alias not in defined:
            return alias
        return None
    is_on = snake.startswith("on")
    pool = [hook for hook in hooks if is_on or not hook.startswith("on_")]
    for hook in difflib.get_close_matches(snake, pool, n=1, cutoff=NEAR_MISS_CUTOFF):
        if snake.startswith(f"{hook}_") or snake.endswith(f"_{hook}"):
            return None  # a helper named after the hook: handle_ws, on_message_json
        if not is_on and (snake.startswith(hook) or hook.startswith(snake)):
            return None  # another word of the same stem: start/startup, handler/handle
        return hook
    return None


def _check_near_misses(cls: type, name: str, contract: dict[str, tuple[str, ...]]) -> None:
    """Refuse a public method of ``cls`` whose name is a near miss of a hook."""
    defined = {m for m in contract if _lookup(cls, m) is not None}
    seen: set[str] = set(contract)
    for base in cls.__mro__:
        if base is object or base.__module__ in _OWN_MODULES:
            continue
        for attr, value in vars(base).items():
            if attr.startswith("_") or attr in seen:
                continue
            seen.add(attr)
            func = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if not inspect.isroutine(func):
                continue  # attributes, properties, nested classes: not methods
            hook = near_miss(attr, contract, defined)
            if hook is None:
                continue
            where = "" if base is cls else f" (defined in {base.__qualname__})"
            params = ", ".join(("self", *contract[hook]))
            raise HandlerError(
                f"{name}.{attr}{where} is not a hook peregrine_rt calls: did you mean "
                f"{hook}? The hook is async def {hook}({params}); rename the method, or "
                "start its name with '_' if it is a helper"
            )


def _lookup(cls: type, method: str) -> Any:
    """``method`` as defined on ``cls`` (without binding), ``None`` if it has none.

    A Protocol's stub (``class Echo(pr.WebSocketHandler)`` that does not define
    ``on_message`` itself) is not a method: it would do nothing when called.
    """
    for base in cls.__mro__:
        if method in vars(base):
            return None if base.__module__ == "peregrine_rt.handlers" else vars(base)[method]
    return None


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


def _check_settings(handler: type | object, cls: type, name: str) -> None:
    """Refuse a handler without a setting its mixins need (StaticMixin's ``static``).

    Without this check the server would start and answer every request the
    mixin handles with 500 (an ``AttributeError`` at request time).
    """
    for base in cls.__mro__:
        if base.__module__ != "peregrine_rt.mixins":
            continue
        for attr, annotation in inspect.get_annotations(base).items():
            match = _SETTING.fullmatch(str(annotation))
            if match is None or attr in vars(base):
                continue
            if getattr(handler, attr, None) is None:
                raise HandlerError(
                    f"{name} uses {base.__name__} but has no {attr!r} attribute, which "
                    f"{base.__name__} needs: set it on the class, e.g. "
                    f"{attr} = pr.{match['type']}(...)"
                )


def check_handler(handler: type | object, *, websocket_only: bool = False) -> HandlerSpec:
    """Check ``handler`` (a class, or an instance of one) against the contract.

    Args:
        websocket_only: check a handler that only takes WebSockets (a
            router's WebSocket route answers the handshake itself): it needs
            ``on_message`` and may lack ``handle``.

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
    if websocket_only:
        contract["handle"] = (contract["handle"][0], False)
        contract["on_message"] = (contract["on_message"][0], True)
    _check_near_misses(cls, name, {method: params for method, (params, _) in contract.items()})
    for method, (params, required) in contract.items():
        attr = _lookup(cls, method)
        expected = f"async def {method}({', '.join(('self', *params))})"
        if attr is None:
            if required:
                who = "a WebSocket-only handler" if websocket_only else "a handler"
                raise HandlerError(f"{name} has no '{method}' method; {who} needs {expected}")
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
    _check_settings(handler, cls, name)
    ws = [m for m in _WS_CALLBACKS if found[m]]
    handle = funcs.get("handle")
    # StaticMixin.handle upgrades only when the handler accepts WebSockets.
    trusted = getattr(handle, "__module__", "") == "peregrine_rt.mixins"
    if handle is not None and not found["on_message"] and not trusted and _calls_upgrade(handle):
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
