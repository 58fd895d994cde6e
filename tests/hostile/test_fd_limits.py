"""File descriptors: the soft limit is raised at start, and running out is one log line per episode.

Reported: when descriptors ran out, one ERROR was logged every 100 ms (720
lines in about 70 s), and nothing warned that ``max_connections`` could not
be reached under the process's limit.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peregrine_rt._fdlimit import RESERVED_FDS, raise_fd_limit
from tests.integration.conftest import ServerProcess

REPO = Path(__file__).resolve().parents[2]

SERVE_UNDER_LIMIT = (
    "import resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
    "from peregrine_rt._cli import main; sys.exit(main())"
)


def serve_under(soft: int, hard: int, *args: str) -> ServerProcess:
    code = SERVE_UNDER_LIMIT.format(soft=soft, hard=hard)
    return ServerProcess(
        "examples.counter:Counter",
        "--port",
        "0",
        *args,
        command=[sys.executable, "-c", code],
        cwd=REPO,
    )


def ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "import resource, logging; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)); "
        "from peregrine_rt._fdlimit import raise_fd_limit; "
        "print(raise_fd_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4096", "4096"]
    assert "max_connections" not in out.stderr  # 1000 + reserve fits in 4096: no warning


def test_a_limit_too_low_for_max_connections_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    assert raise_fd_limit(hard) == hard  # this process: raised to the hard limit
    assert any("max_connections=" in r.getMessage() for r in caplog.records)
    assert hard - RESERVED_FDS < hard


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux rlimits")
def test_running_out_of_descriptors_is_one_line_and_recovers() -> None:
    proc = serve_under(48, 48, "--log-level", "info")
    try:
        port = proc.port
        proc.wait_for_log("max_connections=10000, but this process may open only 48 files")
        assert ask(port).startswith(b"HTTP/1.1 200")
        held = []
        for _ in range(70):  # more than the server can accept: the rest wait in the backlog
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        proc.wait_for_log("accept() failed")
        # For 1.5 s (fifteen of the old 100 ms log periods) every descriptor stays
        # held: no recovery, and still the one line.
        with pytest.raises(AssertionError, match="not logged"):
            proc.wait_for_log("accepting again", timeout=1.5)
        assert proc.log.count("accept() failed") == 1, proc.log
        for sock in held[:40]:  # free descriptors: the server accepts again by itself
            sock.close()
        proc.wait_for_log("accepting again", timeout=10)
        assert ask(port).startswith(b"HTTP/1.1 200")
        for sock in held[40:]:
            sock.close()
    finally:
        proc.kill()
