"""The typed public API: mypy refuses what the server would refuse."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

import peregrine_rt as pr
from peregrine_rt._options import ServerOptions


def test_server_options_name_every_config_field_with_its_type() -> None:
    fields = {f.name: str(f.type) for f in dataclasses.fields(pr.Config)}
    options = {
        name: getattr(t, "__forward_arg__", str(t))
        for name, t in ServerOptions.__annotations__.items()
    }
    assert options == fields


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    api = pytest.importorskip("mypy.api")
    folder = tmp_path_factory.mktemp("typing")
    sample = folder / "sample.py"
    sample.write_text(
        textwrap.dedent(  # the import is line 1
            """
            import peregrine_rt as pr

            class App:
                async def handle(self, request: pr.Request, response: pr.Response) -> None: ...

            class Echo(App):
                async def on_message(self, ws: pr.WebSocket, message: str | bytes) -> None: ...

            class NotAHandler:
                def handle(self) -> None: ...

            pr.Server(App, port=8000, ws_slow_policy="drop-oldest")  # fine
            pr.Server(App, prot=8000)  # line 13: a typo
            pr.Server(App, port="8000")  # line 14: a wrong type
            pr.Server(NotAHandler)  # line 15: not a handler
            ok: type[pr.WebSocketHandler] = Echo  # fine
            bad: type[pr.WebSocketHandler] = App  # line 17: no on_message
            """
        ).lstrip("\n")
    )
    cache = Path(__file__).resolve().parent.parent / ".mypy_cache"
    stdout, stderr, _ = api.run(
        ["--strict", "--cache-dir", str(cache), "--no-error-summary", str(sample)]
    )
    return stdout + stderr


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (13, 'Unexpected keyword argument "prot"'),
        (14, 'Argument "port" to "Server" has incompatible type "str"'),
        (15, "NotAHandler"),
        (17, "WebSocketHandler"),
    ],
)
def test_mypy_refuses(mypy_report: str, line: int, words: str) -> None:
    errors = [e for e in mypy_report.splitlines() if f"sample.py:{line}:" in e]
    assert any(words in e for e in errors), mypy_report


def test_mypy_accepts_the_right_calls(mypy_report: str) -> None:
    flagged = {int(e.split(":")[1]) for e in mypy_report.splitlines() if "sample.py:" in e}
    assert flagged <= {13, 14, 15, 17}, mypy_report
