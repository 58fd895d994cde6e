"""The ``peregrine-rt`` command: ``peregrine-rt MODULE:ATTR [options]``.

The options are generated from :class:`Config` by ``_settings`` (one flag per
field, grouped in ``--help``), which also reads the ``--config`` TOML file and
the ``PEREGRINE_*`` environment; this module loads the app and serves it with
the settings' final :class:`Config`, in this process or in workers.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import ssl
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from ._loader import (
    cannot_listen,
    check_spec,
    fail,
    fail_load,
    find_os_error,
    load_app,
    unwrap_group,
    use_app_dir,
)
from ._server import Server, install_default_logging, serve_until_signalled
from ._settings import SettingsError, add_arguments, resolve, unknown_arguments
from ._workers import run_workers
from .asgi import ASGI, LifespanFailure
from .exceptions import HandlerError

__all__ = ["main"]

MAX_PORT = 65535


def _version() -> str:
    try:
        ours = importlib.metadata.version("peregrine_rt")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        ours = "(not installed)"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"peregrine-rt {ours} (trio {trio.__version__}, {python})"


class _Parser(argparse.ArgumentParser):
    """argparse, with each mistake on one line and a suggestion for an unknown flag."""

    def error(self, message: str) -> NoReturn:
        sys.exit(fail(message))

    def parse_known_args(  # type: ignore[override]  # one signature for typeshed's overloads
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            flags = [f for action in self._actions for f in action.option_strings]
            self.error(unknown_arguments(extras, flags))
        return parsed, extras


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="peregrine-rt",
        description="Serve a peregrine_rt handler class.",
        epilog="Every option is also a key of the --config file (max_connections = 20000) "
        "and an environment variable (PEREGRINE_MAX_CONNECTIONS=20000); 'none' sets an "
        "option to none, lists are comma-separated. Each place overrides the ones before "
        "it: the default, $REDIS_URL (redis_url only), the --config file, PEREGRINE_* "
        "variables, the command line. "
        "Example: peregrine-rt examples.echo:Echo --port 8080 --workers 2",
        allow_abbrev=False,  # a prefix that works today would break when a field is added
    )
    p.add_argument(
        "app",
        metavar="MODULE:ATTR",
        help="the handler class, e.g. examples.echo:Echo (with --asgi, an ASGI app, e.g. "
        "main:app): a module's dotted name (not a file name), imported from the current "
        "directory unless --app-dir says otherwise",
    )
    p.add_argument("--version", action="version", version=_version())
    add_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    try:
        settings = resolve(args, os.environ, args.get("config"))
    except SettingsError as exc:
        return fail(str(exc))
    values = settings.values
    app_spec: str = args["app"]
    app_dir: str | None = values["app_dir"]
    log_level: str = values["log_level"]
    certfile: str | None = values["certfile"]
    keyfile: str | None = values["keyfile"]
    asgi: bool = values["asgi"]
    port: int = values["port"]
    if not 0 <= port <= MAX_PORT:
        where = settings.sources.get("port", "--port")
        return fail(f"{where} must be between 0 and {MAX_PORT} (0 picks a free one), not {port}")
    app: object = None
    try:
        if values["workers"] > 1:
            check_spec(app_spec)  # the parent only supervises: the workers import the app
            use_app_dir(app_dir)  # ...with the parent's sys.path
        else:
            app = load_app(app_spec, app_dir)
            if asgi:
                app = ASGI(app)  # type: ignore[arg-type]  # any object: ASGI checks it
    except LookupError as exc:
        return fail_load(exc, log_level=log_level)
    except TypeError as exc:  # --asgi with something that is not callable
        return fail(str(exc))
    ssl_context = None
    if certfile or keyfile:
        if not (certfile and keyfile):
            return fail("--certfile and --keyfile go together")
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            return fail(f"cannot load the TLS certificate: {exc}")
    try:
        config = settings.config(ssl_context=ssl_context)
        if config.workers > 1:
            if config.uds is not None:
                return fail("--workers shares a TCP port (SO_REUSEPORT), not a Unix socket")
            return run_workers(
                app_spec,
                config.replace(ssl_context=None),
                log_level=log_level.upper(),
                certfile=certfile,
                keyfile=keyfile,
                app_dir=app_dir,
                asgi=asgi,
            )
        server = Server(app, config)  # type: ignore[arg-type]  # any object: Server checks it
    except (HandlerError, ValueError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(cannot_listen(config, exc))
    install_default_logging(log_level.upper(), config.log_format)
    try:
        trio.run(serve_until_signalled, server)
    except BaseException as exc:
        os_error = find_os_error(exc)
        if os_error is None:
            lone = unwrap_group(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if isinstance(lone, LifespanFailure):  # --asgi: the app's startup failed
                return fail(str(lone))
            raise
        return fail(cannot_listen(config, os_error))
    except KeyboardInterrupt:  # pragma: no cover - signals are handled inside
        return 130
    logging.getLogger("peregrine_rt.server").info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
