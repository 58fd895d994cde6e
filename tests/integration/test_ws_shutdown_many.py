"""The shutdown bar: SIGTERM with 1000 open WebSockets, every one gets close 1001 in time."""

from __future__ import annotations

import collections
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from peregrine_rt.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
SOCKETS = 1000
GRACE = 5.0


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the file descriptor limit ({hard}) is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def _client(port: int, opened: list[int], codes: list[object]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="localhost", target="/ws")))
    accepted = False
    while not accepted:
        data = await stream.receive_some(65536)
        assert data, "closed during the handshake"
        ws.receive_data(data)
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    opened.append(1)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            codes.append("EOF without a close frame")
            return
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, CloseConnection):
                codes.append(int(event.code))
                await stream.send_all(ws.send(event.response()))
                await stream.aclose()
                return


async def test_sigterm_with_1000_open_websockets_closes_each_with_1001() -> None:
    _raise_fd_limit(SOCKETS + 256)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peregrine_rt",
            "examples.echo:Echo",
            "--port",
            "0",
            "--shutdown-grace",
            str(GRACE),
            "--log-level",
            "info",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = await trio.to_thread.run_sync(proc.stderr.readline)
        assert "serving Echo on http://" in line, line
        port = int(line.rsplit(":", 1)[1])
        opened: list[int] = []
        codes: list[object] = []
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for i in range(SOCKETS):
                    nursery.start_soon(_client, port, opened, codes)
                    if i % 100 == 99:  # in batches of 100, not to overflow the backlog
                        batch_end = i + 1  # the lambda is called at once, inside wait_until
                        await wait_until(lambda: len(opened) >= batch_end, timeout=60)  # noqa: B023
                await wait_until(lambda: len(opened) >= SOCKETS, timeout=60)
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                returncode = await trio.to_thread.run_sync(proc.wait)
                elapsed = time.monotonic() - start
        assert returncode == 0
        assert elapsed <= GRACE, elapsed
        assert collections.Counter(codes) == {1001: SOCKETS}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
