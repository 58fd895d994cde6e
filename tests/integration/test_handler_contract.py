"""``Server(Handler)`` checks the handler contract at once, and calls the lifecycle hooks."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
import trio.testing

from peregrine_rt import Config, HandlerError, Request, Response, Server

from .conftest import Reader, get, open_server

HANDLE_SIG = "async def handle(self, request, response)"


class NoHandle:
    async def startup(self) -> None: ...


class SyncHandle:
    def handle(self, request: Request, response: Response) -> None: ...


class OneParam:
    async def handle(self, request: Request) -> None: ...


class ThreeParams:
    async def handle(self, request: Request, response: Response, extra: Any) -> None: ...


class AsyncGenHandle:
    async def handle(self, request: Request, response: Response) -> Any:
        yield None


class SyncStartup:
    async def handle(self, request: Request, response: Response) -> None: ...

    def startup(self) -> None: ...


class SyncShutdown:
    async def handle(self, request: Request, response: Response) -> None: ...

    def shutdown(self) -> None: ...


class SyncOnMessage:
    async def handle(self, request: Request, response: Response) -> None: ...

    def on_message(self, ws: Any, message: Any) -> None: ...


class OnOpenOnly:
    async def handle(self, request: Request, response: Response) -> None: ...

    async def on_open(self, ws: Any) -> None: ...


class StaticHandle:
    @staticmethod
    async def handle(request: Request, response: Response) -> None: ...


class NeedsArgs:
    def __init__(self, db: object) -> None:
        self.db = db

    async def handle(self, request: Request, response: Response) -> None: ...


# (class, method named in the message, expected signature in the message, extra text)
BAD: list[tuple[type, str, str, str]] = [
    (NoHandle, "handle", HANDLE_SIG, "no 'handle'"),
    (SyncHandle, "handle", HANDLE_SIG, "plain 'def'"),
    (OneParam, "handle", HANDLE_SIG, "it is def handle(self, request"),
    (ThreeParams, "handle", HANDLE_SIG, "extra"),
    (AsyncGenHandle, "handle", HANDLE_SIG, "async generator"),
    (SyncStartup, "startup", "async def startup(self)", "plain 'def'"),
    (SyncShutdown, "shutdown", "async def shutdown(self)", "plain 'def'"),
    (SyncOnMessage, "on_message", "async def on_message(self, ws, message)", "plain 'def'"),
    (OnOpenOnly, "on_message", "async def on_message(self, ws, message)", "on_open"),
    (StaticHandle, "handle", HANDLE_SIG, "plain method"),
]


@pytest.mark.parametrize(
    ("cls", "method", "signature", "detail"), BAD, ids=[b[0].__name__ for b in BAD]
)
def test_contract_violation_names_class_method_and_signature(
    cls: type, method: str, signature: str, detail: str
) -> None:
    with pytest.raises(HandlerError) as info:
        Server(cls)
    message = str(info.value)
    assert re.search(rf"\b{cls.__qualname__}\b", message), message
    assert method in message, message
    assert signature in message, message
    assert detail in message, message


def test_contract_checked_for_instances_too() -> None:
    with pytest.raises(HandlerError, match=r"SyncHandle\.handle must be async def handle"):
        Server(SyncHandle())


def test_class_needing_constructor_arguments_is_refused() -> None:
    with pytest.raises(HandlerError) as info:
        Server(NeedsArgs)
    message = str(info.value)
    assert "NeedsArgs" in message
    assert "db" in message  # the signature that cannot be called
    assert "instance" in message  # the way out


def test_contract_error_is_raised_before_anything_is_bound() -> None:
    # A bad handler fails when the server is built: no config is even looked at.
    with pytest.raises(HandlerError):
        Server(SyncHandle, Config(port=0), host="256.256.256.256")


class WithDefaults:
    async def handle(self, request: Request, response: Response, extra: int = 0) -> None:
        response.text(f"extra={extra}")


class WithVarArgs:
    async def handle(self, *args: Any) -> None:
        args[1].text(f"nargs={len(args)}")


class WithInitDefaults:
    def __init__(self, greeting: str = "hi", *args: Any, **kwargs: Any) -> None:
        self.greeting = greeting

    async def handle(self, request: Request, response: Response) -> None:
        response.text(self.greeting)


class NeedsArgsButGivenAnInstance(NeedsArgs):
    async def handle(self, request: Request, response: Response) -> None:
        response.text(f"db={self.db}")


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (WithDefaults, b"extra=0"),
        (WithVarArgs, b"nargs=2"),
        (WithInitDefaults, b"hi"),
        (NeedsArgsButGivenAnInstance("sqlite"), b"db=sqlite"),
    ],
    ids=["defaults", "varargs", "init-defaults", "instance"],
)
async def test_valid_handlers_are_accepted_and_serve(handler: Any, expected: bytes) -> None:
    async with open_server(handler) as h:
        stream = await h.connect()
        await stream.send_all(get("/"))
        resp = await Reader(stream).response()
        assert resp.status == 200
        assert resp.body == expected


async def test_an_instance_is_used_as_is() -> None:
    instance = NeedsArgsButGivenAnInstance("x")
    async with open_server(instance) as h:
        assert h.server.handler_instance is instance


class Lifecycle:
    instances = 0

    def __init__(self) -> None:
        Lifecycle.instances += 1
        self.calls: list[str] = []

    async def startup(self) -> None:
        await trio.sleep(0)
        self.calls.append("startup")

    async def handle(self, request: Request, response: Response) -> None:
        self.calls.append(f"handle {request.path}")
        response.text(f"{len(self.calls)}")

    async def shutdown(self) -> None:
        await trio.sleep(0)
        self.calls.append("shutdown")


async def test_startup_and_shutdown_are_called_once_around_serving() -> None:
    Lifecycle.instances = 0
    server = Server(Lifecycle, Config(shutdown_grace=1))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve_listeners, [])
        handler = server.handler_instance
        # startup() has completed before serving is reported as started
        assert handler.calls == ["startup"]
        for path in ("/a", "/b"):
            client, srv = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, srv)
            await client.send_all(get(path, "Connection: close"))
            resp = await Reader(client).response()
            assert resp.status == 200
            await Reader(client).expect_eof()
            await client.aclose()
        await server.aclose()
        assert handler.calls == ["startup", "handle /a", "handle /b", "shutdown"]
        await server.aclose()  # idempotent: no second shutdown()
    assert handler.calls == ["startup", "handle /a", "handle /b", "shutdown"]
    assert Lifecycle.instances == 1  # one instance per server, shared by connections


class FailingShutdown:
    async def handle(self, request: Request, response: Response) -> None:
        response.text("ok")

    async def shutdown(self) -> None:
        raise RuntimeError("shutdown broke")


async def test_a_failing_shutdown_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async with open_server(FailingShutdown):
        pass
    records = [r for r in caplog.records if r.name == "peregrine_rt.error"]
    assert any("FailingShutdown.shutdown() raised" in r.getMessage() for r in records)
