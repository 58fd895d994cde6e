"""Request headers: raw order and bytes kept, case-insensitive lookup, built lazily.

The parser validates every header line while it reads the head, but it does not
split the block into name/value pairs unless somebody looks: most handlers read
two or three headers, many none.  :class:`Headers` splits once, on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

__all__ = ["Headers", "parse_cookie_header"]


def parse_cookie_header(header: str, cookies: dict[str, str]) -> None:
    """Add the ``name=value`` pairs of a ``Cookie`` header to ``cookies``.

    The first value of a name wins (one already in ``cookies`` stays);
    values are kept as sent, quotes included.
    """
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if sep and name and name not in cookies:
            cookies[name] = value.strip()


class Headers(Mapping[str, str]):
    """The header fields of a request, in the order received.

    A read-only mapping from lower-case field name to value (``str``, decoded
    as latin-1 so every byte survives).  Repeated fields are kept: ``headers[name]``
    joins them with ``", "`` as RFC 9110 §5.3 allows, :meth:`getlist` returns them
    separately, and :attr:`raw` gives the exact ``(name, value)`` bytes pairs
    as they arrived (names with their original case).
    """

    __slots__ = ("_block", "_index", "_raw")

    def __init__(
        self,
        raw: list[tuple[bytes, bytes]] | None = None,
        *,
        block: bytes = b"",
    ) -> None:
        # Either a ready list of pairs, or a block of already-validated
        # ``name: value\r\n`` lines to split on first use.  _speedups.c builds
        # Headers(block=...) without calling this (its make_headers): keep the
        # two in step (tests/unit/test_speedups.py compares every slot).
        self._raw = raw
        self._block = block
        self._index: dict[str, list[str]] | None = None

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """``(name, value)`` pairs exactly as received (value without surrounding OWS)."""
        raw = self._raw
        if raw is None:
            raw = []
            append = raw.append
            for line in self._block.split(b"\r\n")[:-1]:
                name, _, value = line.partition(b":")
                append((name, value.strip(b" \t")))
            self._raw = raw
        return raw

    def compact(self) -> None:
        """Drop the pairs and the index split from the block; the next use splits it again.

        For a request kept long after its headers were read (a WebSocket's):
        the block alone is a third of what the split forms hold.  Headers
        built from pairs (no block) keep them.
        """
        if self._block:
            self._raw = None
            self._index = None

    def _get_index(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self.raw:
                key = name.decode("ascii").lower()
                v = value.decode("latin-1")
                found = index.get(key)
                if found is None:
                    index[key] = [v]
                else:
                    found.append(v)
            self._index = index
        return index

    def __getitem__(self, name: str) -> str:
        return ", ".join(self._get_index()[name.lower()])

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]  # default is str | None, as for dict
        values = self._get_index().get(name.lower())
        if values is None:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, one entry per field line, in order."""
        return list(self._get_index().get(name.lower(), ()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._get_index()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get_index())

    def __len__(self) -> int:
        return len(self._get_index())

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self.raw == other.raw
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping, like dict
