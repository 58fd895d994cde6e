"""The ``peregrine-rt`` command (and ``python -m peregrine_rt``), run as a real process."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trustme

import peregrine_rt

from .conftest import PYTHON, REPO, get

CONSOLE_SCRIPT = Path(PYTHON).parent / "peregrine-rt"


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "peregrine_rt", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def ask(sock: socket.socket, target: str) -> bytes:
    """Send a GET with Connection: close and read the whole answer."""
    sock.settimeout(10)
    sock.sendall(get(target, "Connection: close"))
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def test_help_lists_the_options() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--host",
        "--port",
        "--uds",
        "--certfile",
        "--keyfile",
        "--log-level",
        "--access-log",
        "--shutdown-grace",
        "--workers",
        "--redis",
        "MODULE:ATTR",
    ):
        assert option in result.stdout, option
    assert result.stdout.startswith("usage: peregrine-rt ")


@pytest.fixture
def bad_app_dir(tmp_path: Path) -> Path:
    (tmp_path / "badapp.py").write_text(
        textwrap.dedent(
            """
            class SyncHandler:
                def handle(self, request, response):
                    pass

            class Fine:
                async def handle(self, request, response):
                    response.text("fine")
            """
        )
    )
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_xyz:App"], "no module named 'no_such_module_xyz'"),
        (["examples.no_such_sub:App"], "no module named 'examples.no_such_sub'"),
        (["examples.echo:Nope"], "has no attribute 'Nope'"),
        (["examples.echo"], "is not of the form MODULE:ATTR"),
        ([":Echo"], "is not of the form MODULE:ATTR"),
        (["examples.echo:"], "is not of the form MODULE:ATTR"),
        (
            ["badapp:SyncHandler"],
            "SyncHandler.handle must be async def handle(self, request, response)",
        ),
        (["badapp:Fine", "--certfile", "only.pem"], "--certfile and --keyfile go together"),
        (["badapp:Fine", "--certfile", "no.pem", "--keyfile", "no.pem"], "cannot load the TLS"),
        (["badapp:Fine", "--shutdown-grace", "0"], "shutdown_grace must be positive"),
        (["badapp:Fine", "--workers", "0"], "workers must be at least 1"),
        (["badapp:Fine", "--workers", "2", "--uds", "x.sock"], "not a Unix socket"),
        (["badapp", "--workers", "2"], "is not of the form MODULE:ATTR"),
        # With workers the parent does not import the app: worker 0 reports, alone.
        (
            ["no_such_module_xyz:App", "--workers", "2", "--port", "0"],
            "no module named 'no_such_module_xyz'",
        ),
        (
            ["badapp:SyncHandler", "--workers", "2", "--port", "0"],
            "SyncHandler.handle must be async def handle(self, request, response)",
        ),
    ],
    ids=[
        "missing-module",
        "missing-submodule",
        "missing-attribute",
        "no-colon",
        "no-module",
        "no-attribute",
        "handler-contract",
        "certfile-alone",
        "missing-cert",
        "bad-config",
        "zero-workers",
        "workers-uds",
        "workers-no-colon",
        "workers-missing-module",
        "workers-handler-contract",
    ],
)
def test_errors_are_one_line_and_exit_2(args: list[str], message: str, bad_app_dir: Path) -> None:
    result = run_cli(*args, cwd=bad_app_dir if "badapp" in args[0] else REPO)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("peregrine-rt: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_address_in_use_is_one_line_and_exit_2(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("examples.echo:Echo", "--port", str(port), "--workers", workers)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("peregrine-rt: error: cannot listen")
    assert "Traceback" not in result.stderr


def test_console_script_serves_a_request(spawn: Any) -> None:
    assert CONSOLE_SCRIPT.exists()
    server = spawn(
        "examples.echo:Echo", "--port", "0", "--access-log", command=[str(CONSOLE_SCRIPT)]
    )
    assert "serving Echo on http://127.0.0.1:" in server.wait_for_log("serving ")
    port = server.port
    response = ask(socket.create_connection(("127.0.0.1", port)), "/cli?x=1")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"method=GET target=/cli?x=1 body_len=0")
    server.wait_for_log('"GET /cli?x=1 HTTP/1.1" 200')  # --access-log
    server.proc.send_signal(signal.SIGINT)
    returncode, log = server.finish()
    assert returncode == 0, log
    assert "Traceback" not in log


def test_uds_serves_on_a_unix_socket(spawn: Any, tmp_path: Path) -> None:
    path = tmp_path / "srv.sock"
    server = spawn("examples.counter:Counter", "--uds", str(path))
    line = server.wait_for_log("serving ")
    assert f"http+unix://{path}" in line
    for expected in (b"1\n", b"2\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            response = ask(sock, "/")
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.endswith(expected)
    server.proc.send_signal(signal.SIGTERM)
    returncode, log = server.finish()
    assert returncode == 0, log
    assert not path.exists()  # the socket file is removed on exit


def test_certfile_and_keyfile_serve_https(spawn: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = spawn(
        "examples.echo:Echo", "--port", "0", "--certfile", str(pem), "--keyfile", str(pem)
    )
    line = server.wait_for_log("serving ")
    assert "https://127.0.0.1:" in line
    port = int(line.rsplit(":", 1)[1])
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(get("/secure", "Connection: close"))
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"method=GET target=/secure body_len=0")
    server.proc.send_signal(signal.SIGTERM)
    returncode, log = server.finish()
    assert returncode == 0, log


# -- first contact (issue 20): the mistakes a new user makes, one line each ----------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: a good module, and modules that fail to import."""
    (tmp_path / "counter.py").write_text(
        textwrap.dedent(
            """
            import peregrine_rt as pr

            class Counter:
                async def handle(self, request, response):
                    response.text("1")
            """
        )
    )
    (tmp_path / "needs_dep.py").write_text("import peregrine_rt\nimport no_such_dependency\n")
    (tmp_path / "typo.py").write_text("class App:\n    async def handle(self, request, response)\n")
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("args", "cwd", "line"),
    [
        (
            ["counter.py:Counter"],
            ".",
            "'counter.py:Counter' names a file; give the module's dotted name without .py: "
            "counter:Counter",
        ),
        (
            ["counter:Counter"],
            "elsewhere",
            "no module named 'counter' in the current directory ({project}/elsewhere) nor on "
            "sys.path: run peregrine-rt where counter.py (or counter/) is, or add --app-dir DIR",
        ),
        (
            ["counter:pr"],
            ".",
            "'counter:pr' is a module (peregrine_rt), not a class: name the handler class, "
            "e.g. counter:Counter",
        ),
        (
            ["counter:Countr"],
            ".",
            "module 'counter' has no attribute 'Countr': did you mean counter:Counter?",
        ),
        (
            ["needs_dep:App"],
            ".",
            "cannot import 'needs_dep': needs_dep.py, line 2: ModuleNotFoundError: No module "
            "named 'no_such_dependency' (--log-level debug shows the traceback)",
        ),
        (
            ["typo:App"],
            ".",
            "cannot import 'typo': typo.py, line 2: SyntaxError: expected ':' "
            "(--log-level debug shows the traceback)",
        ),
        (
            ["counter:Counter", "--app-dir", "nowhere"],
            ".",
            "--app-dir nowhere: no such directory",
        ),
        (
            ["counter:Counter", "--port", "99999"],
            ".",
            "--port must be between 0 and 65535 (0 picks a free one), not 99999",
        ),
        (
            ["counter:Counter", "--port", "65536"],
            ".",
            "--port must be between 0 and 65535 (0 picks a free one), not 65536",
        ),
        (
            ["counter:Counter", "--port", "-1"],
            ".",
            "--port must be between 0 and 65535 (0 picks a free one), not -1",
        ),
    ],
    ids=[
        "file-name",
        "other-directory",
        "module-not-class",
        "attribute-typo",
        "import-error",
        "syntax-error",
        "no-app-dir",
        "port-99999",
        "port-65536",
        "port-negative",
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_first_contact_mistakes_are_one_line_and_exit_2(
    args: list[str], cwd: str, line: str, workers: str, project: Path
) -> None:
    result = run_cli(*args, "--workers", workers, cwd=project / cwd)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"peregrine-rt: error: {line.format(project=project)}\n"
    assert result.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_app_dir_imports_from_another_directory(spawn: Any, project: Path, workers: str) -> None:
    server = spawn(
        "counter:Counter", "--app-dir", str(project), "--port", "0", "--workers", workers,
        cwd=project / "elsewhere",
    )  # fmt: skip
    port = int(server.wait_for_log("serving ").rsplit(":", 1)[1])
    response = ask(socket.create_connection(("127.0.0.1", port)), "/")
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    server.proc.send_signal(signal.SIGTERM)
    returncode, log = server.finish()
    assert returncode == 0, log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_debug_log_level_puts_the_traceback_below_the_line(project: Path, workers: str) -> None:
    result = run_cli("typo:App", "--log-level", "debug", "--workers", workers, cwd=project)
    assert result.returncode == 2
    first, *rest = result.stderr.splitlines()
    assert first == (
        "peregrine-rt: error: cannot import 'typo': typo.py, line 2: SyntaxError: expected ':'"
    )
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "SyntaxError: expected ':'"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_address_in_use_names_the_address_and_port(workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("examples.echo:Echo", "--port", str(port), "--workers", workers)
    assert result.returncode == 2
    assert result.stderr == (
        f"peregrine-rt: error: cannot listen on 127.0.0.1:{port}: "
        "[Errno 98] Address already in use\n"
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"peregrine-rt {peregrine_rt.__version__} (trio ")
