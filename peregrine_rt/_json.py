"""JSON as every part of the toolkit writes it, and reads it from clients.

Reading a client's JSON is bounded: Python's ``json`` parser recurses once per
level of nesting, so ``[[[[…]]]]`` 100,000 levels deep raises
``RecursionError`` from deep inside it (a crash, not an answer).  :func:`loads`
first measures the nesting in one pass over the text, without recursion, and
refuses what is deeper than ``max_depth`` (``Config.json_max_depth``, 64 by
default) before ``json`` sees it.  Every refusal is one
:class:`~peregrine_rt.exceptions.InvalidJSON` with a short reason, which
``request.json()`` turns into 400 and ``JSONMixin`` into close code 1007.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from .exceptions import InvalidJSON

__all__ = ["JSON_MAX_DEPTH", "dumps", "loads", "nesting_depth"]

JSON_MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects :func:`loads` accepts by default."""

# What matters for nesting: brackets, and strings (whose brackets do not count).
# The string branch is written so that it cannot fail once it starts at a quote
# (an unterminated string runs to the end of the text), hence no backtracking:
# a text of many quotes is still read once.
_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)|[\[\]{}]')
_OPEN: Final = frozenset("[{")


def dumps(data: Any) -> str:
    """JSON text without spaces, UTF-8 kept as is (``ensure_ascii=False``).

    >>> dumps({"a": [1, "é"]})
    '{"a":[1,"é"]}'
    """
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def nesting_depth(text: str, stop: int | None = None) -> int:
    """How deeply arrays and objects nest in the JSON ``text`` (one pass, no recursion).

    Brackets inside strings do not count.  The count stops once it passes
    ``stop``, so a caller checking a limit need not read the rest.  On valid
    JSON the answer is exact; on malformed text it is only an estimate (the
    parser refuses that text anyway).

    >>> nesting_depth('{"a": [1, "]]"], "b": {}}')
    2
    """
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = text[m.start()]  # the token's first character (a string is not copied)
        if c == '"':
            continue
        if c in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop is not None and depth > stop:
                    break
        else:
            depth -= 1
    return deepest


def loads(text: str | bytes | bytearray, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """Parse a client's JSON ``text``, refusing malformed or too deeply nested input.

    Bytes are decoded as ``json.loads`` would (UTF-8, -16 or -32, detected).

    Raises:
        InvalidJSON: the text is not JSON (``"invalid JSON: Expecting value:
            line 1 column 1"``) or nests deeper than ``max_depth`` (``"JSON
            nested deeper than 64 levels"``).

    >>> loads('{"a": [1, 2]}')
    {'a': [1, 2]}
    >>> loads("[" * 65 + "]" * 65)
    Traceback (most recent call last):
      ...
    peregrine_rt.exceptions.InvalidJSON: JSON nested deeper than 64 levels
    """
    if not isinstance(text, str):
        encoding = json.detect_encoding(text)
        try:
            text = text.decode(encoding, "surrogatepass")
        except UnicodeDecodeError:
            raise InvalidJSON(f"invalid JSON: not {encoding.upper()} text") from None
    # Fewer brackets than the limit cannot nest deeper than it: the common
    # message is checked by two counts in C, without reading it in Python.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text, max_depth) > max_depth:
        raise InvalidJSON(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"invalid JSON: {exc.msg}: line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # a max_depth beyond what the interpreter's stack allows
        raise InvalidJSON(f"JSON nested too deeply for this server (limit {max_depth})") from None
