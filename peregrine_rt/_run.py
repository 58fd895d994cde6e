"""``peregrine_rt.run()``: a whole program around one handler, with signals and workers.

It sits above the server and the worker supervisor (it chooses between them),
so that neither has to import the other's layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Unpack

import trio

from ._config import Config
from ._loader import unwrap_group
from ._options import ServerOptions
from ._server import Server, install_default_logging, serve_until_signalled
from ._workers import run_workers

if TYPE_CHECKING:
    from .handlers import HTTPHandler

__all__ = ["run"]


def run(
    handler: type[HTTPHandler] | HTTPHandler,
    config: Config | None = None,
    *,
    log_level: int | str | None = None,
    **overrides: Unpack[ServerOptions],
) -> None:
    """Serve ``handler`` until SIGINT or SIGTERM: ``peregrine_rt.run(Counter, port=3000)``.

    The first signal shuts down gracefully (``Config.shutdown_grace``), a second
    one at once.  Logging goes to stderr unless the application configured it.

    With ``workers=N`` (N > 1), N worker processes serve the port and this
    process supervises them (see :doc:`deployment`); ``handler`` must then be a
    class importable by its ``module:qualname``.  If the first worker cannot
    start, the program exits with its status.

    Error handling:
        An ``OSError`` binding the address (``Address already in use``), or an
        exception raised by the handler's ``startup()``, comes out as itself,
        not inside the ``ExceptionGroup`` of the nurseries it crossed: ``except
        OSError`` catches it.
    """
    server = Server(handler, config, **overrides)
    if server.config.workers > 1:
        status = run_workers(handler, server.config, log_level=log_level)
        if status:
            raise SystemExit(status)
        return
    install_default_logging(log_level, server.config.log_format)
    try:
        trio.run(serve_until_signalled, server)
    except BaseExceptionGroup as group:
        inner = unwrap_group(group)
    else:
        return
    raise inner  # outside the except block: its own traceback and context, not the group's
