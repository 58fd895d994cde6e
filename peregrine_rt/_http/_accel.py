"""Loading an optional C accelerator: the one rule both of them follow.

The package has two (``_http/_speedups.c``, the request scan and response
writer; ``_ws_speedups.c``, the WebSocket frame reader).  Each is used only
when it was built, its ``INTERFACE`` is the one its Python module expects (a
build from older source is ignored, not misused), and
``PEREGRINE_RT_NO_SPEEDUPS`` is unset or ``0`` when peregrine_rt is imported.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["load_accelerator"]


def load_accelerator(name: str, interface: int) -> ModuleType | None:
    """The extension module ``name`` if it may be used (see the module docstring), else None."""
    if os.environ.get("PEREGRINE_RT_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:  # not built (no compiler at install time): pure Python
        return None
    return module if getattr(module, "INTERFACE", None) == interface else None
