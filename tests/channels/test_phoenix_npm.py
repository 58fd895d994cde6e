"""The real ``phoenix`` npm client, unmodified, against a real Channels server.

``tests/js/phoenix_compat/`` pins ``phoenix`` (and ``ws``, the WebSocket phoenix's
``Socket`` takes as its ``transport`` under Node 20); a session fixture copies it to
a temporary folder and installs it with ``npm`` (Debian's ``nodejs`` and ``npm``;
``.ci/run`` installs them).  Then ``node run.mjs <scenario> <url>`` drives a server
started here: join accepted and refused, push with reply and with timeout, presence
(on one node, and across two nodes through Redis), and rejoin with recovery through
a server restart.  Without node or npm these tests skip, saying so, unless ``CI``
is set: then they fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from peregrine_rt._channels import Channels, Refuse, Socket, topic
from peregrine_rt._channels._history import MemoryHistory
from peregrine_rt._channels._sqlite import SQLiteHistory
from peregrine_rt.testing import open_server
from peregrine_rt.testing._redis import in_ci

HARNESS = Path(__file__).resolve().parent.parent / "js" / "phoenix_compat"
TIMEOUT = 60


def _need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        message = f"{program} is not installed (Debian: apt-get install nodejs npm)"
        if in_ci():
            pytest.fail(f"{message}; CI must install it", pytrace=False)
        pytest.skip(f"{message}; CI is not set, so this is a skip")
    return found


@pytest.fixture(scope="session")
def phoenix_js(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``[node, run.mjs]`` in a folder where ``npm install`` put phoenix and ws."""
    node, npm = _need("node"), _need("npm")
    folder = tmp_path_factory.mktemp("phoenix_compat")
    for name in ("package.json", "run.mjs"):
        shutil.copy(HARNESS / name, folder / name)
    cache = str(folder / ".npm-cache")
    install = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--cache", cache],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        message = f"npm install failed:\n{install.stdout}\n{install.stderr}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(f"{message}\nCI is not set, so this is a skip")
    installed = json.loads((folder / "node_modules" / "phoenix" / "package.json").read_text())
    pinned = json.loads((HARNESS / "package.json").read_text())["dependencies"]["phoenix"]
    assert installed["version"] == pinned
    return [node, str(folder / "run.mjs")]


def make_chat(
    history: Any = None, *, gate: trio.Event | None = None, release: trio.Event | None = None
) -> Channels:
    """A chat whose joins may wait for ``gate`` and whose ``slow`` event waits for ``release``."""

    class Chat(Channels):
        @topic("room:{name}", presence=True)
        class Room:
            async def join(self, socket: Socket, params: dict[str, Any]) -> dict[str, Any]:
                if socket.params["name"] == "admin":
                    raise Refuse("unauthorized")
                if gate is not None:
                    await gate.wait()
                socket.assigns["nick"] = str(params.get("nick", "anon"))
                return {"welcome": socket.params["name"]}

            async def on_new_msg(self, socket: Socket, payload: Any) -> dict[str, Any]:
                body = str(payload.get("body", ""))
                await socket.broadcast("new_msg", {"nick": socket.assigns["nick"], "body": body})
                return {"ok": True}

            async def on_slow(self, socket: Socket, payload: Any) -> None:
                if release is not None:
                    await release.wait()  # no reply before the client's timeout

            async def presence_key(self, socket: Socket) -> str:
                return str(socket.assigns["nick"])

    Chat.history = history if history is not None else MemoryHistory()
    return Chat()


def records(stdout: bytes) -> dict[str, Any]:
    """The script's JSON lines as one dict (each line has one key)."""
    merged: dict[str, Any] = {}
    for line in stdout.decode().splitlines():
        merged.update(json.loads(line))
    return merged


async def run_basic(phoenix_js: list[str], *urls: str) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [*phoenix_js, "basic", *urls], capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, (done.stdout.decode(), done.stderr.decode())
    return records(done.stdout)


def check_basic(got: dict[str, Any]) -> None:
    status, response = got["join"]
    assert status == "ok"
    assert response["welcome"] == "lobby"
    assert isinstance(response["epoch"], str)
    assert response["offset"] == 0
    assert got["refused"] == ["error", {"reason": "unauthorized"}]
    assert got["push"] == ["ok", {"ok": True}]
    # the broadcast's offset rides in phoenix.js's ref argument
    assert got["messages"] == [{"payload": {"nick": "ann", "body": "hi"}, "ref": "p:1"}]
    assert got["bob"][0] == "ok"
    assert got["bob_sees"] == "ann:1,bob:1"
    syncs = got["presence"]
    assert syncs[0] == "ann:1"
    assert "ann:1,bob:1" in syncs
    assert syncs[-1] == "ann:1"
    assert got["slow"][0] == "timeout"
    assert got["done"] is True


async def test_phoenix_client_join_push_timeout_presence(phoenix_js: list[str]) -> None:
    release = trio.Event()
    async with open_server(make_chat(release=release)) as live:
        got = await run_basic(phoenix_js, live.ws_url + "/socket")
        release.set()
    check_basic(got)


async def test_phoenix_clients_on_two_nodes_share_presence(
    phoenix_js: list[str], redis_url: str
) -> None:
    release = trio.Event()
    async with (
        open_server(make_chat(release=release), redis_url=redis_url) as a,
        open_server(make_chat(release=release), redis_url=redis_url) as b,
    ):
        # ann is on node a, bob on node b: each sees the other through Redis
        got = await run_basic(phoenix_js, a.ws_url + "/socket", b.ws_url + "/socket")
        release.set()
    check_basic(got)


class Lines:
    """JSON records read one line at a time from a process's stdout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.seen: list[dict[str, Any]] = []

    async def next(self, key: str) -> dict[str, Any]:
        """The next record with ``key`` (records without it are kept in ``seen``)."""
        while True:
            while b"\n" not in self.buffer:
                data = await self.stream.receive_some()
                assert data, f"the script ended before a {key!r} record; saw {self.seen}"
                self.buffer += data
            line, self.buffer = self.buffer.split(b"\n", 1)
            record: dict[str, Any] = json.loads(line)
            self.seen.append(record)
            assert "failed" not in record, record["failed"]
            if key in record:
                return record


async def serve_until(
    app: Any, port: int, stop: trio.Event, *, task_status: trio.TaskStatus[Any]
) -> None:
    async with open_server(app, port=port) as live:
        task_status.started(live)
        await stop.wait()


@pytest.fixture
async def node_process(phoenix_js: list[str]) -> AsyncIterator[list[trio.Process]]:
    """Processes started by a test, killed if the test leaves them running."""
    started: list[trio.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("durable", [True, False], ids=["sqlite", "memory"])
async def test_phoenix_client_rejoins_with_recovery_through_a_restart(
    phoenix_js: list[str], node_process: list[trio.Process], tmp_path: Path, durable: bool
) -> None:
    def history() -> Any:
        return SQLiteHistory(tmp_path / "data") if durable else MemoryHistory()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            live = await nursery.start(serve_until, make_chat(history()), 0, stop)
            port = live.port
            proc = await trio.lowlevel.open_process(
                [*phoenix_js, "recover", live.ws_url + "/socket"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            node_process.append(proc)
            assert proc.stdout is not None
            assert proc.stdin is not None
            lines = Lines(proc.stdout)
            first = (await lines.next("joined"))["joined"]
            assert (first["welcome"], first["offset"]) == ("feed", 0)
            for n in (1, 2):
                await live.app.broadcast("room:feed", "new_msg", {"n": n})
            got = [await lines.next("message") for _ in range(2)]
            assert [(r["message"]["n"], r["ref"]) for r in got] == [(1, "p:1"), (2, "p:2")]

            stop.set()  # the server stops; phoenix.js keeps reconnecting
            await lines.next("closed")
            gate = trio.Event()  # the new server's joins wait until it has news
            stop = trio.Event()
            again = await nursery.start(serve_until, make_chat(history(), gate=gate), port, stop)
            for n in (3, 4, 5):
                await again.app.broadcast("room:feed", "new_msg", {"n": n})
            gate.set()
            rejoined = (await lines.next("joined"))["joined"]
            if durable:
                assert rejoined["recovered"] is True
                assert (rejoined["epoch"], rejoined["offset"]) == (first["epoch"], 5)
                got = [await lines.next("message") for _ in range(3)]
                assert [(r["message"]["n"], r["ref"]) for r in got] == [
                    (3, "p:3"),
                    (4, "p:4"),
                    (5, "p:5"),
                ]
            else:
                assert (rejoined["recovered"], rejoined["reason"]) == (False, "epoch_changed")
                assert rejoined["epoch"] != first["epoch"]
                assert rejoined["offset"] == 3  # the app refetches up to here
            await again.app.broadcast("room:feed", "new_msg", {"n": "live"})
            live_message = await lines.next("message")
            offset = 6 if durable else 4
            assert (live_message["message"], live_message["ref"]) == ({"n": "live"}, f"p:{offset}")

            await proc.stdin.send_all(b"quit\n")
            await lines.next("done")
            assert await proc.wait() == 0
            messages = [r for r in lines.seen if "message" in r]
            assert len(messages) == (6 if durable else 3), "no message twice"
            stop.set()
