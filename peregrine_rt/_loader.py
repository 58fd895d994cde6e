"""Finding the application: ``MODULE:ATTR`` to a handler, and the command line's errors.

Shared by the command line (``_cli``) and the worker processes (``_workers``),
which import the application again in each worker.
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["check_spec", "fail", "find_os_error", "load_app", "sole_exception"]


def fail(message: str) -> int:
    """Print ``peregrine-rt: error: MESSAGE`` to stderr; the exit status 2."""
    print(f"peregrine-rt: error: {message}", file=sys.stderr)
    return 2


def load_app(spec: str) -> object:
    """Import ``MODULE:ATTR`` (the current directory is importable, as with ``python -m``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LookupError(f"{spec!r} is not of the form MODULE:ATTR")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LookupError(f"no module named {module_name!r}") from None
        raise
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LookupError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


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


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` and its nested groups, or None if there are more.

    trio's strict exception groups wrap whatever leaves a nursery; when that is
    a single exception, the caller deserves it as itself (the unwrapping idiom
    of trio's documentation on ``strict_exception_groups``).  Raise it outside
    the ``except`` block that caught the group, so that it keeps its own
    ``__context__`` instead of gaining the group as one.
    """
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def check_spec(spec: str) -> None:
    """The form checks of :func:`load_app`, without importing anything (LookupError)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LookupError(f"{spec!r} is not of the form MODULE:ATTR")
