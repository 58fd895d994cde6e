"""What the supervisor and its workers share: the plan, the control messages, logging.

See the package docstring for the protocol these serve.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._config import Config
from .._loader import find_attr, import_error_summary, load_app
from .._logfmt import JSONFormatter
from ..asgi import ASGI
from ..exceptions import HandlerError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "ABORT",
    "LENGTH",
    "READY",
    "RESTART",
    "STOP",
    "WorkerPlan",
    "handler_target",
    "install_logging",
    "load_handler",
]

READY = b"ready"  # worker -> supervisor: listening
STOP = b"S"  # supervisor -> worker: shut down gracefully
ABORT = b"A"  # supervisor -> worker: stop at once
RESTART = b"R"  # supervisor -> worker: a successor serves; shut down, WebSockets get 1012
LENGTH = struct.Struct("!I")  # the plan's length, before the pickled plan
_MAIN_MODULE = "__peregrine_main__"  # the name a worker imports a script's handler under
_LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs, sent to it pickled: no SSLContext, no handler object."""

    target: str  # MODULE:QUALNAME of the handler class
    config: Config  # workers=1, reuse_port=True, a concrete port, no ssl_context
    main_path: str | None = None  # the script to import when the class lives in __main__
    certfile: str | None = None
    keyfile: str | None = None
    log_level: int | str | None = None
    sys_path: list[str] = field(default_factory=list)
    app_dir: str | None = None  # --app-dir, for the messages of load_app
    asgi: bool = False  # --asgi: target is an ASGI app, served through peregrine_rt.asgi.ASGI


# -- the handler, by name ------------------------------------------------------------


def handler_target(handler: type | object) -> tuple[str, str | None]:
    """``(MODULE:QUALNAME, script path or None)`` by which a worker imports ``handler``.

    Error handling:
        :class:`HandlerError` when ``handler`` is an instance, or a class a
        fresh process could not import under the same name (defined in a
        function, in an interactive session, replaced in its module...).
    """
    if not isinstance(handler, type):
        raise HandlerError(
            f"workers > 1 needs the handler class, not an instance of "
            f"{type(handler).__qualname__}: each worker process builds its own"
        )
    name = f"{handler.__module__}:{handler.__qualname__}"
    why = f"worker processes import the handler class by name, but {name} "
    if "<locals>" in handler.__qualname__:
        raise HandlerError(why + "is defined inside a function: define it at module level")
    module = sys.modules.get(handler.__module__)
    obj: object = module
    for part in handler.__qualname__.split("."):
        obj = getattr(obj, part, None)
    if obj is not handler:
        raise HandlerError(why + "does not name this class: define it at module level")
    if handler.__module__ != "__main__":
        return name, None
    # A script's class: workers import the script again, under another name (as
    # multiprocessing does), or the module that `python -m` ran.
    spec = getattr(module, "__spec__", None)
    if spec is not None and not spec.name.endswith(".__main__"):
        return f"{spec.name}:{handler.__qualname__}", None
    path = getattr(module, "__file__", None)
    if spec is not None or path is None:
        raise HandlerError(
            why + "lives in a __main__ that cannot be imported again "
            "(an interactive session, -c, or a package's __main__): move it to a module"
        )
    main_path = os.path.abspath(path)
    return name, main_path


def load_handler(plan: WorkerPlan) -> object:
    """Import the handler class in a worker (LookupError, as ``load_app`` raises it).

    With ``plan.asgi`` the target is an ASGI app: the handler is ``ASGI(app)``.
    """
    if plan.main_path is None:
        return _wrap(load_app(plan.target, plan.app_dir), plan.asgi)
    spec = importlib.util.spec_from_file_location(_MAIN_MODULE, plan.main_path)
    if spec is None or spec.loader is None:
        raise LookupError(f"cannot import {plan.main_path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[_MAIN_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise LookupError(import_error_summary(plan.main_path, exc)) from exc
    return _wrap(find_attr(module, plan.target, plan.target.partition(":")[2]), plan.asgi)


def _wrap(app: object, asgi: bool) -> object:
    """``app``, or with ``--asgi`` the handler serving it (LookupError if it cannot be one)."""
    if not asgi:
        return app
    try:
        return ASGI(app)  # type: ignore[arg-type]  # any object: ASGI checks it
    except TypeError as exc:
        raise LookupError(str(exc)) from None


def install_logging(level: int | str | None, log_format: str = "text") -> None:
    """Like ``_server.install_default_logging``, with each line naming its process."""
    root = logging.getLogger("peregrine_rt")
    if level is not None:
        root.setLevel(level)
    if not logging.getLogger().handlers and not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JSONFormatter(process=True) if log_format == "json" else logging.Formatter(_LOG_FORMAT)
        )
        root.addHandler(handler)
        if level is None:
            root.setLevel(logging.INFO)
