"""The pytest plugin, run the way users run it: in a pytest session of its own (pytester).

Each run loads pytest-trio and the plugin explicitly, with entry-point
autoloading off, so these tests mean the same before and after the
``pytest11`` entry point is installed.  ``test_the_entry_point`` checks the
entry point itself.
"""

from __future__ import annotations

import os
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from peregrine_rt.testing._redis import (
    REDIS_MISSING,
    REDIS_MISSING_IN_CI,
    in_ci,
    redis_server_path,
)

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
# --assert=plain: trio and the plugin are imported already (by this session), so
# pytest could not rewrite them and would warn (an error under filterwarnings).
PLUGIN_ARGS = (
    "-p", "trio", "-p", "peregrine_rt.testing.plugin", "-p", "no:randomly", "-rs", "--assert=plain"
)  # fmt: skip

INI = """
[pytest]
trio_mode = true
filterwarnings = error
"""


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester with the plugin's usual settings (trio_mode, warnings as errors)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(INI)
    return pytester


APP_TESTS = """
import pytest
import trio

import peregrine_rt as pr
from peregrine_rt.testing import open_client

SERVERS = []


class Hello:
    async def handle(self, request, response):
        response.text("hello")


@pytest.fixture
def peregrine_app():
    return Hello


async def test_client_factory(peregrine_client):
    client = await peregrine_client()
    assert (await client.get("/")).text == "hello"
    other = await peregrine_client(Hello, max_body_size=1)
    assert other.server.config.max_body_size == 1
    assert other.app is not client.app
    SERVERS.extend([client.server, other.server])


def test_the_factorys_servers_were_shut_down():
    assert len(SERVERS) == 2
    assert all(server.shutting_down for server in SERVERS)


async def test_running_server(peregrine_server):
    assert peregrine_server.url.startswith("http://127.0.0.1:")
    async with open_client(peregrine_server.url) as client:
        assert (await client.get("/")).text == "hello"


async def test_server_and_clients_together(peregrine_server, peregrine_client):
    client = await peregrine_client(peregrine_server.server)  # in memory, same server
    assert client.server is peregrine_server.server


async def test_autojump_clock(peregrine_client, autojump_clock):
    client = await peregrine_client()
    await trio.sleep(3600)
    assert (await client.get("/")).text == "hello"


@pytest.mark.parametrize("app", ["factory", "instance"])
async def test_any_kind_of_app(peregrine_client, app):
    client = await peregrine_client(Hello() if app == "instance" else pr.Server(Hello))
    assert (await client.get("/")).status == 200
"""


def test_the_app_fixtures(run: pytest.Pytester) -> None:
    run.makepyfile(test_app=APP_TESTS)
    result = run.runpytest(*PLUGIN_ARGS)
    result.assert_outcomes(passed=7)


def test_no_app_fails_saying_what_to_do(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_no_app="""
        async def test_client(peregrine_client):
            await peregrine_client()

        async def test_server(peregrine_server):
            pass
        """
    )
    result = run.runpytest(*PLUGIN_ARGS)
    result.assert_outcomes(failed=2)  # pytest-trio reports a failing fixture as a failure
    result.stdout.fnmatch_lines(["*no app to serve: pass one*", "*def peregrine_app():*"])


FAILING_TESTS = """
import pytest
import trio

from peregrine_rt.testing import open_client


class Counter:
    def __init__(self):
        self.count = 0

    async def handle(self, request, response):
        self.count += 1
        response.text(f"{self.count}")


async def test_assert_in_the_body():
    async with open_client(Counter) as client:
        assert (await client.get("/")).text == "2"


async def test_assert_with_the_fixtures(peregrine_client, peregrine_server):
    client = await peregrine_client(Counter)
    assert (await client.get("/")).text == "3"


async def test_two_failures_stay_grouped():
    async def fail(message):
        raise ValueError(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail, "one")
        nursery.start_soon(fail, "two")


@pytest.fixture
def peregrine_app():
    return Counter
"""


def test_a_failing_test_shows_its_own_exception(run: pytest.Pytester) -> None:
    run.makepyfile(test_failing=FAILING_TESTS)
    result = run.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", "-rf", "--tb=short")
    result.assert_outcomes(failed=3)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "FAILED test_failing.py::test_assert_in_the_body - AssertionError*",
            "FAILED test_failing.py::test_assert_with_the_fixtures - AssertionError*",
            "FAILED test_failing.py::test_two_failures_stay_grouped - ExceptionGroup*",
        ]
    )
    # pytest-trio's wrappers are gone; the test's own group of two stays.
    assert "(1 sub-exception)" not in output, output
    assert "ExceptionGroup: Exceptions from Trio nursery (2 sub-exceptions)" in output, output


def test_unwrapping_can_be_turned_off(run: pytest.Pytester) -> None:
    run.makeini(INI + "peregrine_rt_unwrap_groups = false\n")
    run.makepyfile(test_failing=FAILING_TESTS)
    result = run.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", "-rf", "--tb=short")
    result.assert_outcomes(failed=3)
    assert "ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)" in result.stdout.str()


REDIS_TEST = """
def test_uses_redis(redis_server):
    raise AssertionError("not reached")
"""


@pytest.fixture
def no_redis_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one empty directory (where a test may put a fake redis-server)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_redis_missing_outside_ci_skips(
    run: pytest.Pytester, no_redis_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    run.makepyfile(test_redis=REDIS_TEST)
    result = run.runpytest(*PLUGIN_ARGS)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED *{REDIS_MISSING}"])


def test_redis_missing_in_ci_fails(
    run: pytest.Pytester, no_redis_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    run.makepyfile(test_redis=REDIS_TEST)
    result = run.runpytest(*PLUGIN_ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{REDIS_MISSING_IN_CI}*"])


@pytest.mark.parametrize(("value", "expected"), [("", False), ("false", False), ("1", True)])
def test_what_counts_as_ci(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_a_redis_server_that_fails_to_start(
    run: pytest.Pytester, no_redis_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    fake = no_redis_on_path / "redis-server"
    fake.write_text(f"#!{sys.executable}\nprint('FATAL: bad config line')\nraise SystemExit(1)\n")
    fake.chmod(0o755)
    run.makepyfile(test_redis=REDIS_TEST)
    result = run.runpytest(*PLUGIN_ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*redis-server exited with status 1:*", "*FATAL: bad config line*"]
    )


def test_a_real_redis_server(run: pytest.Pytester) -> None:
    if redis_server_path() is None:
        if in_ci():
            pytest.fail(REDIS_MISSING_IN_CI)
        pytest.skip(REDIS_MISSING)
    pid_file = run.path / "redis.pid"
    run.makepyfile(
        test_real_redis=f"""
        import socket
        from pathlib import Path
        from urllib.parse import urlsplit

        def command(url, *args):
            parts = urlsplit(url)
            request = b"*%d\\r\\n" % len(args) + b"".join(
                b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in args
            )
            with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
                sock.sendall(request)
                return sock.recv(1024)

        def test_set(redis_server, _peregrine_redis):
            Path({str(pid_file)!r}).write_text(str(_peregrine_redis.pid))
            assert redis_server.startswith("redis://127.0.0.1:")
            assert command(redis_server, b"SET", b"k", b"v") == b"+OK\\r\\n"
            assert command(redis_server, b"GET", b"k") == b"$1\\r\\nv\\r\\n"
            assert command(redis_server, b"CONFIG", b"GET", b"save").endswith(b"$0\\r\\n\\r\\n")

        def test_flushed_for_the_next_test(redis_url):
            assert command(redis_url, b"GET", b"k") == b"$-1\\r\\n"
        """
    )
    result = run.runpytest(*PLUGIN_ARGS)
    result.assert_outcomes(passed=2)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped at the end of the session


def test_the_entry_point(pytester: pytest.Pytester) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())
    group = declared["project"].get("entry-points", {}).get("pytest11", {})
    if "peregrine_rt" not in group:
        pytest.skip("pyproject.toml does not declare the pytest11 entry point yet")
    assert group["peregrine_rt"] == "peregrine_rt.testing.plugin"
    installed = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert installed.get("peregrine_rt") == "peregrine_rt.testing.plugin", (
        "the entry point is declared but not installed: pip install -e ."
    )
    pytester.makeini(INI)
    pytester.makepyfile(test_app=APP_TESTS)
    result = pytester.runpytest("-p", "no:randomly", "--assert=plain")  # plugins: entry points
    result.assert_outcomes(passed=7)
