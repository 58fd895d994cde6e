"""Zero-downtime restarts: HTTP clients hammer ``--workers N`` while SIGHUP replaces the workers.

Run: ``/tmp/iso.sh .venv/bin/python bench/restart.py [--workers 2] [--restarts 5]
[--fresh 4] [--keepalive 4] [--steady 1.0]``

The server is ``peregrine-rt restart_app:App --app-dir TMP --workers N``,
where ``restart_app.py`` is written by this script and rewritten before each
restart with a new ``VERSION``: every answer is ``PID VERSION``, so the script
sees which process answered and with which code.  Two kinds of client tasks
send ``GET /`` as fast as they can, on loopback:

* ``--fresh`` tasks open a new connection for every request
  (``Connection: close``), so they meet every accept queue;
* ``--keepalive`` tasks keep one connection and send request after request
  on it.  A request on a *reused* connection that the server closed before
  sending any byte of the answer is retried once on a new connection, as
  RFC 9112 section 9.3.1 allows for idempotent requests and as browsers, curl
  and Go's client do; such retries are counted and shown, never hidden.

A request **fails** when it gets no complete ``200`` answer (after that one
retry for keep-alive).  The script sends SIGHUP, waits for the supervisor's
``restart done`` line, checks that the new version answers, waits
``--steady`` seconds, and does it again ``--restarts`` times.  It prints the
failures over the total, retries, the latency p50/p99/max over the whole run
and over the restart windows only (SIGHUP to ``restart done``), and the
restart durations.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
RESTART_TIMEOUT = 30.0

APP_SOURCE = """\
import os

VERSION = {version!r}


class App:
    async def handle(self, request, response):
        response.text(f"{{os.getpid()}} {{VERSION}}")
"""


@dataclass
class Stats:
    ok: int = 0
    failed: int = 0
    retried: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start, latency)
    answers: dict[str, int] = field(default_factory=dict)  # "PID VERSION" -> count

    def fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1


class NoAnswer(Exception):
    """The connection ended before any byte of the answer (the retryable case)."""


async def read_response(stream: trio.SocketStream, buffer: bytearray) -> tuple[bytes, bool]:
    """(body, server keeps the connection) of one 200 answer; NoAnswer or ValueError."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            if buffer:
                raise ValueError("EOF inside the head")
            raise NoAnswer
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200 "):
        raise ValueError(lines[0].decode(errors="replace"))
    length = None
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    if length is None:
        raise ValueError("no Content-Length")
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            raise ValueError("EOF inside the body")
        rest += data
    buffer[:] = rest[length:]
    return rest[:length], keep


async def fresh_client(port: int, stats: Stats, stop: trio.Event) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while not stop.is_set():
        start = time.monotonic()
        try:
            with trio.fail_after(10):
                stream = await trio.open_tcp_stream(HOST, port)
                async with stream:
                    await stream.send_all(request)
                    body, _ = await read_response(stream, bytearray())
        except (OSError, trio.BrokenResourceError, trio.TooSlowError, NoAnswer, ValueError) as e:
            stats.fail(f"fresh: {type(e).__name__}: {e}")
            continue
        stats.ok += 1
        stats.samples.append((start, time.monotonic() - start))
        answer = body.decode()
        stats.answers[answer] = stats.answers.get(answer, 0) + 1


async def keepalive_client(port: int, stats: Stats, stop: trio.Event) -> None:
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    stream: trio.SocketStream | None = None
    reused = False
    buffer = bytearray()
    try:
        while not stop.is_set():
            start = time.monotonic()
            body = None
            for attempt in (1, 2):
                try:
                    with trio.fail_after(10):
                        if stream is None:
                            stream = await trio.open_tcp_stream(HOST, port)
                            reused = False
                            buffer.clear()
                        await stream.send_all(request)
                        body, keep = await read_response(stream, buffer)
                except (OSError, trio.BrokenResourceError, NoAnswer) as e:
                    if stream is not None:
                        await stream.aclose()
                        stream = None
                    if attempt == 1 and reused and not buffer:
                        stats.retried += 1  # closed before answering: RFC 9112 9.3.1
                        continue
                    stats.fail(f"keep-alive: {type(e).__name__}: {e}")
                except (ValueError, trio.TooSlowError) as e:
                    if stream is not None:
                        await stream.aclose()
                        stream = None
                    stats.fail(f"keep-alive: {type(e).__name__}: {e}")
                else:
                    reused = True
                    if not keep:
                        await stream.aclose()  # type: ignore[union-attr]  # set above
                        stream = None
                break
            if body is not None:
                stats.ok += 1
                stats.samples.append((start, time.monotonic() - start))
                answer = body.decode()
                stats.answers[answer] = stats.answers.get(answer, 0) + 1
    finally:
        if stream is not None:
            await stream.aclose()


class Supervisor:
    """The ``peregrine-rt ... --workers N`` process and its log (stderr, read by a thread)."""

    def __init__(self, app_dir: Path, workers: int) -> None:
        argv = [sys.executable, "-m", "peregrine_rt", "restart_app:App", "--app-dir"]
        argv += [str(app_dir), "--port", "0", "--workers", str(workers)]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []

    async def read_log(self) -> None:
        assert self.proc.stderr is not None
        stderr = self.proc.stderr
        while line := await trio.to_thread.run_sync(stderr.readline, abandon_on_cancel=True):
            self.lines.append(line)

    async def wait_for(self, pattern: str, since: int, timeout: float) -> re.Match[str]:
        with trio.fail_after(timeout):
            while True:
                for line in self.lines[since:]:
                    if match := re.search(pattern, line):
                        return match
                if self.proc.poll() is not None:
                    raise RuntimeError("the server exited:\n" + "".join(self.lines))
                await trio.sleep(0.01)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def main(args: argparse.Namespace) -> int:
    stats = Stats()
    windows: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp)
        module = app_dir / "restart_app.py"
        module.write_text(APP_SOURCE.format(version="v0"))
        server = Supervisor(app_dir, args.workers)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.read_log)
                found = await server.wait_for(r"workers on http://\S+:(\d+)", 0, READY_TIMEOUT)
                port = int(found.group(1))
                stop = trio.Event()
                async with trio.open_nursery() as clients:
                    for _ in range(args.fresh):
                        clients.start_soon(fresh_client, port, stats, stop)
                    for _ in range(args.keepalive):
                        clients.start_soon(keepalive_client, port, stats, stop)
                    await trio.sleep(args.steady)
                    for n in range(1, args.restarts + 1):
                        version = f"v{n}"
                        module.write_text(APP_SOURCE.format(version=version))
                        since = len(server.lines)
                        began = time.monotonic()
                        server.proc.send_signal(signal.SIGHUP)
                        await server.wait_for(r"restart done", since, RESTART_TIMEOUT)
                        windows.append((began, time.monotonic()))
                        seen = len(stats.answers)
                        with trio.fail_after(5):
                            while not any(a.endswith(f" {version}") for a in stats.answers):
                                await trio.sleep(0.01)
                        del seen
                        await trio.sleep(args.steady)
                    stop.set()
                nursery.cancel_scope.cancel()
        finally:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.proc.kill()
    total = stats.ok + stats.failed
    during = [lat for start, lat in stats.samples if any(a <= start <= b for a, b in windows)]
    overall = [lat for _, lat in stats.samples]
    pids = {answer.split()[0] for answer in stats.answers}
    print(
        f"workers={args.workers} restarts={args.restarts} clients: "
        f"{args.fresh} fresh-connection + {args.keepalive} keep-alive"
    )
    print(f"requests: {total}, failed: {stats.failed}, keep-alive retries: {stats.retried}")
    for why, count in sorted(stats.errors.items()):
        print(f"  {count} x {why}")
    ms = 1000
    print(
        f"latency all      p50 {percentile(overall, 50) * ms:.2f} ms, "
        f"p99 {percentile(overall, 99) * ms:.2f} ms, max {max(overall, default=0) * ms:.1f} ms"
    )
    print(
        f"during restarts  p50 {percentile(during, 50) * ms:.2f} ms, "
        f"p99 {percentile(during, 99) * ms:.2f} ms, max {max(during, default=0) * ms:.1f} ms "
        f"({len(during)} requests)"
    )
    print("restart took (s): " + ", ".join(f"{b - a:.2f}" for a, b in windows))
    print(f"worker PIDs that answered: {len(pids)} (expected {args.workers * (args.restarts + 1)})")
    return 1 if stats.failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=4, help="new-connection client tasks")
    parser.add_argument("--keepalive", type=int, default=4, help="keep-alive client tasks")
    parser.add_argument("--steady", type=float, default=1.0, help="seconds between restarts")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(trio.run(main, parser.parse_args()))
