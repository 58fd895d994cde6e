"""The fast path and the general path of RequestParser must be indistinguishable.

``RequestParser()`` tries its fast path first (with the C accelerator where it
is built; ``speedups=False`` keeps the fast path in pure Python);
``RequestParser(fast_path=False)`` reads every head line by line.  For the same
bytes all three must report the same
requests (every attribute of every head, the bodies and the trailers), or
refuse at the same request with the same exception type and ``status_hint``.
How the bytes arrive must not matter either: the fast path only sees a head
that is complete in the buffer, so feeding in pieces mixes the two paths.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hypothesis import event, given
from hypothesis import strategies as st

from peregrine_rt._http import RequestParser
from peregrine_rt.exceptions import LimitExceeded, RemoteProtocolError

from .strategies import (
    GeneratedRequests,
    PeregrineRun,
    mutated_requests,
    pieces,
    request_sequences,
    run_peregrine,
)

_HEAD_ATTRIBUTES = (
    "method",
    "target",
    "http_version",
    "host",
    "keep_alive",
    "content_length",
    "chunked",
    "upgrade",
    "expect_continue",
    "path",
    "raw_path",
    "raw_query",
    "authority",
)


class Snapshot(NamedTuple):
    """Everything observable about one run, as plain comparable data."""

    requests: list[tuple[object, ...]]
    error: tuple[type[BaseException], int] | None
    """The exception type and ``status_hint``, if the stream was refused."""
    closed: bool
    leftover: bytes


def snapshot(run: PeregrineRun) -> Snapshot:
    if run.error is not None and not isinstance(run.error, RemoteProtocolError):
        raise AssertionError(f"the parser raised {run.error!r}") from run.error
    requests = [
        (
            *(getattr(r.head, name) for name in _HEAD_ATTRIBUTES),
            list(r.head.headers.raw),
            r.body,
            r.trailers,
        )
        for r in run.requests
    ]
    if run.error is None:
        return Snapshot(requests, None, run.closed, run.leftover)
    # After a refusal the connection is closed: what was left unread does not matter.
    return Snapshot(requests, (type(run.error), run.error.status_hint), False, b"")


# The three ways of reading a head: RequestParser's arguments for each.
PATHS: dict[str, dict[str, Any]] = {
    "fast": {},  # the default: the C accelerator where it is built
    "py-fast": {"speedups": False},
    "general": {"fast_path": False},
}


def outcomes(data: bytes, chunks: list[bytes], **limits: Any) -> dict[str, Snapshot]:
    """The snapshot for each path, fed whole and in ``chunks``."""
    return {
        f"{path}/{how}": snapshot(run_peregrine(RequestParser(**options, **limits), feed))
        for path, options in PATHS.items()
        for how, feed in (("whole", [data]), ("pieces", chunks))
    }


def assert_consistent(results: dict[str, Snapshot]) -> None:
    """All paths agree exactly, fed the same way; any feeding gives the same requests.

    Across feedings only the requests and whether the stream was refused must
    match: when a head breaks two size limits at once, which one is noticed
    first (414 or 431) may depend on where the bytes were cut.
    """
    for how in ("whole", "pieces"):
        general = results[f"general/{how}"]
        for path in ("fast", "py-fast"):
            fast = results[f"{path}/{how}"]
            assert fast == general, (
                f"fed {how}, the paths differ:\n{path}: {fast}\ngeneral: {general}"
            )
    whole, cut = results["fast/whole"], results["fast/pieces"]
    assert (cut.requests, cut.error is None) == (whole.requests, whole.error is None), (
        f"the result depends on where the bytes are cut:\nwhole:  {whole}\npieces: {cut}"
    )


@given(generated=request_sequences(), data=st.data())
def test_valid_requests_same_on_both_paths(
    generated: GeneratedRequests, data: st.DataObject
) -> None:
    chunks = data.draw(pieces(generated.data), label="pieces")
    results = outcomes(generated.data, chunks)
    assert_consistent(results)
    assert results["fast/whole"].error is None
    assert len(results["fast/whole"].requests) == len(generated.requests)


@given(raw=mutated_requests(), data=st.data())
def test_mutated_requests_same_on_both_paths(raw: bytes, data: st.DataObject) -> None:
    chunks = data.draw(pieces(raw), label="pieces")
    results = outcomes(raw, chunks)
    assert_consistent(results)
    error = results["fast/whole"].error
    event("accepted" if error is None else f"refused: {error[1]}")


_LIMIT_NAMES = (
    "max_request_line",
    "max_header_line",
    "max_headers_size",
    "max_header_count",
    "max_body_size",
)


@st.composite
def limits_for(draw: st.DrawFn, raw: bytes) -> dict[str, Any]:
    """Size limits for ``raw``: small ones, and ones right at the length of its lines.

    A limit equal to a line's length, or one off, is where off-by-one
    mistakes (a CR counted or not) show.
    """
    lines = raw.split(b"\n")
    sizes = sorted({len(line.rstrip(b"\r")) for line in lines} | {len(raw)})
    head_sizes = [m + 1 for m in range(len(raw)) if raw.startswith(b"\n\r\n", m)]
    longest = max(len(line.rstrip(b"\r")) for line in lines)
    value = st.one_of(
        st.integers(0, 400),
        st.sampled_from([longest, longest, *sizes, *head_sizes]).flatmap(
            lambda n: st.sampled_from([max(0, n - 1), n, n + 1])
        ),
    )
    names = draw(st.sets(st.sampled_from(_LIMIT_NAMES), max_size=3))
    limits: dict[str, Any] = {}
    for name in sorted(names):
        if name == "max_header_count":
            limits[name] = draw(st.integers(0, 8))
        elif name == "max_body_size":
            limits[name] = draw(st.none() | value)
        else:
            limits[name] = draw(value)
    return limits


@given(raw=request_sequences().map(lambda g: g.data) | mutated_requests(), data=st.data())
def test_size_limits_same_on_both_paths(raw: bytes, data: st.DataObject) -> None:
    limits = data.draw(limits_for(raw), label="limits")
    chunks = data.draw(pieces(raw), label="pieces")
    results = outcomes(raw, chunks, **limits)
    assert_consistent(results)
    error = results["fast/whole"].error
    event("accepted" if error is None else f"refused: {error[1]}")


def _accepts(raw: bytes, chunks: list[bytes], path: str, **limits: Any) -> bool:
    run = run_peregrine(RequestParser(**PATHS[path], **limits), chunks)
    snapshot(run)  # only RemoteProtocolError may escape
    return run.error is None


@given(
    generated=request_sequences(max_requests=1),
    name=st.sampled_from(_LIMIT_NAMES),
)
def test_limit_thresholds_do_not_depend_on_path_or_feeding(
    generated: GeneratedRequests, name: str
) -> None:
    """The smallest limit that lets valid requests through is the same however they are read.

    Found with the default parser fed whole, then checked on every path fed
    whole and byte by byte: accepted at the threshold, refused one below.
    """
    raw = generated.data
    low, high = 0, len(raw) + 1
    assert _accepts(raw, [raw], "fast", **{name: high})
    while low < high:  # the smallest accepting value
        mid = (low + high) // 2
        if _accepts(raw, [raw], "fast", **{name: mid}):
            high = mid
        else:
            low = mid + 1
    bytewise = [raw[i : i + 1] for i in range(len(raw))]
    for path in PATHS:
        for chunks in ([raw], bytewise):
            assert _accepts(raw, chunks, path, **{name: low}), (path, len(chunks), low)
            if low:
                assert not _accepts(raw, chunks, path, **{name: low - 1}), (
                    path,
                    len(chunks),
                    low - 1,
                )
    event(f"{name} threshold found")


# -- examples ------------------------------------------------------------------------


def test_cached_header_block_does_not_bypass_max_headers_size() -> None:
    # The fast path reuses what it found in the previous request's header block when the next
    # block is byte-for-byte the same; a longer request line must still count against the limit.
    block = b"Host: a\r\nX-Pad: " + b"p" * 150 + b"\r\n\r\n"
    first = b"GET / HTTP/1.1\r\n" + block
    second = b"GET /" + b"a" * 60 + b" HTTP/1.1\r\n" + block
    assert len(first) <= 220 < len(second)
    results = outcomes(first + second, [first, second], max_headers_size=220)
    assert_consistent(results)
    assert len(results["fast/whole"].requests) == 1
    assert results["fast/whole"].error == (LimitExceeded, 431)


# -- bugs found by these tests (they fail until the parser is fixed) -------------------

CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_bug_trailer_line_limit_depends_on_where_the_bytes_are_cut() -> None:
    # A trailer line of exactly max_header_line bytes is accepted when its CRLF arrives in one
    # piece, and refused (431) when the piece ends between CR and LF: the incomplete-line check
    # counts the CR (the head's check allows for it with "+ 1").
    trailer = b"X: " + b"v" * 27  # 30 bytes
    data = CHUNKED_POST + b"0\r\n" + trailer + b"\r\n\r\n"
    cut = data.index(trailer) + len(trailer) + 1  # just after the CR
    results = outcomes(data, [data[:cut], data[cut:]], max_header_line=30)
    assert results["fast/whole"].error is None  # accepted when fed whole
    assert_consistent(results)


def test_bug_chunk_size_line_limit_depends_on_where_the_bytes_are_cut() -> None:
    # The same off-by-one for chunk-size lines (MAX_CHUNK_LINE = 4096): a 4096-byte line is
    # accepted whole and refused when the piece ends between its CR and LF.
    line = b"1;" + b"e" * 4094
    data = CHUNKED_POST + line + b"\r\nx\r\n0\r\n\r\n"
    cut = data.index(line) + len(line) + 1
    results = outcomes(data, [data[:cut], data[cut:]])
    assert results["fast/whole"].error is None
    assert_consistent(results)
