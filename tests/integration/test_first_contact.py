"""First contact (issue 20): a new user's mistakes get one clear answer, in Python.

The command line's answers are in ``test_cli.py``, the pytest plugin's in
``tests/testing/test_plugin.py``; ``docs/mistakes.rst`` quotes them all.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_client


class Hello:
    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        response.text(f"{request.method} {len(await request.body())}")


# -- item 2: the test client refuses what it does not know ----------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"jsn": {"a": 1}}, "unexpected keyword argument 'jsn'; did you mean 'json'?"),
        ({"header": {"x": "1"}}, "unexpected keyword argument 'header'; did you mean 'headers'?"),
        ({"body": b"x"}, "unexpected keyword argument 'body' (a request takes params, headers"),
        ({"file": {"f": b"x"}}, "unexpected keyword argument 'file'; did you mean 'files'?"),
        ({"json": {}, "files": {"f": b"x"}}, "give one body, not json and files"),
    ],
    ids=["jsn", "header", "body", "file", "json-and-files"],
)
async def test_unknown_request_options_raise_type_error(
    options: dict[str, Any], message: str
) -> None:
    async with open_client(Hello) as client:
        with pytest.raises(TypeError) as raised:
            await client.post("/upload", **options)
        assert message in str(raised.value)
        with pytest.raises(TypeError):
            async with client.stream("POST", "/upload", **options):
                pass  # pragma: no cover - refused before the request is sent
        async with client.connection() as conn:
            with pytest.raises(TypeError):
                await conn.request("POST", "/upload", **options)
        # The known options still work, on the same client.
        assert (await client.post("/upload", json={"a": 1})).text == "POST 8"


# -- item 3: binding and start-up errors come out as themselves -----------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_run_on_a_busy_port_raises_os_error(busy_port: int) -> None:
    with pytest.raises(OSError) as raised:
        pr.run(Hello, host="127.0.0.1", port=busy_port)
    assert type(raised.value) is OSError  # not an ExceptionGroup around it
    assert raised.value.errno == errno.EADDRINUSE
    assert raised.value.__context__ is None  # no group chained to it either


async def test_serve_on_a_busy_port_raises_os_error(busy_port: int) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError) as raised:
            await nursery.start(pr.Server(Hello, host="127.0.0.1", port=busy_port).serve)
    assert raised.value.errno == errno.EADDRINUSE


class SidePort:
    """A handler whose background() fails before it reports ready."""

    async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

    async def background(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError(errno.EADDRINUSE, "the side port is taken")


async def test_background_failing_before_ready_raises_itself_from_serve() -> None:
    # background() runs two nurseries deep: serve() used to unwrap only one.
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="the side port is taken"):
            await nursery.start(pr.Server(SidePort, port=0).serve_listeners, [])


def test_background_failing_before_ready_raises_itself_from_run() -> None:
    with pytest.raises(OSError, match="the side port is taken"):
        pr.run(SidePort, host="127.0.0.1", port=0)


# -- item 10: StaticMixin without `static` fails when the server is built -------------


class Site(pr.StaticMixin):
    """No ``static``: the server used to start, then answer every GET with 500."""


def test_static_mixin_without_static_is_refused_when_built() -> None:
    with pytest.raises(pr.HandlerError) as raised:
        pr.Server(Site)
    assert str(raised.value) == (
        "Site uses StaticMixin but has no 'static' attribute, which StaticMixin needs: "
        "set it on the class, e.g. static = pr.DirServer(...)"
    )
    with pytest.raises(pr.HandlerError):
        pr.Server(Site())  # an instance without it too


async def test_static_mixin_with_static_on_the_class_or_instance_serves(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hi")

    class Files(pr.StaticMixin):
        static = pr.DirServer(tmp_path)

    class Later(pr.StaticMixin):
        pass

    later = Later()
    later.static = pr.DirServer(tmp_path)  # type: ignore[misc]  # a ClassVar set on an instance
    for app in (Files, later):
        async with open_client(app) as client:
            assert (await client.get("/")).text == "hi"
