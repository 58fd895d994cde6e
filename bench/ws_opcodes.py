"""Bytecode instructions per WebSocket echo, by function: a deterministic cost of the message path.

Run: ``.venv/bin/python bench/ws_opcodes.py [--connections 50] [--seconds 3]
[--before DIR] [--top 25]`` (the load generator's packages:
``.venv/bin/pip install -r bench/requirements-ws.txt``).

``bench/ws.py`` measures messages per second, which move by several per cent
from run to run on a shared 2-core machine; what a change removes from the
message path is often less.  This script counts what does not move: the
Python bytecode instructions the echo server (``bench.servers.ws_peregrine``)
executes per message, with ``sys.settrace`` opcode events
(``bench/servers/opcounted.py``), while ``bench/ws_client.py`` ping-pongs
32-byte messages on ``--connections`` sockets.  Counting starts after a second
of load and lasts ``--seconds``; the client's count of echoes over the same
window divides it.  Instructions are not time (a call or an allocation costs
more than a ``LOAD_FAST``) and C code (the kernel, the C accelerators, the
interpreter's own work) is not counted, but fewer of them on the path of every
message is a saving that wall-clock runs can then confirm.  Repeated runs agree
within about 1 %.

``--before DIR`` (a worktree of another commit, C accelerators built) counts
that tree's server too (``PYTHONPATH=DIR``).  The output: per server, the
instructions per message in all, by package (peregrine_rt, trio, outcome, the
standard library, attrs' generated methods), and the ``--top`` functions; the
last line is ``opcodes_per_echo <server>=<n> ...``.  Every process started
here is stopped by its PID (``_procs.stop_process``) and killed if this script
dies.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from _procs import ROOT, BenchError, Peer, RunningServer, check_tree, stop_process
from ws import RESULT_TIMEOUT, Client, _read_ready

COUNTER = ROOT / "bench" / "servers" / "opcounted.py"
WARMUP = 1.0  # seconds of load before counting starts
DUMP_TIMEOUT = 30.0  # seconds for the server to write its counts


def group(file: str) -> str:
    """The package a counted function belongs to."""
    if file.startswith("peregrine_rt/"):
        return "peregrine_rt"
    if file.startswith("site-packages/"):
        return file.split("/")[1]
    if file.startswith("lib/python3."):
        return "standard library"
    if file.startswith("<attrs generated"):
        return "attrs (generated)"
    if file.startswith("bench/"):
        return "the handler (bench)"
    return file


def measure(tree: Path | None, conns: int, seconds: float, logdir: Path) -> tuple[dict, int]:
    """The counts (``(file, function) -> n``) and the echoes over the counted window."""
    out = logdir / f"opcodes-{'before' if tree else 'after'}.json"
    path = f"{tree}{os.pathsep}{ROOT}" if tree else str(ROOT)
    peer = Peer(
        key="peregrine_before" if tree else "peregrine",
        label="peregrine_rt BEFORE" if tree else "peregrine_rt",
        modules=(),
        argv=lambda port: [
            sys.executable,
            str(COUNTER),
            str(out),
            "bench.servers.ws_peregrine:Echo",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={"PYTHONPATH": path},
    )
    server = RunningServer(peer, logdir)
    try:
        server.wait_ready()
        with open(logdir / f"client-{peer.key}.log", "wb") as log:
            client = Client("load", f"ws://127.0.0.1:{server.port}/", conns, 120 + seconds, log)
            try:
                ok, notes = _read_ready(client, conns)
                if ok < conns or notes:
                    raise BenchError(f"{ok} of {conns} connections opened: {'; '.join(notes)}")
                client.send("START")
                time.sleep(WARMUP)
                os.kill(server.proc.pid, signal.SIGUSR1)
                client.send("MARK")
                time.sleep(seconds)
                os.kill(server.proc.pid, signal.SIGUSR2)
                client.send("STOP")
                result = json.loads(client.line(RESULT_TIMEOUT))
                client.finish()
            finally:
                stop_process(client.proc, timeout=1.0)
        deadline = time.monotonic() + DUMP_TIMEOUT
        while not out.exists():
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{peer.label} wrote no counts to {out}")
            time.sleep(0.1)
    finally:
        server.stop()
    counts = {(file, fn): n for file, fn, n in json.loads(out.read_text())}
    if result["mismatches"] or result["lost"] or not result["messages"]:
        raise BenchError(f"the load run went wrong: {result}")
    return counts, int(result["messages"])


def report(label: str, counts: dict, messages: int, top: int) -> float:
    total = sum(counts.values()) / messages
    print(f"{label}: {total:.0f} bytecode instructions per echo ({messages} echoes counted)")
    groups: dict[str, int] = {}
    for (file, _), n in counts.items():
        groups[group(file)] = groups.get(group(file), 0) + n
    for name, n in sorted(groups.items(), key=lambda kv: -kv[1]):
        if n / messages >= 0.5:
            print(f"  {n / messages:7.1f}  {name}")
    print(f"  top {top} functions:")
    for (file, fn), n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {n / messages:7.1f}  {fn}  ({file})")
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=3.0, help="counted seconds of load")
    ap.add_argument("--before", type=Path, metavar="DIR", help="another tree to count too")
    ap.add_argument("--top", type=int, default=25, help="functions listed per server")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    trees: list[Path | None] = [None]
    if args.before is not None:
        trees.append(check_tree(args.before))
    totals = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ws_opcodes-") as tmp:
            for tree in trees:
                label = "peregrine_rt" if tree is None else f"peregrine_rt BEFORE ({tree})"
                counts, messages = measure(tree, args.connections, args.seconds, Path(tmp))
                key = "peregrine" if tree is None else "peregrine_before"
                totals[key] = report(label, counts, messages, args.top)
                print()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    line = " ".join(f"{k}={v:.0f}" for k, v in totals.items())
    if "peregrine_before" in totals:
        line += f" after/before={totals['peregrine'] / totals['peregrine_before']:.3f}"
    print(f"opcodes_per_echo {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
