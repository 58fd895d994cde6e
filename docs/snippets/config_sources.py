"""The three ways to set an option (docs/configuration.rst), checked as the page shows them.

The file and the command line below are the page's; the test reads them the
way ``peregrine-rt`` does and checks what each option ends up as.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from peregrine_rt import _cli, _settings

PEREGRINE_TOML = """\
# [toml]
# peregrine.toml: top-level keys, named as the Config fields
host = "0.0.0.0"
port = 8000
workers = 4
redis_url = "redis://127.0.0.1:6379/0"
max_connections = 20000
ws_allowed_origins = ["https://chat.example"]
max_body_size = "none"  # TOML has no null: "none" is None (no limit)
# [/toml]
"""

COMMAND = """\
# [shell]
PEREGRINE_MAX_CONNECTIONS=30000 PEREGRINE_WS_COMPRESSION=true \\
    peregrine-rt examples.echo:Echo --config peregrine.toml --port 9000 --log-level warning
# [/shell]
"""


def read_command(text: str) -> tuple[dict[str, str], list[str]]:
    """The variables set before the command, and its arguments."""
    lines = [line for line in text.replace("\\\n", " ").splitlines() if not line.startswith("#")]
    (line,) = lines
    words = shlex.split(line)
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words[0] == "peregrine-rt"
    return env, words[1:]


def test_each_place_overrides_the_ones_before(tmp_path: Path) -> None:
    (tmp_path / "peregrine.toml").write_text(PEREGRINE_TOML)
    env, args = read_command(COMMAND)
    args = [str(tmp_path / a) if a == "peregrine.toml" else a for a in args]
    flags = vars(_cli._parser().parse_args(args))
    settings = _settings.resolve(flags, env, flags["config"])
    config = settings.config()
    assert config.port == 9000  # the flag beats the file
    assert config.max_connections == 30000  # the environment beats the file
    assert config.ws_compression is True  # the environment beats the default
    assert (config.host, config.workers) == ("0.0.0.0", 4)  # the file beats the defaults
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.ws_allowed_origins == ("https://chat.example",)
    assert config.max_body_size is None
    assert settings.values["log_level"] == "warning"
    assert settings.sources["port"] == "--port"
    assert settings.sources["max_connections"] == "PEREGRINE_MAX_CONNECTIONS"
