"""``python -m peregrine_rt ...`` with cProfile switched on and off by signals (``bench/asgi.py --profile``).

``python -m bench.servers.profiled OUT ARGS...`` runs the command line with
``ARGS``; SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats to
``OUT``.  So a profile covers the load window only, not imports and start-up.
The handlers run in the main thread, where trio runs the server.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from collections.abc import Callable
from types import FrameType

profiler = cProfile.Profile()


def _start(signum: int, frame: FrameType | None) -> None:
    profiler.enable()


def _stop(signum: int, frame: FrameType | None) -> None:
    profiler.disable()
    profiler.dump_stats(OUT)


def serve_between_signals(
    start: Callable[[int, FrameType | None], None], stop: Callable[[int, FrameType | None], None]
) -> None:
    """Run ``peregrine-rt`` with ``sys.argv[2:]`` here; SIGUSR1 calls ``start``, SIGUSR2 ``stop``.

    Also ``bench/servers/opcounted.py``'s launcher.
    """
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["peregrine-rt", *sys.argv[2:]]
    runpy.run_module("peregrine_rt", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    OUT = sys.argv[1]
    serve_between_signals(_start, _stop)
