"""The transcript of mistakes_cli.txt (docs/mistakes.rst), run for real.

Each ``$`` line of the transcript is run (``peregrine-rt`` as ``python -m
peregrine_rt``) in a small project: ``counter.py`` (a good handler),
``needs_dep.py`` (imports a package that is not installed), ``typo.py`` (a
missing colon) and an empty directory ``elsewhere``.  What it prints must be
the lines below it.  The project's real path is shown as /home/you/project.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TRANSCRIPT = Path(__file__).parent / "mistakes_cli.txt"
SHOWN_PROJECT = "/home/you/project"

COUNTER = """\
import peregrine_rt as pr


class Counter:
    def __init__(self) -> None:
        self.count = 0

    async def handle(self, request: pr.Request, response: pr.Response) -> None:
        self.count += 1
        response.text(f"{self.count}\\n")
"""


def commands(text: str) -> list[tuple[str, list[str]]]:
    """The transcript as (command line, expected output lines) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return pairs


@pytest.fixture
def port_8000_taken() -> Iterator[None]:
    """Something listens on 127.0.0.1:8000 (this test, or whatever already did)."""
    sock = socket.socket()
    # SO_REUSEADDR as the server sets it: a connection of an earlier test still
    # in TIME_WAIT on 8000 must not look like a listener (the server binds
    # through it, and the command would serve instead of failing).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", 8000))
        sock.listen()
    except OSError:
        pass  # a live listener has it already: the command meets the same error
    try:
        yield
    finally:
        sock.close()


def test_the_transcript_is_what_the_command_prints(tmp_path: Path, port_8000_taken: None) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "counter.py").write_text(COUNTER)
    (project / "needs_dep.py").write_text("import peregrine_rt as pr\nimport redis_orm\n")
    (project / "typo.py").write_text("class App:\n    async def handle(self, request, response)\n")
    (project / "elsewhere").mkdir()
    pairs = commands(TRANSCRIPT.read_text())
    assert len(pairs) >= 8
    for command, expected in pairs:
        cwd, line = project, command
        if command.startswith("cd "):
            directory, _, line = command[3:].partition(" && ")
            cwd = project / directory
        words = shlex.split(line)
        assert words[0] == "peregrine-rt", command
        result = subprocess.run(
            [sys.executable, "-m", "peregrine_rt", *words[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        shown = (result.stdout + result.stderr).replace(str(project), SHOWN_PROJECT)
        assert shown.splitlines() == expected, command
        assert result.returncode == 2, command
