"""Settings of the command line: every :class:`Config` field as a flag, a file key, a variable.

``peregrine-rt`` takes each setting from four places, each overriding the ones
before it:

1. the default of the :class:`Config` field (for ``redis_url``, ``$REDIS_URL``
   when it is set: the variable the command line has always honoured);
2. the TOML file named by ``--config FILE`` (or ``$PEREGRINE_CONFIG``), whose
   top-level keys are the field names (``max_connections = 20000``);
3. the environment, ``PEREGRINE_<FIELD>`` (``PEREGRINE_MAX_CONNECTIONS=20000``);
4. the command line, ``--<field-with-dashes>`` (``--max-connections 20000``).

Nothing here names a field: :data:`SETTINGS` is derived from the dataclass
(name, type, default, ``doc`` and ``group`` metadata), so a new field gets its
flag, key and variable, and its place in ``--help``, without a line here.  The
types map to text like this (in a file, the TOML types are used where TOML
has them):

* ``int``, ``float``: a number (a float must be finite);
* ``bool``: ``--x`` / ``--no-x`` on the command line; ``true``/``false``
  (also ``1``/``0``, ``yes``/``no``, ``on``/``off``) in the environment; a
  TOML boolean in a file;
* ``T | None``: the literal ``none`` means None, in all three places (TOML
  has no null);
* ``tuple[str, ...]``: a comma-separated list (a TOML array of strings in a
  file);
* ``Literal[...]``: one of the values.

A type with no text form must be listed in :data:`NOT_TEXT` with what to use
instead (``ssl_context``: ``certfile`` and ``keyfile``); any other type is a
``TypeError`` when this module is imported, so it cannot be forgotten.  Five
settings belong to the command line and not to :class:`Config`:
``log_level``, ``certfile``, ``keyfile``, ``app_dir`` and ``asgi``
(:data:`PROCESS_SETTINGS`).

Error handling:
    :class:`SettingsError` (a ``ValueError``): one line naming the place
    (``--port``, ``PEREGRINE_PORT``, ``peregrine.toml: port``), the value and
    what was expected; for an unknown key, variable or flag, the closest known
    name (``did you mean max_connections?``).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._config import Config

__all__ = [
    "ENV_PREFIX",
    "GROUPS",
    "NOT_TEXT",
    "PROCESS_SETTINGS",
    "SETTINGS",
    "Setting",
    "Settings",
    "SettingsError",
    "add_arguments",
    "read_environ",
    "read_file",
    "resolve",
    "suggest",
    "unknown_arguments",
]

ENV_PREFIX = "PEREGRINE_"
CONFIG_ENV = "PEREGRINE_CONFIG"  # the file, when --config is not given
# The package's own switches (PEREGRINE_RT_NO_SPEEDUPS), read elsewhere: not settings.
_OWN_SWITCHES = "PEREGRINE_RT_"

# (key, title in --help, what the group holds), in --help order.
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("app", "application", "what to serve, and where settings come from"),
    ("network", "network", "where to listen, TLS"),
    ("limits", "limits", "sizes and counts past which a client is refused"),
    ("timeouts", "timeouts", "how long a client may take, and shutdown"),
    ("websocket", "WebSocket", "messages, heartbeat, compression, slow consumers"),
    ("realtime", "realtime", "the hub that carries topics between processes"),
    ("channels", "Channels", "what one Channels connection may do"),
    ("workers", "workers", "processes and threads"),
    ("logging", "logging", "what is logged"),
    ("operations", "operations", "metrics, health checks, the status page"),
)
_GROUP_KEYS = frozenset(key for key, _, _ in GROUPS)

# Fields with no text form, and what to use instead.
NOT_TEXT: dict[str, str] = {
    "ssl_context": "an SSLContext has no text form: use certfile and keyfile",
}

# Other names a flag keeps from before it was generated.
ALIASES: dict[str, tuple[str, ...]] = {"redis_url": ("--redis",)}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

Kind = Literal["str", "int", "float", "bool", "list", "choice"]
_PLAIN: dict[Any, Kind] = {str: "str", int: "int", float: "float", bool: "bool"}


class SettingsError(ValueError):
    """A setting that cannot be used, as one line for ``peregrine-rt: error: ...``."""


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` with the candidate closest to ``word``, or ``""``."""
    known = list(candidates)
    for attempt in (word, word.replace("-", "_"), word.replace("_", "-")):
        if attempt != word and attempt in known:
            return f" (did you mean {attempt}?)"
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its names in the three places, and how text becomes its value."""

    name: str
    kind: Kind
    optional: bool
    default: Any
    group: str
    doc: str
    choices: tuple[str, ...] = ()
    in_config: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def metavar(self) -> str:
        if self.kind == "choice":
            return "{" + ",".join(self.choices) + "}"
        if self.kind == "int":
            return "N"
        if self.kind == "float":
            return "SECONDS" if self.name.endswith(("timeout", "grace", "interval")) else "X"
        if self.kind == "list":
            return "A,B,..."
        return self.name.rpartition("_")[2].upper()

    def from_text(self, text: str) -> Any:
        """The value written ``text`` (a flag's argument, a variable); ``ValueError`` if none."""
        word = text.strip()
        if self.optional and word.lower() == "none":
            return None
        if self.kind == "bool":
            if word.lower() in _TRUE:
                return True
            if word.lower() in _FALSE:
                return False
            raise ValueError(f"expected true or false, not {text!r}")
        if self.kind == "int":
            try:
                return int(word)
            except ValueError:
                raise ValueError(f"expected a whole number{self._or_none}, not {text!r}") from None
        if self.kind == "float":
            try:
                number = float(word)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ValueError(f"expected a number{self._or_none}, not {text!r}")
            return number
        if self.kind == "list":
            return tuple(part.strip() for part in word.split(",") if part.strip())
        if self.kind == "choice":
            if word.lower() in self.choices:
                return word.lower()
            expected = ", ".join(self.choices)
            raise ValueError(
                f"expected one of {expected}, not {text!r}{suggest(word, self.choices)}"
            )
        return text

    def from_toml(self, value: object) -> Any:
        """The value of a TOML ``value``; ``ValueError`` for the wrong TOML type."""
        if isinstance(value, str) and (
            self.kind in ("str", "choice", "list")
            or (self.optional and value.strip().lower() == "none")
        ):
            return self.from_text(value)
        if self.kind == "bool" and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            pass  # a TOML boolean is no number
        elif self.kind == "int" and isinstance(value, int):
            return value
        elif self.kind == "float" and isinstance(value, int | float):
            return self.from_text(str(value))
        elif (
            self.kind == "list"
            and isinstance(value, list)
            and all(isinstance(item, str) for item in value)
        ):
            return tuple(value)
        raise ValueError(f"expected {self._toml_type}{self._or_none}, not {value!r}")

    def to_text(self, value: Any) -> str:
        """``value`` written as :meth:`from_text` reads it."""
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    @property
    def _or_none(self) -> str:
        return " or none" if self.optional else ""

    @property
    def _toml_type(self) -> str:
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "list": "an array of strings",
            "choice": "a string",
        }[self.kind]


def _setting(f: dataclasses.Field[Any], hint: Any, default: Any, *, in_config: bool) -> Setting:
    """The :class:`Setting` of a field of type ``hint``; ``TypeError`` if it has no text form."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else hint
    kind: Kind
    choices: tuple[str, ...] = ()
    if hint in _PLAIN:
        kind = _PLAIN[hint]
    elif typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        kind = "list"
    elif typing.get_origin(hint) is Literal and all(
        isinstance(a, str) for a in typing.get_args(hint)
    ):
        kind, choices = "choice", typing.get_args(hint)
    else:
        raise TypeError(
            f"Config.{f.name}: the command line cannot read a {hint!r} from text; list it in "
            "_settings.NOT_TEXT with what to use instead, or teach _settings its type"
        )
    group = f.metadata.get("group", "")
    return Setting(
        name=f.name,
        kind=kind,
        optional=optional,
        default=default,
        group=group if group in _GROUP_KEYS else "other",
        doc=f.metadata.get("doc", ""),
        choices=choices,
        in_config=in_config,
    )


@dataclass(frozen=True, slots=True)
class _Process:
    """The command line's own settings: not :class:`Config` fields, set the same three ways."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = dataclasses.field(
        default="info",
        metadata={
            "group": "logging",
            "doc": "Level of the peregrine_rt loggers; debug also prints the traceback of an "
            "error importing the app below its one-line summary.",
        },
    )
    certfile: str | None = dataclasses.field(
        default=None,
        metadata={
            "group": "network",
            "doc": "TLS certificate chain (PEM): serve HTTPS and wss:// with keyfile "
            "(the command line's ssl_context).",
        },
    )
    keyfile: str | None = dataclasses.field(
        default=None, metadata={"group": "network", "doc": "TLS private key (PEM), with certfile."}
    )
    app_dir: str | None = dataclasses.field(
        default=None,
        metadata={
            "group": "app",
            "doc": "Import MODULE from this directory (none: the current directory).",
        },
    )
    asgi: bool = dataclasses.field(
        default=False,
        metadata={
            "group": "app",
            "doc": "MODULE:ATTR names an ASGI 3 application (Starlette, FastAPI...), served "
            "through peregrine_rt.asgi.ASGI with its lifespan.",
        },
    )


def _derive(cls: type[Any], *, in_config: bool) -> list[Setting]:
    hints = typing.get_type_hints(cls)
    defaults = cls()
    return [
        _setting(f, hints[f.name], getattr(defaults, f.name), in_config=in_config)
        for f in dataclasses.fields(cls)
        if f.name not in NOT_TEXT
    ]


PROCESS_SETTINGS: tuple[Setting, ...] = tuple(_derive(_Process, in_config=False))
SETTINGS: tuple[Setting, ...] = (*_derive(Config, in_config=True), *PROCESS_SETTINGS)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


# -- the three places -------------------------------------------------------------


def read_file(path: str) -> dict[str, Any]:
    """The settings of the TOML file ``path``, by name.

    Error handling:
        :class:`SettingsError` when the file cannot be read or parsed, for an
        unknown key (a table included) and for a value of the wrong type.
    """
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"--config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--config {path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, raw in table.items():
        setting = BY_NAME.get(key)
        if setting is None:
            raise SettingsError(f"{path}: {_unknown(f'key {key!r}', key, BY_NAME)}")
        try:
            values[key] = setting.from_toml(raw)
        except ValueError as exc:
            raise SettingsError(f"{path}: {key}: {exc}") from None
    return values


def read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings of the ``PEREGRINE_*`` variables of ``environ``, by name.

    ``PEREGRINE_CONFIG`` (the file) and the package's own ``PEREGRINE_RT_*``
    switches are not settings and are passed over.

    Error handling:
        :class:`SettingsError` for an unknown ``PEREGRINE_`` variable and for a
        value that cannot be read.
    """
    values: dict[str, Any] = {}
    known = {s.env: s for s in SETTINGS}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable.startswith(_OWN_SWITCHES):
            continue
        if variable == CONFIG_ENV:
            continue
        setting = known.get(variable)
        if setting is None:
            name = variable.removeprefix(ENV_PREFIX).lower()
            what = f"environment variable {variable}"
            raise SettingsError(_unknown(what, name, known, [*known, CONFIG_ENV], variable))
        try:
            values[setting.name] = setting.from_text(environ[variable])
        except ValueError as exc:
            raise SettingsError(f"{variable}={environ[variable]!r}: {exc}") from None
    return values


def _unknown(
    what: str,
    name: str,
    known: Iterable[str],
    candidates: Iterable[str] | None = None,
    word: str | None = None,
) -> str:
    """``unknown WHAT (did you mean ...?)``, or why a field of :data:`NOT_TEXT` is not there."""
    if name in NOT_TEXT:
        return f"{what}: {NOT_TEXT[name]}"
    return f"unknown {what}{suggest(word or name, candidates or known)}"


def unknown_arguments(extras: list[str], flags: Iterable[str]) -> str:
    """The message for command-line words argparse did not take: the first unknown flag."""
    for word in extras:
        if word.startswith("-"):
            flag = word.partition("=")[0]
            name = flag.lstrip("-").replace("-", "_")
            return _unknown(f"option {flag}", name, flags, flags, flag)
    return f"unexpected argument {extras[0]!r}"


# -- all together -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting's final value, and where those not left at their default came from."""

    values: dict[str, Any]
    sources: dict[str, str]

    def config(self, **others: Any) -> Config:
        """The :class:`Config` of these settings (plus ``others``, e.g. ``ssl_context``).

        Error handling:
            ``ValueError`` from :class:`Config`, with where the value came from.
        """
        fields = {s.name: self.values[s.name] for s in SETTINGS if s.in_config}
        try:
            return Config(**fields, **others)
        except ValueError as exc:
            message = str(exc)
            for name, source in self.sources.items():
                if f"Config.{name} " in message:
                    message += f" (set by {source})"
            raise ValueError(message) from None


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], config_file: str | None = None
) -> Settings:
    """Defaults < ``$REDIS_URL`` < the file < ``PEREGRINE_*`` < ``flags`` (values by name).

    ``flags`` holds the settings given on the command line, by name, already
    read (other names are ignored); ``config_file`` is ``--config``, else
    ``$PEREGRINE_CONFIG`` is used.

    Error handling:
        :class:`SettingsError` from :func:`read_file` and :func:`read_environ`.
    """
    values = {s.name: s.default for s in SETTINGS}
    sources: dict[str, str] = {}

    def layer(found: Mapping[str, Any], source: Any) -> None:
        for name, value in found.items():
            if name in values:
                values[name] = value
                sources[name] = source(BY_NAME[name])

    if environ.get("REDIS_URL"):
        layer({"redis_url": environ["REDIS_URL"]}, lambda s: "$REDIS_URL")
    path = config_file or environ.get(CONFIG_ENV) or None
    if path is not None:
        layer(read_file(path), lambda s: f"{s.name} in {path}")
    layer(read_environ(environ), lambda s: s.env)
    layer(flags, lambda s: s.flag)
    return Settings(values, sources)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, in its group; none has a default, so only given flags are set."""
    groups = {key: parser.add_argument_group(title, text) for key, title, text in GROUPS}
    groups["app"].add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"read settings from this TOML file (default: ${CONFIG_ENV}, if set)",
    )
    order = {key: rank for rank, (key, _, _) in enumerate(GROUPS)}
    for s in sorted(SETTINGS, key=lambda s: order.get(s.group, len(order))):
        if s.group not in groups:
            groups[s.group] = parser.add_argument_group(s.group)
        default = ("on" if s.default else "off") if s.kind == "bool" else s.to_text(s.default)
        text = f"{s.doc} [default: {default}]".replace("%", "%%")
        names = (s.flag, *ALIASES.get(s.name, ()))
        if s.kind == "bool":
            groups[s.group].add_argument(
                *names,
                dest=s.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            groups[s.group].add_argument(
                *names,
                dest=s.name,
                metavar=s.metavar,
                type=_argument_type(s),
                default=argparse.SUPPRESS,
                help=text,
            )


def _argument_type(setting: Setting) -> Any:
    def parse(text: str) -> Any:
        try:
            return setting.from_text(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name
    return parse
