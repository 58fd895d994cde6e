"""SQLiteHistory beyond the shared contract: the file, durability, processes.

Real files under ``tmp_path``; the restart tests run real Python processes
(one killed with SIGKILL right after its appends returned, as a crash would).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from peregrine_rt._channels import _sqlite as sqlite_module
from peregrine_rt._channels._history import EPOCH_CHANGED
from peregrine_rt._channels._sqlite import DEFAULT_FILENAME, SQLiteHistory

REPO = Path(__file__).resolve().parents[2]


def rows(path: Path, topic: str) -> list[int]:
    """The offsets stored for ``topic``, read with a connection of the test's own."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT seq FROM publications WHERE topic = ? ORDER BY seq", (topic,))
        return [seq for (seq,) in found]


async def run_python(code: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=REPO,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_the_data_directory_is_created_on_first_use(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "yet" / "here"
    history = SQLiteHistory(directory)
    assert not directory.exists()  # nothing happens when it is built
    await history.append("t", "e", 1)
    assert (directory / DEFAULT_FILENAME).is_file()
    with sqlite3.connect(directory / DEFAULT_FILENAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    await history.aclose()
    await history.aclose()  # twice is harmless


async def test_a_file_name_of_ones_own(tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path, filename="chat.db")
    await history.append("t", "e", 1)
    await history.aclose()
    assert (tmp_path / "chat.db").is_file()
    for bad in ("", "../chat.db", "sub/chat.db"):
        with pytest.raises(ValueError, match="filename"):
            SQLiteHistory(tmp_path, filename=bad)
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteHistory(tmp_path, synchronous="sometimes")


async def test_closed_and_reopened_it_keeps_everything(tmp_path: Path) -> None:
    first = SQLiteHistory(tmp_path)
    for n in range(1, 4):
        await first.append("room:a", "new_msg", {"n": n})
    await first.append("room:b", "new_msg", {"n": 0})
    before = await first.position("room:a")
    await first.aclose()

    again = SQLiteHistory(tmp_path)  # as a restarted server would
    assert await again.position("room:a") == before  # same epoch, same offset
    missed = await again.recover("room:a", 1, before.epoch)
    assert missed.recovered
    assert [pub.payload for pub in missed.publications] == [{"n": 2}, {"n": 3}]
    assert (await again.append("room:a", "new_msg", {"n": 4})).offset == 4
    assert (await again.append("room:b", "new_msg", {"n": 1})).offset == 2
    await again.aclose()

    # The same instance, closed, opens the file again on its next call.
    assert (await again.append("room:a", "new_msg", {"n": 5})).offset == 5
    await again.aclose()


async def test_run_opens_and_closes_the_file(tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(history.run)
        assert (tmp_path / DEFAULT_FILENAME).is_file()  # opened before started
        await history.append("t", "e", 1)
        nursery.cancel_scope.cancel()
    # Closed by run's cancellation: the file can be removed and is then a new epoch.
    epoch = (await SQLiteHistory(tmp_path).position("t")).epoch
    for path in tmp_path.iterdir():
        path.unlink()
    fresh = SQLiteHistory(tmp_path)
    assert (await fresh.recover("t", 1, epoch)).reason == EPOCH_CHANGED
    await fresh.aclose()


async def test_pruning_deletes_the_rows(tmp_path: Path) -> None:
    now = [1000.0]
    history = SQLiteHistory(tmp_path, max_count=3, max_age=60, clock=lambda: now[0])
    for _ in range(5):
        await history.append("t", "e", None)
    assert rows(history.path, "t") == [3, 4, 5]
    now[0] += 61
    await history.append("t", "e", None)  # the append prunes what expired
    assert rows(history.path, "t") == [6]
    await history.aclose()


async def test_a_payload_that_is_not_json_takes_no_offset(tmp_path: Path) -> None:
    history = SQLiteHistory(tmp_path)
    with pytest.raises(TypeError):
        await history.append("t", "e", {1, 2})
    assert (await history.append("t", "e", [1, 2])).offset == 1
    await history.aclose()


async def test_appends_survive_a_killed_process(tmp_path: Path) -> None:
    # The child appends, says so, and dies by SIGKILL: no aclose, no atexit.
    result = await run_python(
        f"""
        import os, signal, trio
        from peregrine_rt._channels._sqlite import SQLiteHistory

        async def main():
            history = SQLiteHistory({str(tmp_path)!r})
            for n in range(1, 6):
                await history.append("room:lobby", "new_msg", {{"n": n}})
            position = await history.position("room:lobby")
            print(position.offset, position.epoch, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        trio.run(main)
        """
    )
    assert result.returncode == -9, result.stderr.decode()
    offset, epoch = result.stdout.decode().split()
    assert offset == "5"

    history = SQLiteHistory(tmp_path)  # the restarted server
    recovery = await history.recover("room:lobby", 2, epoch)
    assert recovery.recovered
    assert [pub.payload for pub in recovery.publications] == [{"n": 3}, {"n": 4}, {"n": 5}]
    assert (await history.append("room:lobby", "new_msg", {"n": 6})).offset == 6
    await history.aclose()


async def test_two_processes_appending_to_one_file_get_dense_offsets(tmp_path: Path) -> None:
    code = f"""
        import trio
        from peregrine_rt._channels._sqlite import SQLiteHistory

        async def main():
            history = SQLiteHistory({str(tmp_path)!r}, max_count=None)
            for n in range(40):
                await history.append("shared", "e", {{"pid": __import__("os").getpid(), "n": n}})
            await history.aclose()

        trio.run(main)
        """
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def child() -> None:
        results.append(await run_python(code))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
        nursery.start_soon(child)
    assert [r.returncode for r in results] == [0, 0], [r.stderr.decode() for r in results]

    history = SQLiteHistory(tmp_path)
    stored = await history.history("shared", limit=None)
    assert [pub.offset for pub in stored] == list(range(1, 81))
    for pid in {pub.payload["pid"] for pub in stored}:
        assert [pub.payload["n"] for pub in stored if pub.payload["pid"] == pid] == list(range(40))
    assert os.getpid() not in {pub.payload["pid"] for pub in stored}
    await history.aclose()


class _Counting(SQLiteHistory):
    """Counts the transactions (trips to the thread) the appends took."""

    def __init__(self, *args: Any, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.fail = fail

    def _append_batch(self, batch: list[tuple[str, str, str]]) -> list[Any]:
        self.batches.append(len(batch))
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        return super()._append_batch(batch)


async def test_concurrent_appends_are_group_committed_in_order(tmp_path: Path) -> None:
    history = _Counting(tmp_path)
    got: dict[int, int] = {}
    arrived: list[int] = []  # the order the appends reached the history (trio shuffles tasks)

    async def append(i: int) -> None:
        arrived.append(i)  # no checkpoint between this and the append's queueing
        got[i] = (await history.append("t", "e", {"i": i})).offset

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(append, i)
    assert sorted(got.values()) == list(range(1, 201))  # dense
    assert [got[i] for i in arrived] == list(range(1, 201))  # in the order they arrived
    assert sum(history.batches) == 200
    assert len(history.batches) < 20  # grouped: far fewer transactions than appends
    stored = await history.history("t")
    assert [p.payload["i"] for p in stored] == arrived
    await history.aclose()


async def test_a_failed_group_commit_reaches_every_waiter(tmp_path: Path) -> None:
    history = _Counting(tmp_path, fail=True)
    errors: list[BaseException] = []

    async def append(i: int) -> None:
        try:
            await history.append("t", "e", i)
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(append, i)
    assert len(errors) == 50
    history.fail = False
    assert (await history.append("t", "e", "after")).offset == 1  # nothing half-stored
    await history.aclose()


class _ReleasingClock:
    """Stands in for ``time`` in the module: the first retry's sleep ends the other lock."""

    def __init__(self, holder: sqlite3.Connection) -> None:
        self.holder = holder
        self.sleeps = 0

    def monotonic(self) -> float:
        return 0.0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.holder.in_transaction:
            self.holder.execute("COMMIT")


def test_switch_to_wal_retries_a_lock_refused_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another connection holds the write lock: SQLite refuses the WAL switch at
    # once, busy timeout or not (waiting could deadlock), as it did in CI when
    # two processes opened one new file together.
    path = tmp_path / "race.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    opener = sqlite3.connect(path, isolation_level=None)
    opener.execute("PRAGMA busy_timeout = 5000")
    clock = _ReleasingClock(holder)
    monkeypatch.setattr(sqlite_module, "time", clock)
    sqlite_module._enter_wal(opener)
    assert clock.sleeps == 1
    assert opener.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    opener.close()
    holder.close()


def test_switch_to_wal_gives_up_at_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    opener = sqlite3.connect(path, isolation_level=None)
    ticks = iter(range(0, 100))

    class Clock:
        def monotonic(self) -> float:
            return float(next(ticks))  # a second per call: past 5 s after a few tries

        def sleep(self, seconds: float) -> None:
            pass

    monkeypatch.setattr(sqlite_module, "time", Clock())
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite_module._enter_wal(opener)
    assert next(ticks) < 10
    opener.close()
    holder.close()
