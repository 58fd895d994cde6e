"""SQLiteHistory appends under load: many tasks appending beside a CPU-busy task.

Run: ``.venv/bin/python bench/history_append.py`` (a few seconds; a temp
directory, nothing else).  ``--before DIR`` runs the same with the
``peregrine_rt`` found in DIR first (a worktree of an older commit) and
prints both, for a before/after of one machine at one time.

Why the busy task: sqlite3 runs in a worker thread, and each statement it
runs hands the GIL back and forth with the event loop; while the loop is
busy, each such trip can wait out Python's switch interval (5 ms).  The
figure is appends per second over 20 tasks x 100 appends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import trio

TASKS = 20
EACH = 100


async def measure() -> float:
    from peregrine_rt._channels._sqlite import SQLiteHistory

    with tempfile.TemporaryDirectory() as directory:
        history = SQLiteHistory(directory)
        done = False

        async def busy() -> None:
            while not done:
                sum(range(20_000))  # CPU work between checkpoints, as a busy server has
                await trio.sleep(0)

        async def publisher(k: int) -> None:
            for i in range(EACH):
                await history.append(f"t{k % 4}", "e", {"i": i, "pad": "x" * 100})

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            async with trio.open_nursery() as publishers:
                for k in range(TASKS):
                    publishers.start_soon(publisher, k)
            done = True
        elapsed = time.perf_counter() - started
        await history.aclose()
    return TASKS * EACH / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a worktree whose peregrine_rt to measure first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(trio.run(measure))
        return
    results = {}
    for label, path in (("before", args.before), ("after", None)):
        if label == "before" and path is None:
            continue
        env = dict(os.environ)
        if path is not None:
            env["PYTHONPATH"] = path
        out = subprocess.run(
            [sys.executable, __file__, "--child"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        results[label] = float(out.stdout.strip())
        print(f"{label:>6}: {results[label]:10,.0f} appends/s ({TASKS} tasks x {EACH}, busy loop)")
    if len(results) == 2:
        print(f" ratio: {results['after'] / results['before']:.1f}x")


if __name__ == "__main__":
    main()
