"""Every Config field three ways: a ``--flag``, a ``--config`` TOML key, a ``PEREGRINE_*`` variable.

The settings are derived from :class:`Config`, so these tests iterate over its
fields: a field added tomorrow is checked by the same tests without a line
here.  ``main()`` runs in this process with the serving step replaced by one
that records the :class:`Config` it was given (``served``); the errors and the
worker processes are checked on real processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import peregrine_rt as pr
from peregrine_rt import _cli, _settings
from peregrine_rt._settings import SETTINGS, Setting

from .conftest import PYTHON, REPO, get

APP = "examples.echo:Echo"
CONFIG_FIELDS = [f.name for f in dataclasses.fields(pr.Config)]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PEREGRINE_")}
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [PYTHON, "-m", "peregrine_rt", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting from the environment the tests run in."""
    for name in list(os.environ):
        if name.startswith("PEREGRINE_") and not name.startswith("PEREGRINE_RT_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("REDIS_URL", raising=False)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Callable[..., pr.Config]:
    """``served(*argv)``: run ``main(argv)`` and return the Config it would serve (or the
    workers would get)."""
    seen: list[pr.Config] = []

    async def serve(server: pr.Server) -> None:
        seen.append(server.config)

    def workers(app: str, config: pr.Config, **kwargs: Any) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(_cli, "serve_until_signalled", serve)
    monkeypatch.setattr(_cli, "run_workers", workers)
    monkeypatch.setattr(_cli, "install_default_logging", lambda level, log_format="text": None)

    def main(*argv: str) -> pr.Config:
        seen.clear()
        assert _cli.main([APP, *argv]) == 0
        (config,) = seen
        return config

    return main


# -- values for every setting ------------------------------------------------------


def other_value(s: Setting) -> Any:
    """A valid value for ``s`` that is not its default."""
    if s.kind == "bool":
        return not s.default
    if s.kind == "choice":
        return next(c for c in s.choices if c != s.default)
    if s.kind == "list":
        return ("https://a.example", "https://b.example")
    if s.kind == "int":
        return (s.default or 6) + 1
    if s.kind == "float":
        return (s.default or 2.5) * 2
    return f"/tmp/{s.name}-value"


def toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def flag_words(s: Setting, value: Any) -> list[str]:
    if s.kind == "bool":
        return [s.flag if value else "--no-" + s.flag[2:]]
    return [s.flag, s.to_text(value)]


VALUES = {
    "other": {s.name: other_value(s) for s in SETTINGS},
    "none": {s.name: None for s in SETTINGS if s.optional},
}


def through(way: str, values: dict[str, Any], tmp_path: Path) -> _settings.Settings:
    """``values`` set one way, read back."""
    by_name = _settings.BY_NAME
    if way == "file":
        path = tmp_path / "peregrine.toml"
        path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
        return _settings.resolve({}, {}, str(path))
    if way == "env":
        env = {by_name[k].env: by_name[k].to_text(v) for k, v in values.items()}
        return _settings.resolve({}, env)
    words = [w for k, v in values.items() for w in flag_words(by_name[k], v)]
    return _settings.resolve(vars(_cli._parser().parse_args([APP, *words])), {})


# -- every field, three ways ----------------------------------------------------------


def test_every_field_has_a_group_a_flag_a_key_and_a_variable() -> None:
    groups = {key for key, _, _ in _settings.GROUPS}
    help_text = _cli._parser().format_help()
    settable = {s.name for s in SETTINGS}
    assert set(_settings.NOT_TEXT) < set(CONFIG_FIELDS)  # no stale exception
    for f in dataclasses.fields(pr.Config):
        assert f.metadata.get("group") in groups, f"Config.{f.name} has no group"
        if f.name in _settings.NOT_TEXT:
            assert f.name not in settable
            continue
        s = _settings.BY_NAME[f.name]
        assert (s.flag, s.env) == ("--" + f.name.replace("_", "-"), "PEREGRINE_" + f.name.upper())
        assert re.search(rf"^  {re.escape(s.flag)}\b", help_text, re.M), s.flag
        assert s.default == getattr(pr.Config(), f.name)


@pytest.mark.parametrize("values", ["other", "none"])
@pytest.mark.parametrize("way", ["file", "env", "flags"])
def test_every_setting_round_trips(way: str, values: str, tmp_path: Path) -> None:
    wanted = VALUES[values]
    settings = through(way, wanted, tmp_path)
    assert settings.values == {**{s.name: s.default for s in SETTINGS}, **wanted}
    assert set(settings.sources) == set(wanted)
    config = settings.config()
    for name, value in wanted.items():
        if name in CONFIG_FIELDS:
            assert getattr(config, name) == value, name


def test_the_other_values_differ_from_the_defaults() -> None:
    # Guard: a round trip of the defaults would prove nothing.
    for s in SETTINGS:
        assert VALUES["other"][s.name] != s.default, s.name
    assert {"max_body_size", "ws_ping_interval", "min_rate"} <= set(VALUES["none"])


# -- precedence: defaults < $REDIS_URL < file < PEREGRINE_* < flags -----------------------


@pytest.mark.parametrize(
    ("file", "env", "flag", "expected"),
    [
        (False, False, False, 10_000),
        (True, False, False, 11),
        (True, True, False, 22),
        (False, True, False, 22),
        (True, True, True, 33),
        (True, False, True, 33),
        (False, True, True, 33),
    ],
)
def test_each_place_overrides_the_ones_before(
    served: Callable[..., pr.Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    file: bool,
    env: bool,
    flag: bool,
    expected: int,
) -> None:
    argv: list[str] = []
    if file:
        path = tmp_path / "peregrine.toml"
        path.write_text('max_connections = 11\nserver_header = "from-file"\n')
        argv += ["--config", str(path)]
    if env:
        monkeypatch.setenv("PEREGRINE_MAX_CONNECTIONS", "22")
    if flag:
        argv += ["--max-connections", "33"]
    config = served(*argv)
    assert config.max_connections == expected
    assert config.server_header == ("from-file" if file else None)  # the others stay


def test_redis_url_sources_in_order(
    served: Callable[..., pr.Config], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "peregrine.toml"
    path.write_text('redis_url = "redis://file:1"\n')
    monkeypatch.setenv("REDIS_URL", "redis://plain:1")
    assert served().redis_url == "redis://plain:1"  # $REDIS_URL, as before
    assert served("--config", str(path)).redis_url == "redis://file:1"
    monkeypatch.setenv("PEREGRINE_REDIS_URL", "redis://prefixed:1")
    assert served("--config", str(path)).redis_url == "redis://prefixed:1"
    assert served("--redis", "redis://alias:1").redis_url == "redis://alias:1"
    assert served("--redis-url", "redis://flag:1").redis_url == "redis://flag:1"


def test_the_file_from_the_environment(
    served: Callable[..., pr.Config], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "a.toml").write_text("backlog = 7\n")
    (tmp_path / "b.toml").write_text("backlog = 9\n")
    monkeypatch.setenv("PEREGRINE_CONFIG", str(tmp_path / "a.toml"))
    assert served().backlog == 7
    assert served("--config", str(tmp_path / "b.toml")).backlog == 9  # --config wins


def test_flags_kept_from_before(served: Callable[..., pr.Config]) -> None:
    config = served("--access-log", "--shutdown-grace", "2.5", "--host", "::1", "--port", "0")
    assert (config.access_log, config.shutdown_grace, config.host, config.port) == (
        True,
        2.5,
        "::1",
        0,
    )
    assert served("--access-log", "--no-access-log").access_log is False  # the last wins


def test_workers_get_the_final_config(
    served: Callable[..., pr.Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEREGRINE_WS_COMPRESSION", "on")
    config = served("--workers", "2", "--max-connections", "5", "--port", "0")
    assert (config.workers, config.max_connections, config.ws_compression) == (2, 5, True)


def test_a_setting_reaches_worker_processes(spawn: Any, tmp_path: Path) -> None:
    """Through the pickled plan: the workers answer with the header the file sets."""
    path = tmp_path / "peregrine.toml"
    path.write_text('server_header = "from-file"\nworkers = 2\nport = 0\n')
    server = spawn(APP, "--config", str(path))
    port = server.port
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(get("/", "Connection: close"))
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nserver: from-file\r\n" in data.lower()
    assert f"with 2 workers on http://127.0.0.1:{port}" in server.wait_for_log("with 2 workers")
    server.proc.send_signal(signal.SIGTERM)
    returncode, log = server.finish()
    assert returncode == 0, log


# -- text and TOML forms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("ws_compression", "off", False),
        ("ws_compression", " YES", True),
        ("max_body_size", "None", None),
        ("max_body_size", "2048", 2048),
        ("ws_allowed_origins", "", ()),
        ("ws_allowed_origins", " https://a , https://b ", ("https://a", "https://b")),
        ("log_level", "DEBUG", "debug"),
        ("body_timeout", "1e1", 10.0),
        ("host", " ::1", " ::1"),  # a string is taken as written
    ],
)
def test_text_forms(name: str, text: str, value: Any) -> None:
    setting = _settings.BY_NAME[name]
    assert setting.from_text(text) == value
    assert setting.from_text(setting.to_text(value)) == value


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ws_compression", "maybe"),
        ("workers", "1.5"),
        ("workers", "none"),  # not optional
        ("body_timeout", "inf"),
        ("body_timeout", "soon"),
        ("ws_slow_policy", "none"),
    ],
)
def test_text_refused(name: str, text: str) -> None:
    with pytest.raises(ValueError, match=f"^expected .*, not {re.escape(repr(text))}"):
        _settings.BY_NAME[name].from_text(text)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("body_timeout", 3, 3.0),
        ("ws_allowed_origins", "https://a,https://b", ("https://a", "https://b")),
        ("max_body_size", "none", None),
        ("server_header", "none", None),
        ("ws_compression", False, False),
    ],
)
def test_toml_forms(name: str, value: object, expected: Any) -> None:
    assert _settings.BY_NAME[name].from_toml(value) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("workers", True),  # a TOML boolean is no number
        ("body_timeout", False),
        ("workers", 2.0),
        ("ws_allowed_origins", ["https://a", 1]),
        ("ws_compression", "true"),
        ("max_body_size", "5"),
        ("host", 1),
    ],
)
def test_toml_refused(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^expected .*, not {re.escape(repr(value))}$"):
        _settings.BY_NAME[name].from_toml(value)


# -- mistakes: one line, exit status 2, the closest name ----------------------------------


@pytest.fixture
def toml_file(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    def write(text: str) -> str:
        path = tmp_path / "peregrine.toml"
        path.write_text(text)
        return str(path)

    yield write


@pytest.mark.parametrize(
    ("args", "env", "file", "line"),
    [
        (
            ["--max-conections", "5"],
            {},
            None,
            "unknown option --max-conections (did you mean --max-connections?)",
        ),
        (
            ["--ws-ping-intreval=3"],
            {},
            None,
            "unknown option --ws-ping-intreval (did you mean --ws-ping-interval?)",
        ),
        (
            ["--ssl-context", "x"],
            {},
            None,
            "option --ssl-context: an SSLContext has no text form: use certfile and keyfile",
        ),
        (
            [],
            {"PEREGRINE_MAX_CONECTIONS": "5"},
            None,
            "unknown environment variable PEREGRINE_MAX_CONECTIONS "
            "(did you mean PEREGRINE_MAX_CONNECTIONS?)",
        ),
        (
            [],
            {},
            "max_conections = 5\n",
            "{file}: unknown key 'max_conections' (did you mean max_connections?)",
        ),
        (
            [],
            {},
            "keep-alive-timeout = 5\n",
            "{file}: unknown key 'keep-alive-timeout' (did you mean keep_alive_timeout?)",
        ),
        (
            ["--max-connections", "many"],
            {},
            None,
            "argument --max-connections: expected a whole number, not 'many'",
        ),
        (
            [],
            {"PEREGRINE_WS_SLOW_POLICY": "drop-oldst"},
            None,
            "PEREGRINE_WS_SLOW_POLICY='drop-oldst': expected one of close, drop-oldest, not "
            "'drop-oldst' (did you mean drop-oldest?)",
        ),
        (
            [],
            {},
            'max_connections = "5"\n',
            "{file}: max_connections: expected an integer, not '5'",
        ),
        (
            [],
            {"PEREGRINE_BODY_TIMEOUT": "nan"},
            None,
            "PEREGRINE_BODY_TIMEOUT='nan': expected a number, not 'nan'",
        ),
        (
            [],
            {"PEREGRINE_WORKERS": "0"},
            None,
            "Config.workers must be at least 1 (set by PEREGRINE_WORKERS)",
        ),
        (
            [],
            {},
            "port = 70000\n",
            "port in {file} must be between 0 and 65535 (0 picks a free one), not 70000",
        ),
        (
            ["--config", "missing.toml"],
            {},
            None,
            "--config missing.toml: No such file or directory",
        ),
        (
            [],
            {},
            "port = \n",
            "--config {file}: not valid TOML: Invalid value (at line 1, column 8)",
        ),
        (["8000"], {}, None, "unexpected argument '8000'"),
    ],
    ids=[
        "flag",
        "flag-equals",
        "ssl-context",
        "env",
        "key",
        "key-dashes",
        "flag-value",
        "env-choice",
        "key-type",
        "env-nan",
        "env-invalid",
        "file-port",
        "no-file",
        "bad-toml",
        "extra-argument",
    ],
)
def test_mistakes_are_one_line_and_exit_2(
    args: list[str],
    env: dict[str, str],
    file: str | None,
    line: str,
    toml_file: Callable[[str], str],
) -> None:
    path = toml_file(file) if file is not None else None
    extra = ["--config", path] if path else []
    result = run_cli(APP, *args, *extra, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"peregrine-rt: error: {line.format(file=path)}\n"
    assert result.stdout == ""


def test_the_package_switches_are_not_settings(
    served: Callable[..., pr.Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEREGRINE_RT_NO_SPEEDUPS", os.environ.get("PEREGRINE_RT_NO_SPEEDUPS", "0"))
    monkeypatch.setenv("PEREGRINE_RT_FUTURE_SWITCH", "1")
    assert served().port == 8000


# -- --help ----------------------------------------------------------------------------


def test_help_is_grouped() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    sections = re.split(r"^(\S[^\n]*):\n", result.stdout, flags=re.M)
    found = dict(zip(sections[1::2], sections[2::2], strict=True))
    titles = [title for _, title, _ in _settings.GROUPS]
    assert [t for t in found if t in titles] == titles  # in this order
    assert {"network", "limits", "timeouts", "WebSocket", "realtime", "workers", "logging"} <= set(
        titles
    )
    title_of = {key: title for key, title, _ in _settings.GROUPS}
    for s in SETTINGS:
        assert re.search(rf"^  {re.escape(s.flag)}\b", found[title_of[s.group]], re.M), s.flag
    assert "--redis-url URL, --redis URL" in found["realtime"]
    assert "--ws-compression, --no-ws-compression" in found["WebSocket"]
