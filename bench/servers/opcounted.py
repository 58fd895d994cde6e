"""``python bench/servers/opcounted.py OUT ARGS...``: the server with its bytecode counted (``bench/ws_opcodes.py``).

Runs ``peregrine-rt ARGS`` in this process.  SIGUSR1 starts counting the
bytecode instructions the main thread executes (``sys.settrace`` with opcode
events), per function; SIGUSR2 stops and writes ``OUT``, a JSON list of
``[file, function, count]``.  So the count covers the load window only.  It
is run by its path, not with ``-m``: then ``PYTHONPATH`` decides which
``peregrine_rt`` loads (``--before``).  Tracing makes the server ~20 times
slower; counts are per message, not per second, so that does not matter.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from types import FrameType
from typing import Any

Tracer = Any  # sys.settrace's callback type, recursive

counts: Counter[tuple[str, str]] = Counter()


def _key(frame: FrameType) -> tuple[str, str]:
    code = frame.f_code
    name = code.co_filename
    for marker in ("site-packages/", "lib/python3.", "/peregrine_rt/", "/bench/"):
        if marker in name:
            name = (
                marker.strip("/") + ("" if marker.endswith(".") else "/") + name.split(marker, 1)[1]
            )
            break
    return name, code.co_qualname


def _tracer(frame: FrameType, event: str, arg: object) -> Tracer:
    frame.f_trace_opcodes = True
    key = _key(frame)

    def local(frame: FrameType, event: str, arg: object) -> Tracer:
        if event == "opcode":
            counts[key] += 1
        return local

    return local


def _start(signum: int, frame: FrameType | None) -> None:
    counts.clear()
    while frame is not None:  # the frames already running (trio's loop) count too
        frame.f_trace = _tracer(frame, "call", None)
        frame = frame.f_back
    sys.settrace(_tracer)


def _stop(signum: int, frame: FrameType | None) -> None:
    sys.settrace(None)
    while frame is not None:
        frame.f_trace = None  # type: ignore[assignment]
        frame = frame.f_back
    with open(OUT + ".part", "w") as f:
        json.dump([[file, fn, n] for (file, fn), n in counts.items()], f)
    os.replace(OUT + ".part", OUT)


if __name__ == "__main__":
    from profiled import serve_between_signals  # this folder is on sys.path: run by its path

    OUT = sys.argv[1]
    serve_between_signals(_start, _stop)
