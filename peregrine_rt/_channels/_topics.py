"""Topic patterns and topic classes: what a :class:`Channels` app declares, checked at build.

A topic class holds the callbacks of the topics one pattern matches::

    @topic("room:{name}")
    class Room:
        async def join(self, socket, params): ...        # may raise Refuse("reason")
        async def on_new_msg(self, socket, payload): ...  # event "new_msg"; returns the reply
        async def leave(self, socket): ...

A pattern is text with ``{name}`` parameters, each matching one or more
characters other than ``:`` (``"room:{name}"`` matches ``room:lobby``, not
``room:a:b``), and may end with ``*``, matching any rest (``"user:*"``, as in
Phoenix).  The parameters land in ``socket.params``.  A topic matches the
pattern without parameters that equals it first, then the patterns in the
order of declaration.

Everything here runs when the server is built (:func:`check_topic_class`,
:func:`compile_pattern`): a malformed or clashing pattern, a callback with
the wrong signature, a misspelt callback name are a
:class:`~peregrine_rt.exceptions.HandlerError` naming the class and method,
never a surprise on the first join.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .._handler import NEAR_MISS_CUTOFF
from ..exceptions import HandlerError
from ._phoenix import PHOENIX_TOPIC, RESERVED_EVENTS

if TYPE_CHECKING:
    from ._history import History

__all__ = [
    "Refuse",
    "TopicSpec",
    "check_topic_class",
    "compile_pattern",
    "topic",
]

_PARAM: Final = re.compile(r"\{([^{}]*)\}")
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EVENT_PREFIX: Final = "on_"
# Callbacks of a topic class (name -> parameters after self); on_<event> and
# handle_in are the event callbacks.
_CALLBACKS: Final = {
    "join": ("socket", "params"),
    "leave": ("socket",),
    "handle_in": ("socket", "event", "payload"),
    "presence_key": ("socket",),
    "presence_meta": ("socket",),
}

T = TypeVar("T", bound=type)


class Refuse(Exception):
    """Raise it from a topic's ``join`` to refuse the join with ``reason``.

    The client gets ``{"status": "error", "response": {"reason": reason}}``
    (plus ``details``, when given, as more keys of the response).

    It can also be raised from an event callback: the client then gets an
    error reply with that reason, and the join stays.
    """

    def __init__(self, reason: str = "unauthorized", **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled topic pattern."""

    text: str
    regex: re.Pattern[str] | None  # None: a literal topic
    params: tuple[str, ...]
    shape: str  # the pattern with every parameter as "{}": two equal shapes clash

    def match(self, name: str) -> dict[str, str] | None:
        """The parameters if ``name`` matches, else None."""
        if self.regex is None:
            return {} if name == self.text else None
        found = self.regex.fullmatch(name)
        return None if found is None else found.groupdict()


def compile_pattern(text: str, where: str) -> Pattern:
    """Compile a topic pattern, refusing a malformed one (HandlerError naming ``where``)."""

    def bad(why: str) -> HandlerError:
        return HandlerError(f"{where}: topic pattern {text!r} {why}")

    if not isinstance(text, str) or not text:
        raise bad("must be a non-empty string")
    if text == PHOENIX_TOPIC:
        raise bad("is reserved for heartbeats")
    body, wildcard = (text[:-1], True) if text.endswith("*") else (text, False)
    if "*" in body:
        raise bad("may hold '*' only at its end")
    params: list[str] = []
    regex = ""
    shape = ""
    last = 0
    for found in _PARAM.finditer(body):
        literal = body[last : found.start()]
        if "{" in literal or "}" in literal:
            raise bad("has an unbalanced '{' or '}'")
        if found.start() == last and last and params and body[last - 1] == "}":
            raise bad("has two parameters with nothing between them")
        name = found.group(1)
        if not _IDENT.fullmatch(name):
            raise bad(f"has a parameter {{{name}}} that is not a Python identifier")
        if name in params:
            raise bad(f"names the parameter {{{name}}} twice")
        params.append(name)
        regex += re.escape(literal) + f"(?P<{name}>[^:]+)"
        shape += literal + "{}"
        last = found.end()
    rest = body[last:]
    if "{" in rest or "}" in rest:
        raise bad("has an unbalanced '{' or '}'")
    regex += re.escape(rest)
    shape += rest
    if wildcard:
        regex += ".*"
        shape += "*"
    if not params and not wildcard:
        return Pattern(text, None, (), shape)
    return Pattern(text, re.compile(regex, re.DOTALL), tuple(params), shape)


@dataclass(frozen=True, slots=True)
class TopicOptions:
    """What :func:`topic` records on a topic class."""

    pattern: str
    history: History | bool | None = None
    presence: bool = False
    conflate: Callable[[Any], Any] | None = None


def topic(
    pattern: str,
    *,
    history: History | bool | None = None,
    presence: bool = False,
    conflate: Callable[[Any], Any] | None = None,
) -> Callable[[T], T]:
    """Declare a topic class: the callbacks of the topics that match ``pattern``.

    Args:
        pattern: ``"room:{name}"``, ``"news"``, ``"user:*"`` (see the module docs).
        history: keep the topic's publications in this backend (``None``:
            the ``history`` of the :class:`Channels` class; ``False``: none);
            joins may then recover with ``since``.
        presence: track who joined (``presence_state`` after the join,
            ``presence_diff`` broadcasts).
        conflate: ``key(payload) -> hashable``: for a slow consumer, only the
            newest queued broadcast per key is kept.
    """
    options = TopicOptions(pattern, history, presence, conflate)

    def mark(cls: T) -> T:
        if not isinstance(cls, type):
            raise TypeError(f"@topic({pattern!r}) decorates a class, not {cls!r}")
        cls.__channel_topic__ = options  # type: ignore[attr-defined]  # a marker read by Channels
        return cls

    return mark


def topic_options(value: object) -> TopicOptions | None:
    """The options of a class decorated with :func:`topic`, else None."""
    if not isinstance(value, type):
        return None
    options = vars(value).get("__channel_topic__")
    return options if isinstance(options, TopicOptions) else None


@dataclass(slots=True)
class TopicSpec:
    """A checked topic class, with its instance and callbacks (one per Channels instance)."""

    name: str
    pattern: Pattern
    options: TopicOptions
    instance: Any
    join: Any = None
    leave: Any = None
    handle_in: Any = None
    presence_key: Any = None
    presence_meta: Any = None
    events: dict[str, Any] = field(default_factory=dict)


def _accepts(func: Any, nargs: int) -> bool:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return True
    params = list(sig.parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if any(
        p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        for p in params
    ):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return len(required) <= nargs
    return len(required) <= nargs <= len(positional)


def _check_method(cls: type, name: str, params: tuple[str, ...], where: str) -> Any:
    func = inspect.getattr_static(cls, name)
    expected = f"async def {name}({', '.join(('self', *params))})"
    if isinstance(func, (staticmethod, classmethod)) or not callable(func):
        raise HandlerError(f"{where}.{name} must be a plain method: {expected}")
    if not inspect.iscoroutinefunction(func):
        raise HandlerError(f"{where}.{name} must be {expected}; it is a plain 'def'")
    if not _accepts(func, len(params) + 1):
        raise HandlerError(
            f"{where}.{name} must be {expected}; it is def {name}{inspect.signature(func)}"
        )
    return func


def _near_miss(name: str) -> str | None:
    """The callback ``name`` was probably meant to be (``joinn``, ``on_leave`` aside)."""
    snake = name.lower()
    for hook in difflib.get_close_matches(snake, _CALLBACKS, n=1, cutoff=NEAR_MISS_CUTOFF):
        if snake.startswith(f"{hook}_") or snake.endswith(f"_{hook}"):
            return None  # a helper named after it: join_room, handle_in_batch
        return hook
    return None


def check_topic_class(
    cls: type, options: TopicOptions, owner: str, *, instantiate: bool = True
) -> TopicSpec:
    """Check a topic class and make its instance (HandlerError naming what is wrong).

    With ``instantiate=False`` only the checks run (when the Channels class is
    defined); the instance's bound callbacks are then missing from the spec.
    """
    where = f"{owner}.{cls.__qualname__.rpartition('.')[2]}"
    pattern = compile_pattern(options.pattern, where)
    if options.conflate is not None and not callable(options.conflate):
        raise HandlerError(f"{where}: conflate= must be a function of the payload")
    instance: Any = None
    if instantiate:
        try:
            instance = cls()
        except TypeError as exc:
            raise HandlerError(f"{where}() must be callable without arguments ({exc})") from None
    spec = TopicSpec(where, pattern, options, instance)
    for attr in dir(cls):
        if attr.startswith("_") or not inspect.isroutine(inspect.getattr_static(cls, attr)):
            continue
        bound = getattr(instance, attr) if instantiate else None
        if attr in _CALLBACKS:
            _check_method(cls, attr, _CALLBACKS[attr], where)
            setattr(spec, attr, bound)
        elif attr.startswith(_EVENT_PREFIX):
            event = attr[len(_EVENT_PREFIX) :]
            if event in RESERVED_EVENTS or event in ("join", "leave", "close", "error", "reply"):
                meant = {"join": "join", "leave": "leave"}.get(event, "handle_in")
                raise HandlerError(
                    f"{where}.{attr}: {event!r} is a protocol event, not an app event: "
                    f"did you mean async def {meant}({', '.join(('self', *_CALLBACKS[meant]))})?"
                )
            _check_method(cls, attr, ("socket", "payload"), where)
            spec.events[event] = bound
        else:
            hook = _near_miss(attr)
            if hook is not None:
                raise HandlerError(
                    f"{where}.{attr} is not a callback Channels calls: did you mean {hook}? "
                    f"The callback is async def {hook}({', '.join(('self', *_CALLBACKS[hook]))}); "
                    "rename it, or start its name with '_' if it is a helper"
                )
    return spec


def check_patterns(specs: list[TopicSpec], owner: str) -> None:
    """Refuse two topic classes whose patterns match the same topics by the same shape."""
    seen: dict[str, TopicSpec] = {}
    for spec in specs:
        other = seen.get(spec.pattern.shape)
        if other is not None:
            raise HandlerError(
                f"{owner}: the topic patterns {other.pattern.text!r} ({other.name}) and "
                f"{spec.pattern.text!r} ({spec.name}) clash: they match the same topics"
            )
        seen[spec.pattern.shape] = spec
