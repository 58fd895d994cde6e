"""Finding the application: ``MODULE:ATTR`` to a handler, and the command line's errors.

Shared by the command line (``_cli``) and the worker processes (``_workers``),
which import the application again in each worker, so that both say the same
thing about the same mistake.  Every mistake is one line (``peregrine-rt:
error: ...``, exit status 2) that names what was wrong and, where a usual
cause is known, what to type instead:

* ``counter.py:Counter`` (a file name) suggests ``counter:Counter``;
* a module not found says where it was looked for (the current directory, or
  ``--app-dir``) and how to look elsewhere;
* ``module:pr`` (a module, not a class) names the handler classes of the
  module;
* an exception while importing the module (``SyntaxError``, ``ImportError``,
  any other) is summed up with the file and line it comes from; the traceback
  follows the line with ``--log-level debug``.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
import traceback
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "cannot_listen",
    "check_spec",
    "fail",
    "fail_load",
    "find_attr",
    "find_os_error",
    "import_error_summary",
    "load_app",
    "unwrap_group",
    "use_app_dir",
]

DEBUG_HINT = "--log-level debug shows the traceback"


def fail(message: str) -> int:
    """Print ``peregrine-rt: error: MESSAGE`` to stderr; the exit status 2."""
    print(f"peregrine-rt: error: {message}", file=sys.stderr)
    return 2


def fail_load(exc: LookupError, *, log_level: int | str | None) -> int:
    """Report a :func:`load_app` failure: one line, then the traceback at debug level.

    An exception raised while importing the module is the ``__cause__`` of
    ``exc``; with ``log_level`` debug its traceback follows the line.
    """
    cause = exc.__cause__
    debug = log_level in (logging.DEBUG, "DEBUG", "debug")
    if cause is None or debug:
        status = fail(str(exc))
    else:
        status = fail(f"{exc} ({DEBUG_HINT})")
    if cause is not None and debug:
        traceback.print_exception(cause, file=sys.stderr)
    return status


def _where(path: str) -> str:
    """``path`` relative to the current directory when it lies below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def import_error_summary(module_name: str, exc: BaseException) -> str:
    """One line for an exception raised while importing ``module_name``: what and where.

    The place is the line a ``SyntaxError`` points at, else the innermost frame
    of the traceback outside the import machinery (the line that raised).
    """
    what = f"{type(exc).__name__}: {exc}"
    filename: str | None = None
    lineno: int | None = None
    if isinstance(exc, SyntaxError):
        what = f"{type(exc).__name__}: {exc.msg}"
        filename, lineno = exc.filename, exc.lineno
    else:
        for frame, frame_lineno in traceback.walk_tb(exc.__traceback__):
            code_file = frame.f_code.co_filename
            if not code_file.startswith("<frozen "):
                filename, lineno = code_file, frame_lineno
    where = f"{_where(filename)}, line {lineno}: " if filename and lineno else ""
    return f"cannot import {module_name!r}: {where}{what}"


def use_app_dir(app_dir: str | None) -> None:
    """Make ``app_dir`` (default: the current directory) the first place imports look.

    Error handling:
        ``LookupError`` when ``app_dir`` is not a directory.
    """
    if app_dir is None:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        return
    path = os.path.abspath(app_dir)
    if not os.path.isdir(path):
        raise LookupError(f"--app-dir {app_dir}: no such directory")
    if sys.path[:1] != [path]:
        sys.path.insert(0, path)


def _split(spec: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``MODULE:ATTR``, or a LookupError saying what to type."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LookupError(f"{spec!r} is not of the form MODULE:ATTR")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        path = os.path.normpath(module_name.removesuffix(".py"))
        directory, base = os.path.split(path)
        if os.path.isabs(path) or directory.startswith(".."):
            better = f"{base}:{attr} --app-dir {directory}"
        else:
            better = f"{path.replace(os.sep, '.')}:{attr}"
        raise LookupError(
            f"{spec!r} names a file; give the module's dotted name without .py: {better}"
        )
    return module_name, attr


def check_spec(spec: str) -> None:
    """The form checks of :func:`load_app`, without importing anything (LookupError)."""
    _split(spec)


def _handler_classes(module: ModuleType) -> list[str]:
    """Names of the classes defined in ``module`` that have a ``handle`` method."""
    return [
        name
        for name, value in vars(module).items()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and callable(getattr(value, "handle", None))
    ]


def _import(module_name: str, app_dir: str | None) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            top = module_name.partition(".")[0]
            if missing != top:
                raise LookupError(f"no module named {missing!r}") from None
            if app_dir is None:
                where = f"in the current directory ({os.getcwd()}) nor on sys.path"
                how = f"run peregrine-rt where {top}.py (or {top}/) is, or add --app-dir DIR"
            else:
                where = f"in --app-dir {app_dir} nor on sys.path"
                how = "check the directory and the module's name"
            raise LookupError(f"no module named {missing!r} {where}: {how}") from None
        raise LookupError(import_error_summary(module_name, exc)) from exc
    except Exception as exc:
        raise LookupError(import_error_summary(module_name, exc)) from exc


def find_attr(module: ModuleType, spec: str, attr: str) -> object:
    """``module.attr`` (dotted), or a LookupError naming the handler classes it has."""
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            message = f"module {module.__name__!r} has no attribute {attr!r}"
            candidates = _handler_classes(module)
            close = difflib.get_close_matches(attr, candidates, n=1)
            if close:
                message += f": did you mean {module.__name__}:{close[0]}?"
            elif candidates:
                message += f"; its handler classes: {', '.join(candidates)}"
            raise LookupError(message) from None
    if isinstance(obj, ModuleType):
        candidates = _handler_classes(module)
        example = candidates[0] if candidates else "MyHandler"
        raise LookupError(
            f"{spec!r} is a module ({obj.__name__}), not a class: name the handler "
            f"class, e.g. {module.__name__}:{example}"
        )
    return obj


def load_app(spec: str, app_dir: str | None = None) -> object:
    """Import ``MODULE:ATTR`` from ``app_dir`` (default: the current directory, as ``python -m``).

    Error handling:
        ``LookupError`` with the one line to show; when importing the module
        raised, that exception is its ``__cause__`` (see :func:`fail_load`).
    """
    module_name, attr = _split(spec)
    use_app_dir(app_dir)
    module = _import(module_name, app_dir)
    return find_attr(module, spec, attr)


def find_os_error(exc: BaseException) -> OSError | None:
    """The OSError in ``exc`` (trio reports nursery failures as exception groups)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_os_error(inner)
            if found is not None:
                return found
    return None


def unwrap_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What ``group`` holds under its wrappers of one: a lone exception, or a group of several.

    trio's strict exception groups wrap whatever leaves a nursery, once per
    nursery crossed; when that is a single exception, the caller deserves it
    as itself (the unwrapping idiom of trio's documentation on
    ``strict_exception_groups``), and when several failed together, the group
    that holds them.  Raise the result outside the ``except`` block that
    caught ``group``, so that the group does not become its ``__context__``.
    """
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def cannot_listen(config: Config, exc: OSError) -> str:
    """``cannot listen on HOST:PORT: ...`` (or the Unix socket's path) for a bind error."""
    if config.uds is not None:
        where = config.uds
    else:
        host = f"[{config.host}]" if ":" in config.host else config.host
        where = f"{host}:{config.port}"
    return f"cannot listen on {where}: {exc}"
