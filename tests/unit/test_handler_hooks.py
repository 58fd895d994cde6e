"""``Server(Handler)`` refuses a method whose name is a near miss of a hook.

``on_mesage`` is a valid method that the server would never call: the check
turns that silent mistake into a ``HandlerError`` naming the class, the
method and the hook it probably meant.  Just as important is what it lets
through: the names of ordinary helpers, of the mixins' hooks, and of every
handler the project ships.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt.mixins import JSONMixin, PresenceMixin, RoomsMixin, StaticMixin


class Plain:
    """An HTTP handler: no WebSocket hook defined."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text("ok")


class Full(Plain):
    """Every hook defined."""

    async def startup(self) -> None: ...

    async def background(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def on_open(self, ws: pr.WebSocket) -> None: ...

    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...

    async def on_close(self, ws: pr.WebSocket, code: int, reason: str) -> None: ...


async def method(self: Any, *args: Any) -> None:
    """The body of every method the tests add: only the names matter here."""


def handler(name: str, base: type, **methods: Any) -> type:
    """A class called ``name`` deriving from ``base``, with ``methods`` added."""
    return type(name, (base,), methods)


def refusal(cls: Any) -> str:
    with pytest.raises(pr.HandlerError) as info:
        pr.Server(cls)
    return str(info.value)


# (the method's name, the hook it should be taken for)
MISSES = [
    ("on_mesage", "on_message"),
    ("onMessage", "on_message"),
    ("OnMessage", "on_message"),
    ("onmessage", "on_message"),
    ("on_messages", "on_message"),
    ("on_msg", "on_message"),
    ("on_receive", "on_message"),
    ("on_connect", "on_open"),
    ("onOpen", "on_open"),
    ("on_opne", "on_open"),
    ("on_opened", "on_open"),
    ("on_disconnect", "on_close"),
    ("onClose", "on_close"),
    ("on_cose", "on_close"),
    ("handel", "handle"),
    ("on_request", "handle"),
    ("startUp", "startup"),
    ("on_startup", "startup"),
    ("shut_down", "shutdown"),
    ("on_shutdown", "shutdown"),
    ("backgroud", "background"),
]


@pytest.mark.parametrize("base", [Plain, Full], ids=["http-handler", "every-hook-defined"])
@pytest.mark.parametrize(("name", "hook"), MISSES, ids=[m[0] for m in MISSES])
def test_a_near_miss_is_refused_with_the_hook_it_meant(base: type, name: str, hook: str) -> None:
    message = refusal(handler("Chat", base, **{name: method}))
    assert message.startswith(
        f"Chat.{name} is not a hook peregrine_rt calls: did you mean {hook}?"
    ), message
    assert f"async def {hook}(self" in message, message  # the hook's signature


# Django Channels' names are plain words: a near miss only while the class
# lacks the hook they stand for.
CHANNELS = [("connect", "on_open"), ("receive", "on_message"), ("disconnect", "on_close")]


@pytest.mark.parametrize(("name", "hook"), CHANNELS, ids=[c[0] for c in CHANNELS])
def test_another_frameworks_plain_word_is_a_near_miss_without_the_hook(
    name: str, hook: str
) -> None:
    message = refusal(handler("Consumer", Plain, **{name: method}))
    assert f"Consumer.{name} is not a hook peregrine_rt calls: did you mean {hook}?" in message


@pytest.mark.parametrize(("name", "hook"), CHANNELS, ids=[c[0] for c in CHANNELS])
def test_another_frameworks_plain_word_is_a_helper_next_to_the_hook(name: str, hook: str) -> None:
    pr.Server(handler("Chat", Full, **{name: method}))


def test_a_misspelt_handle_is_named_rather_than_reported_missing() -> None:
    class Typo:
        async def handel(self, request: pr.Request, response: pr.Response) -> None: ...

    message = refusal(Typo)
    assert "Typo.handel is not a hook peregrine_rt calls: did you mean handle?" in message
    assert "async def handle(self, request, response)" in message


class TypoBase(Plain):
    async def on_mesage(self, ws: pr.WebSocket, message: str | bytes) -> None: ...


class InheritsTypo(TypoBase):
    async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...


def test_an_inherited_near_miss_names_the_class_that_defines_it() -> None:
    # The classic case: the subclass's hook is right, the base's is not.
    message = refusal(InheritsTypo)
    assert message.startswith(
        "InheritsTypo.on_mesage (defined in TypoBase) is not a hook peregrine_rt calls: "
        "did you mean on_message?"
    ), message


def test_static_and_class_methods_are_checked_too() -> None:
    assert "Chat.onOpen is not a hook" in refusal(handler("Chat", Plain, onOpen=staticmethod(len)))
    assert "Chat.on_cose is not a hook" in refusal(
        handler("Chat", Plain, on_cose=classmethod(method))
    )


def test_an_instance_is_checked_like_its_class() -> None:
    cls = handler("Chat", Plain, on_mesage=method)
    assert "Chat.on_mesage is not a hook" in refusal(cls())


def test_a_mixins_hook_is_a_hook_and_has_near_misses() -> None:
    class Live(JSONMixin, Plain):
        async def on_jsn(self, ws: pr.WebSocket, data: Any) -> None: ...

    assert "Live.on_jsn is not a hook peregrine_rt calls: did you mean on_json?" in refusal(Live)


# Names that are not hooks and must stay accepted: the on_* callbacks people
# write for themselves, helpers named after a hook, other words of a hook's
# stem, plain words next to an on_* hook, private names.
ACCEPTED = [
    "on_json",
    "on_join",
    "on_leave",
    "on_error",
    "on_ping",
    "on_pong",
    "on_event",
    "on_text",
    "on_binary",
    "on_presence",
    "on_closing",
    "on_message_json",
    "on_close_cb",
    "handle_ws",
    "handle_request",
    "handleRequest",
    "handler",
    "handles",
    "start",
    "stop",
    "run",
    "setup",
    "teardown",
    "message",
    "messages",
    "open",
    "close",
    "send",
    "broadcast",
    "online",
    "once",
    "do_join",
    "_on_mesage",
    "_connect",
    "__call__",
]


@pytest.mark.parametrize("base", [Plain, Full], ids=["http-handler", "every-hook-defined"])
@pytest.mark.parametrize("name", ACCEPTED)
def test_an_ordinary_method_name_is_accepted(base: type, name: str) -> None:
    server = pr.Server(handler("Chat", base, **{name: method}))
    assert server.spec.name == "Chat"


def test_only_methods_are_looked_at() -> None:
    class Handler:
        pass

    cls = handler(
        "Chat",
        Plain,
        on_msg="a class attribute",
        handel=Handler,  # a class is callable, but not a method
        on_opne=property(lambda self: None),
    )
    pr.Server(cls)


def test_the_mixins_compose_without_a_near_miss() -> None:
    class Chat(PresenceMixin, RoomsMixin, JSONMixin, StaticMixin):
        static = pr.DirServer(".")

        async def on_json(self, ws: pr.WebSocket, data: Any) -> None: ...

    assert pr.Server(Chat).spec.has_websocket


SHIPPED = [
    "examples.counter:Counter",
    "examples.echo:Echo",
    "examples.rooms:Rooms",
    "examples.live:Live",
    "examples.dirserver:DirServerApp",
    "examples.chat.app:Chat",
    "examples.tutorial.step1:Chat",
    "examples.tutorial.step2:Chat",
    "examples.tutorial.step3:Chat",
    "examples.tutorial.step4:Chat",
    "examples.tutorial.step5:Chat",
    "examples.tutorial.step6:Chat",
]


@pytest.mark.parametrize("target", SHIPPED)
def test_every_shipped_handler_is_accepted(target: str) -> None:
    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert pr.Server(cls).spec.name == name


# -- the Protocols at run time --------------------------------------------------


def test_a_protocol_subclass_is_checked_like_any_class() -> None:
    class Echo(pr.WebSocketHandler):
        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

        async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...

    assert pr.Server(Echo).spec.has_websocket


def test_a_protocols_stub_does_not_count_as_a_hook() -> None:
    # Subclassing the Protocol inherits its do-nothing stubs: they must not
    # hide a missing method from the check.
    class NoHandle(pr.HTTPHandler):
        pass

    class NoOnMessage(pr.WebSocketHandler):
        async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

        async def on_open(self, ws: pr.WebSocket) -> None: ...

    assert "NoHandle has no 'handle' method" in refusal(NoHandle)
    assert "NoOnMessage defines on_open but not on_message" in refusal(NoOnMessage)
    assert not pr.Server(
        type("Http", (pr.WebSocketHandler,), {"handle": Plain.handle})
    ).spec.has_websocket
