"""``--log-format json`` and ``--access-log`` as a user runs them: a real process, its stderr.

The server (``apps_logs.py``) gets a WebSocket opened with a token in its
query, a request with a password in its query, a session cookie and a
Referer carrying a token, and a request whose handler raises; then SIGTERM
(by PID).  Every line it wrote must be what the docs promise
(``docs/operations/index.rst``, "Logs"), and no secret may be in any of them,
in the JSON form or the text form.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from typing import Any

import pytest
from websockets.sync.client import connect

from .conftest import REPO, ServerProcess, get

APP = "tests.integration.apps_logs:App"
SECRETS = ("SECRET123", "hunter2", "abc", "REF", "K3Y")


def fetch(port: int, target: str, *headers: str) -> int:
    """One request on a fresh connection; its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(get(target, "Connection: close", *headers))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def exercise(server: ServerProcess, port: int) -> str:
    """The requests of every test here, then SIGTERM; all the server wrote to stderr."""
    url = f"ws://127.0.0.1:{port}/ws?token=SECRET123"
    with connect(url, open_timeout=5, close_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    status = fetch(
        port,
        "/x?password=hunter2&page=2",
        "Cookie: session=abc",
        "Referer: http://a/?token=REF",
        "User-Agent: probe/1.0",
    )
    assert status == 200
    assert fetch(port, "/boom?api_key=K3Y") == 500
    server.proc.send_signal(signal.SIGTERM)
    returncode, log = server.finish(timeout=10)
    assert returncode == 0, log
    return log


def no_secrets(log: str) -> None:
    # Tracebacks name files: a checkout or venv path may hold "abc" by chance.
    for prefix in sorted({str(REPO), sys.prefix, sys.base_prefix}, key=len, reverse=True):
        log = log.replace(prefix, "<path>")
    for secret in SECRETS:
        assert secret not in log, f"{secret!r} was logged:\n{log}"


def test_json_lines_with_the_access_fields_and_no_secrets(spawn: Any) -> None:
    server = spawn(APP, "--port", "0", "--log-format", "json", "--access-log")
    serving = json.loads(server.wait_for_log("serving "))
    port = int(re.findall(r"http://127\.0\.0\.1:(\d+)", serving["message"])[0])
    log = exercise(server, port)
    no_secrets(log)
    entries: list[dict[str, Any]] = []
    for line in log.splitlines():
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict), line
        assert list(entry)[:4] == ["time", "level", "logger", "message"], line
        assert entry["logger"].startswith("peregrine_rt"), line
        assert "pid" not in entry  # one process: no pid
        entries.append(entry)

    access = [e for e in entries if e["logger"] == "peregrine_rt.access"]
    by_status = {e["status"]: e for e in access}
    assert sorted(by_status) == [101, 200, 500], access
    for entry in access:
        assert entry["level"] == "info"
        assert entry["method"] == "GET"
        assert entry["http_version"] == "1.1"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", entry["client"]), entry
        assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
        assert isinstance(entry["size"], int)
        assert entry["path"] in entry["message"]
    assert by_status[101]["path"] == "/ws?token=REDACTED"
    page = by_status[200]
    assert page["path"] == "/x?password=REDACTED&page=2"  # page=2 kept as sent
    assert page["referer"] == "http://a/?token=REDACTED"
    assert page["user_agent"] == "probe/1.0"
    assert page["size"] == len("ok\n")
    assert "cookie" not in page
    assert by_status[500]["path"] == "/boom?api_key=REDACTED"

    [error] = [e for e in entries if e["logger"] == "peregrine_rt.error"]
    assert error["level"] == "error"
    assert "/boom?api_key=REDACTED" in error["message"]
    assert error["exc_info"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: the handler failed on purpose" in error["exc_info"]


@pytest.mark.parametrize("option", [(), ("--log-format", "text")], ids=["default", "text"])
def test_the_text_form_redacts_the_same_secrets(spawn: Any, option: tuple[str, ...]) -> None:
    server = spawn(APP, "--port", "0", "--access-log", *option)
    log = exercise(server, server.port)
    no_secrets(log)
    with pytest.raises(json.JSONDecodeError):
        json.loads(log.splitlines()[0])
    assert '"GET /ws?token=REDACTED HTTP/1.1" 101 0' in log
    assert '"GET /x?password=REDACTED&page=2 HTTP/1.1" 200 3' in log
    assert '"GET /boom?api_key=REDACTED HTTP/1.1" 500 ' in log
    assert "handler App raised on GET /boom?api_key=REDACTED" in log
    assert "RuntimeError: the handler failed on purpose" in log
