"""``peregrine-rt --asgi MODULE:ATTR``: one process and two workers serve an ASGI app."""

from __future__ import annotations

import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0  # seconds for a (loaded, shared) machine to start the server


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while data := sock.recv(65536):
            reply += data
    return reply


def _wait_for_port(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Read the server's log until it says where it serves; the port and the log so far."""
    assert proc.stderr is not None
    log = ""
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            line = proc.stderr.readline()
            if not line:
                break
            log += line
            found = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)", line)
            if found:
                return int(found.group(1)), log
    proc.kill()
    raise AssertionError(f"the server did not start:\n{log}")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_asgi_flag_serves_the_app(workers: str) -> None:
    command = [sys.executable, "-m", "peregrine_rt", "--asgi", "tests.asgi.hello_app:app"]
    command += ["--port", "0", "--workers", workers, "--shutdown-grace", "2"]
    proc = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        port, log = _wait_for_port(proc)
        reply = _get(port, "/some/where")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
        # the lifespan ran in the process that answered: its state is in the scope
        assert re.search(rb"\r\n\r\nhello /some/where pid=\d+$", reply), reply
        if workers == "2":
            assert "peregrine_rt.workers" in log  # a worker process served it
    finally:
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest


def test_asgi_flag_with_something_that_is_not_an_app() -> None:
    command = [sys.executable, "-m", "peregrine_rt", "--asgi", "tests.asgi.hello_app:not_an_app"]
    result = subprocess.run(
        command, check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("peregrine-rt: error: ASGI(app): app must be an ASGI callable")


def test_a_failed_lifespan_startup_is_one_line_and_exit_2() -> None:
    command = [sys.executable, "-m", "peregrine_rt", "--asgi", "tests.asgi.hello_app:failing"]
    command += ["--port", "0"]
    result = subprocess.run(
        command, check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "peregrine-rt: error: ASGI lifespan startup failed: no database" in result.stderr
    assert "Traceback" not in result.stderr
