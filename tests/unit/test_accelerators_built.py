"""Both C accelerators are built where a compiler is at hand, in use unless turned off, and fresh.

``peregrine_rt/_http/_speedups.c`` (the request scan and the response writer)
and ``peregrine_rt/_ws_speedups.c`` (the WebSocket frame reader) are optional
extensions: without a compiler the install goes on in pure Python.  Under CI a
compiler is expected, so a missing build fails there and is skipped elsewhere.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from peregrine_rt import _frames
from peregrine_rt._http import _parser

PACKAGE = Path(_frames.__file__).parent

# (module, its C source, whether the package uses it now)
ACCELERATORS: list[tuple[str, Path, Callable[[], bool]]] = [
    ("peregrine_rt._http._speedups", PACKAGE / "_http" / "_speedups.c", lambda: _parser.SPEEDUPS),
    ("peregrine_rt._ws_speedups", PACKAGE / "_ws_speedups.c", lambda: _frames.FRAME_SPEEDUPS),
]
IDS = [name.rsplit(".", 1)[1] for name, _, _ in ACCELERATORS]


def _built(name: str, source: Path) -> Path:
    """The extension's file; skipped (failed under CI) when it is not built."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        why = f"the C accelerator ({source.relative_to(PACKAGE.parent)}) is not built"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: under CI a C compiler is expected and the build must work")
        pytest.skip(why)
    assert module.__file__ is not None
    return Path(module.__file__)


@pytest.mark.parametrize(("name", "source", "in_use"), ACCELERATORS, ids=IDS)
def test_extension_is_built_and_in_use(name: str, source: Path, in_use: Callable[[], bool]) -> None:
    _built(name, source)
    turned_off = os.environ.get("PEREGRINE_RT_NO_SPEEDUPS", "") not in ("", "0")
    assert in_use() is not turned_off


@pytest.mark.parametrize(("name", "source", "in_use"), ACCELERATORS, ids=IDS)
def test_extension_is_not_older_than_its_source(
    name: str, source: Path, in_use: Callable[[], bool]
) -> None:
    # An editable install builds the extension once; a later edit of the C
    # source is not picked up until `pip install -e .` runs again.
    built = _built(name, source)
    assert built.stat().st_mtime >= source.stat().st_mtime, (
        f"{source.name} changed since it was built: run `pip install -e .`"
    )
