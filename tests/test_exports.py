"""The public surface: __all__ lists exist and are sorted; the sans-IO core never imports trio."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import peregrine_rt
import peregrine_rt._http
import peregrine_rt.exceptions
import peregrine_rt.handlers
import peregrine_rt.testing

HTTP_DIR = Path(peregrine_rt._http.__file__).parent
HTTP_MODULES = sorted(HTTP_DIR.glob("*.py"))


@pytest.mark.parametrize(
    "module",
    [
        peregrine_rt,
        peregrine_rt._http,
        peregrine_rt.exceptions,
        peregrine_rt.handlers,
        peregrine_rt.testing,
    ],
    ids=lambda m: m.__name__,
)
def test_all_names_exist(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_the_handler_protocols_are_exported_from_the_package() -> None:
    for name in peregrine_rt.handlers.__all__:
        assert name in peregrine_rt.__all__
        assert getattr(peregrine_rt, name) is getattr(peregrine_rt.handlers, name)


def isort_style_key(name: str) -> tuple[int, list[int | str]]:
    """The order ruff's RUF022 (the project's linter) keeps ``__all__`` in.

    SCREAMING_SNAKE_CASE constants first, then CamelCase classes, then the rest;
    within each group a natural sort (runs of digits compare as numbers).
    """
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", name)]
    return group, natural


def test_isort_style_key() -> None:
    names = ["run", "Server", "MAX_B", "__version__", "Data", "CLOSED", "H10", "H9", "MAX_A2"]
    assert sorted(names, key=isort_style_key) == [
        "CLOSED",
        "H9",
        "H10",
        "MAX_A2",
        "MAX_B",
        "Data",
        "Server",
        "__version__",
        "run",
    ]


@pytest.mark.parametrize(
    "module",
    [
        peregrine_rt,
        peregrine_rt._http,
        peregrine_rt.exceptions,
        peregrine_rt.handlers,
        peregrine_rt.testing,
    ],
    ids=lambda m: m.__name__,
)
def test_all_is_sorted_and_unique(module: ModuleType) -> None:
    assert len(set(module.__all__)) == len(module.__all__)
    assert list(module.__all__) == sorted(module.__all__, key=isort_style_key)


def test_http_modules_are_found() -> None:
    # Guard against the scan below passing because it scanned nothing.
    names = {path.name for path in HTTP_MODULES}
    assert {"__init__.py", "_parser.py", "_writer.py"} <= names


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


@pytest.mark.parametrize("path", HTTP_MODULES, ids=lambda p: p.name)
def test_http_core_never_imports_trio(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    imported = _imported_modules(ast.parse(source, filename=str(path)))
    assert not {name for name in imported if name == "trio" or name.startswith("trio.")}


def test_import_scan_sees_trio() -> None:
    # The scanner itself: it must notice every way of importing trio.
    for source in (
        "import trio",
        "import trio.lowlevel as ll",
        "from trio import open_nursery",
        "def f():\n    from trio.abc import Stream",
        "importlib.import_module('trio')",
        "__import__('trio')",
    ):
        assert any(n.split(".")[0] == "trio" for n in _imported_modules(ast.parse(source)))


def test_http_package_imports_without_trio() -> None:
    # The transitive check: import the _http package (and whatever it imports,
    # such as peregrine_rt.exceptions) with trio made unimportable.  The
    # top-level package __init__ is bypassed, as it may import the trio shell.
    code = (
        "import sys, types\n"
        "sys.modules['trio'] = None\n"  # any `import trio` now raises ImportError
        "pkg = types.ModuleType('peregrine_rt')\n"
        f"pkg.__path__ = [{str(HTTP_DIR.parent)!r}]\n"
        "sys.modules['peregrine_rt'] = pkg\n"
        "import peregrine_rt._http\n"
        "assert 'peregrine_rt._http._parser' in sys.modules\n"
        "assert not any(m == 'trio' or m.startswith('trio.') for m in sys.modules"
        " if sys.modules[m] is not None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_the_package_imports_without_the_redis_extra() -> None:
    """coredis is optional (peregrine_rt[redis]): all but the Redis classes work without it."""
    script = """
import builtins, sys
real = builtins.__import__
def refuse(name, *args, **kwargs):
    if name == "coredis" or name.startswith("coredis."):
        raise ImportError("no coredis in this test")
    return real(name, *args, **kwargs)
builtins.__import__ = refuse
import peregrine_rt as pr
from peregrine_rt import *
import peregrine_rt.client, peregrine_rt.testing
assert pr.Channels and pr.SQLiteHistory and pr.Presence and pr.emit
for lazy in ("RedisHub", "RedisHistory"):
    try:
        getattr(pr, lazy)
    except ImportError:
        pass
    else:
        raise AssertionError(lazy + " imported without coredis")
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
