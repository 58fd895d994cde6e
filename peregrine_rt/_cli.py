"""The ``peregrine-rt`` command: ``peregrine-rt MODULE:ATTR [options]``."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import ssl
import sys
from collections.abc import Sequence

import trio

from ._config import Config
from ._loader import (
    cannot_listen,
    check_spec,
    fail,
    fail_load,
    find_os_error,
    load_app,
    use_app_dir,
)
from ._server import Server, install_default_logging, serve_until_signalled
from ._workers import run_workers
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


def _parser() -> argparse.ArgumentParser:
    defaults = Config()
    p = argparse.ArgumentParser(
        prog="peregrine-rt",
        description="Serve a peregrine_rt handler class.",
        epilog="Example: peregrine-rt examples.echo:Echo --port 8080 --workers 2",
    )
    p.add_argument(
        "app",
        metavar="MODULE:ATTR",
        help="the handler class, e.g. examples.echo:Echo: a module's dotted name (not a "
        "file name), imported from the current directory unless --app-dir says otherwise",
    )
    p.add_argument(
        "--app-dir",
        metavar="DIR",
        help="import MODULE from this directory (default: the current directory)",
    )
    p.add_argument(
        "--host", default=defaults.host, help=f"address to bind (default {defaults.host})"
    )
    p.add_argument(
        "--port",
        type=int,
        default=defaults.port,
        help=f"TCP port, 0 to {MAX_PORT} (default {defaults.port}; 0 picks one)",
    )
    p.add_argument("--uds", metavar="PATH", help="listen on a Unix domain socket instead of TCP")
    p.add_argument("--certfile", help="TLS certificate chain (PEM); serves HTTPS with --keyfile")
    p.add_argument("--keyfile", help="TLS private key (PEM)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="level of the peregrine_rt loggers (default info); debug also prints the "
        "traceback of an error importing the app below its one-line summary",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=defaults.shutdown_grace,
        help=f"seconds in-flight requests get on shutdown (default {defaults.shutdown_grace:g})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        metavar="N",
        help="worker processes sharing the port with SO_REUSEPORT, supervised by this one "
        f"(default {defaults.workers})",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("REDIS_URL") or None,
        help="the hub's Redis (redis://HOST:PORT): topics then cross worker processes and "
        "machines (default: $REDIS_URL)",
    )
    p.add_argument("--version", action="version", version=_version())
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= MAX_PORT:
        return fail(
            f"--port must be between 0 and {MAX_PORT} (0 picks a free one), not {args.port}"
        )
    app: object = None
    try:
        if args.workers > 1:
            check_spec(args.app)  # the parent only supervises: the workers import the app
            use_app_dir(args.app_dir)  # ...with the parent's sys.path
        else:
            app = load_app(args.app, args.app_dir)
    except LookupError as exc:
        return fail_load(exc, log_level=args.log_level)
    ssl_context = None
    if args.certfile or args.keyfile:
        if not (args.certfile and args.keyfile):
            return fail("--certfile and --keyfile go together")
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            return fail(f"cannot load the TLS certificate: {exc}")
    try:
        config = Config(
            host=args.host,
            port=args.port,
            uds=args.uds,
            ssl_context=ssl_context,
            access_log=args.access_log,
            shutdown_grace=args.shutdown_grace,
            workers=args.workers,
            redis_url=args.redis,
        )
        if config.workers > 1:
            if config.uds is not None:
                return fail("--workers shares a TCP port (SO_REUSEPORT), not a Unix socket")
            return run_workers(
                args.app,
                config.replace(ssl_context=None),
                log_level=args.log_level.upper(),
                certfile=args.certfile,
                keyfile=args.keyfile,
                app_dir=args.app_dir,
            )
        server = Server(app, config)  # type: ignore[arg-type]  # any object: Server checks it
    except (HandlerError, ValueError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(cannot_listen(config, exc))
    install_default_logging(args.log_level.upper())
    try:
        trio.run(serve_until_signalled, server)
    except BaseException as exc:
        os_error = find_os_error(exc)
        if os_error is None:
            raise
        return fail(cannot_listen(config, os_error))
    except KeyboardInterrupt:  # pragma: no cover - signals are handled inside
        return 130
    logging.getLogger("peregrine_rt.server").info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
