"""The pytest plugin of peregrine_rt: fixtures for apps, servers and Redis.

Installed with peregrine_rt as the ``peregrine_rt`` entry point of the
``pytest11`` group, so pytest loads it by itself.  The async fixtures need
`pytest-trio <https://pytest-trio.readthedocs.io>`_ (``trio_mode = true``, or
``@pytest.mark.trio`` on the tests).

Fixtures:

``peregrine_app``
    Override it to name the app the other fixtures serve (a handler class, a
    handler instance, or a :class:`~peregrine_rt.Server`)::

        @pytest.fixture
        def peregrine_app():
            return Echo

``peregrine_client``
    A factory of in-memory clients (:func:`~peregrine_rt.testing.open_client`),
    all closed at the end of the test: ``client = await peregrine_client()``
    for ``peregrine_app``, or ``await peregrine_client(Counter, keep_alive_timeout=1)``.

``peregrine_server``
    ``peregrine_app`` served on a free port of 127.0.0.1
    (a :class:`~peregrine_rt.testing.LiveServer`: ``.url``, ``.ws_url``).

``redis_server``
    The URL (``redis://127.0.0.1:PORT``) of a ``redis-server`` started for the
    test session with a temporary directory and no persistence, and stopped
    at its end.  Without ``redis-server`` on ``PATH`` the test is skipped —
    unless the ``CI`` environment variable is set: there it fails.

``redis_url``
    The same URL, the database emptied (``FLUSHALL``) before the test.

Failures as themselves:
    pytest-trio runs every async test (and each fixture) inside a nursery of
    its own, and trio wraps whatever leaves a nursery in an
    ``ExceptionGroup``: a failing ``assert`` would be reported as
    ``ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)``.  The
    plugin reports a trio test that failed with a *single* exception, however
    deeply grouped, with that exception, as a synchronous test would be (the
    idiom trio's documentation gives for ``strict_exception_groups``); when
    several failed together, with the group that holds them, without the
    wrappers around it.  ``peregrine_rt_unwrap_groups = false`` in the pytest
    configuration turns this off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

from .._config import Config
from .._loader import unwrap_group
from ._client import Client
from ._redis import (
    REDIS_MISSING,
    REDIS_MISSING_IN_CI,
    RedisServer,
    in_ci,
    redis_server_path,
    start_redis_server,
)
from ._server import LiveServer, open_client, open_server

__all__ = [
    "ClientFactory",
    "peregrine_app",
    "peregrine_client",
    "peregrine_server",
    "redis_server",
    "redis_url",
]

UNWRAP_INI = "peregrine_rt_unwrap_groups"

ClientFactory = Callable[..., Awaitable[Client]]
"""``await peregrine_client(app=None, config=None, **options)`` -> an open :class:`Client`."""

_NO_APP = (
    "no app to serve: pass one (await peregrine_client(MyHandler)) or define a fixture "
    "returning it:\n\n    @pytest.fixture\n    def peregrine_app():\n        return MyHandler\n"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        UNWRAP_INI,
        "report a trio test that fails with one exception (inside pytest-trio's "
        "ExceptionGroup) with that exception (default true)",
        type="bool",
        default=True,
    )


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A trio test's lone exception, out of pytest-trio's nursery groups (module docstring)."""
    if pyfuncitem.get_closest_marker("trio") is None or not pyfuncitem.config.getini(UNWRAP_INI):
        return (yield)
    try:
        return (yield)
    except BaseExceptionGroup as group:
        inner = unwrap_group(group)
    raise inner  # out of the except block: the group does not become its context


@pytest.fixture
def peregrine_app() -> Any:
    """The app the other fixtures serve: override this fixture (``None`` by default)."""
    return None


async def _hold(
    open_cm: Callable[[], AbstractAsyncContextManager[Any]],
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Enter ``open_cm()`` in this task, hand out its value, leave it when ``done``."""
    async with open_cm() as value:
        task_status.started(value)
        await done.wait()


@pytest.fixture
async def peregrine_client(peregrine_app: Any) -> AsyncIterator[ClientFactory]:
    """A factory of in-memory clients, closed (servers shut down) at the end of the test."""
    done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def factory(app: Any = None, config: Config | None = None, **options: Any) -> Client:
            """``await peregrine_client(app=None, config=None, **options)``: see open_client()."""
            if app is None:
                app = peregrine_app
            if app is None:
                pytest.fail(_NO_APP, pytrace=False)
            client: Client = await nursery.start(
                _hold, lambda: open_client(app, config, **options), done
            )
            return client

        yield factory
        done.set()


@pytest.fixture
async def peregrine_server(peregrine_app: Any) -> AsyncIterator[LiveServer]:
    """``peregrine_app`` served on a free port of 127.0.0.1 for the test."""
    if peregrine_app is None:
        pytest.fail(_NO_APP, pytrace=False)
    async with open_server(peregrine_app) as live:
        yield live


@pytest.fixture(scope="session")
def _peregrine_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = redis_server_path()
    if executable is None:
        if in_ci():
            pytest.fail(REDIS_MISSING_IN_CI, pytrace=False)
        pytest.skip(REDIS_MISSING)
    with start_redis_server(tmp_path_factory.mktemp("redis"), executable=executable) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(_peregrine_redis: RedisServer) -> str:
    """The URL of a ``redis-server`` for the test session (see the module docstring)."""
    return _peregrine_redis.url


@pytest.fixture
def redis_url(_peregrine_redis: RedisServer) -> str:
    """The session's ``redis-server`` URL, emptied before this test."""
    _peregrine_redis.flushall()
    return _peregrine_redis.url
