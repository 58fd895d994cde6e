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
from itertools import accumulate
from typing import Any, Final

from .exceptions import InvalidJSON

__all__ = ["JSON_MAX_DEPTH", "deeper_than", "dumps", "loads", "nesting_depth"]

JSON_MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects :func:`loads` accepts by default."""

# Reading the nesting: drop every backslash escape (so that the only quotes
# left are those that open and close strings), drop the strings (every other
# piece between quotes), keep the brackets, "{" read as "[" and "}" as "]".
# All of it is bytes methods in C; Python code runs per block of brackets, not
# per bracket (see deeper_than).  On malformed text the result is only an
# estimate, which is enough: json refuses that text anyway, and it never
# recurses past the point where the estimate and the truth part.
_ESCAPE: Final = re.compile(rb"\\[\s\S]")
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(c for c in range(256) if c not in b"[]{}")
_STEP: Final = (0,) * 91 + (1, 0, -1)  # indexed by byte: "[" (91) +1, "]" (93) -1


def _brackets(text: str | bytes) -> bytes:
    """The brackets of the JSON ``text`` outside strings, as ``[`` and ``]``, in order."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    if b'"' in data:
        data = b"".join(data.split(b'"')[::2])
    return data.translate(_BRACKETS, _NOT_BRACKETS)


def dumps(data: Any) -> str:
    """JSON text without spaces, UTF-8 kept as is (``ensure_ascii=False``).

    >>> dumps({"a": [1, "é"]})
    '{"a":[1,"é"]}'
    """
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def nesting_depth(text: str | bytes) -> int:
    """How deeply arrays and objects nest in the JSON ``text`` (UTF-8 if bytes).

    One pass, no recursion; brackets inside strings do not count.  On valid
    JSON the answer is exact; on malformed text it is an estimate.

    >>> nesting_depth('{"a": [1, "]]"], "b": {}}')
    2
    """
    return max(accumulate(map(_STEP.__getitem__, _brackets(text))), default=0)


def deeper_than(text: str | bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` in ``text`` (UTF-8 if bytes).

    A text with at most ``limit`` opening brackets cannot, and is answered by
    two counts.  Otherwise the brackets are read in blocks of ``limit``: a
    block whose opening brackets cannot lift the depth past ``limit`` is
    passed with two counts, and only the others are followed bracket by
    bracket, up to the first level past ``limit``.
    """
    if isinstance(text, str):
        opening = text.count("[") + text.count("{")
    else:
        opening = text.count(b"[") + text.count(b"{")
    if opening <= limit:
        return False
    brackets = _brackets(text)
    block = max(limit, 1)
    depth = 0
    for start in range(0, len(brackets), block):
        part = brackets[start : start + block]
        opening = part.count(b"[")
        if depth + opening > limit:
            for level in accumulate(map(_STEP.__getitem__, part), initial=depth):
                if level > limit:
                    return True
        depth += 2 * opening - len(part)
    return False


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
    utf8: bytes | None = None  # the bytes, when the depth can be read from them as they are
    if not isinstance(text, str):
        encoding = json.detect_encoding(text)
        try:
            decoded = text.decode(encoding, "surrogatepass")
        except UnicodeDecodeError:
            raise InvalidJSON(f"invalid JSON: not {encoding.upper()} text") from None
        if type(text) is bytes and encoding.startswith("utf-8"):
            utf8 = text
        text = decoded
    if deeper_than(text if utf8 is None else utf8, max_depth):
        raise InvalidJSON(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"invalid JSON: {exc.msg}: line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # a max_depth beyond what the interpreter's stack allows
        raise InvalidJSON(f"JSON nested too deeply for this server (limit {max_depth})") from None
