"""Compact JSON text, as every part of the toolkit writes it."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps"]


def dumps(data: Any) -> str:
    """JSON text without spaces, UTF-8 kept as is (``ensure_ascii=False``).

    >>> dumps({"a": [1, "é"]})
    '{"a":[1,"é"]}'
    """
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
