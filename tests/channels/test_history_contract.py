"""The History contract, run against all three backends: memory, SQLite, Redis.

Each test gets ``backend`` (one of the three) and opens a history with the
retention it needs; SQLite works on a real file under ``tmp_path``, Redis on
the real ``redis-server`` of the test session (``redis_url``, emptied first;
without ``redis-server`` the Redis cases are skipped, unless ``CI`` is set:
there they fail).  Time is a :class:`FakeClock` given to the backend, so age
retention is tested without waiting.

An epoch change is made the way it happens in production: a new process for
memory (a new instance), a deleted and recreated file for SQLite, and
``FLUSHALL`` (a Redis that came back empty) for Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio

from peregrine_rt._channels._history import (
    EPOCH_CHANGED,
    TOO_OLD,
    History,
    MemoryHistory,
    Position,
    Publication,
)
from peregrine_rt._channels._redis_history import RedisHistory
from peregrine_rt._channels._sqlite import SQLiteHistory

START = 1_700_000_000.0


class FakeClock:
    """UNIX time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Backend:
    """Opens histories of one kind, and resets one (a new epoch) the way production does."""

    def __init__(self, kind: str, tmp_path: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.directory = tmp_path / "data"
        self.redis_url = redis_url
        self.clock = FakeClock()
        self._options: dict[str, Any] = {}

    def _new(self) -> History:
        options = {"clock": self.clock, **self._options}
        if self.kind == "memory":
            return MemoryHistory(**options)
        if self.kind == "sqlite":
            return SQLiteHistory(self.directory, **options)
        assert self.redis_url is not None
        return RedisHistory(self.redis_url, **options)

    @asynccontextmanager
    async def open(self, **options: Any) -> AsyncIterator[History]:
        """A running history (its ``run`` in a nursery for the block)."""
        self._options = options
        history = self._new()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(history.run)
            yield history
            nursery.cancel_scope.cancel()

    async def reset(self, history: History) -> History:
        """The backend after its state was lost: the history to use from now on."""
        if self.kind == "redis":
            assert self.redis_url is not None
            async with coredis.Redis.from_url(self.redis_url) as redis:
                await redis.flushall()
            # A node that never knew the topic (the one that knew it puts its
            # epoch back: test_history_redis.py).
            fresh = self._new()
            await self._nursery.start(fresh.run)
            return fresh
        if self.kind == "sqlite":
            await history.aclose()
            for path in self.directory.iterdir():
                path.unlink()
            assert not list(self.directory.iterdir())
            return self._new()  # opens (and creates) the file on first use
        return self._new()  # memory: a new process


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Backend(request.param, tmp_path, url)


def offsets(pubs: list[Publication]) -> list[int]:
    return [pub.offset for pub in pubs]


async def test_offsets_are_dense_per_topic(backend: Backend) -> None:
    async with backend.open() as history:
        empty = await history.position("room:a")
        assert empty.offset == 0
        first = await history.append("room:a", "new_msg", {"body": "hello"})
        assert first == Publication(1, "new_msg", {"body": "hello"}, START)
        assert (await history.append("room:b", "new_msg", {"n": 1})).offset == 1
        assert (await history.append("room:a", "edit", [1, 2])).offset == 2
        assert (await history.append("room:a", "new_msg", None)).offset == 3
        assert await history.position("room:a") == Position(3, empty.epoch)
        assert (await history.position("room:b")).offset == 1  # epochs may be per topic


async def test_payloads_come_back_equal(backend: Backend) -> None:
    payloads: list[Any] = [
        {"body": "héllo 🦅", "tags": ["a", "b"], "n": 3, "x": 1.5, "ok": True, "none": None},
        [1, [2, [3]]],
        'just text with "quotes" and \\ and ]',
        0,
    ]
    async with backend.open() as history:
        for payload in payloads:
            await history.append("t", "e", payload)
        assert [pub.payload for pub in await history.history("t")] == payloads


async def test_history_since_and_limit(backend: Backend) -> None:
    async with backend.open() as history:
        for n in range(1, 8):
            await history.append("t", "e", {"n": n})
        assert offsets(await history.history("t")) == [1, 2, 3, 4, 5, 6, 7]
        assert offsets(await history.history("t", since=4)) == [5, 6, 7]
        assert offsets(await history.history("t", limit=2)) == [6, 7]
        assert offsets(await history.history("t", since=2, limit=3)) == [5, 6, 7]
        assert offsets(await history.history("t", since=5, limit=10)) == [6, 7]
        assert await history.history("t", limit=0) == []
        assert await history.history("t", since=7) == []
        assert await history.history("t", since=99) == []
        assert await history.history("unknown") == []
        assert [pub.payload for pub in await history.history("t", since=6)] == [{"n": 7}]
        with pytest.raises(ValueError, match="since"):
            await history.history("t", since=-1)
        with pytest.raises(ValueError, match="limit"):
            await history.history("t", limit=-1)


async def test_recover_exactly_what_was_missed(backend: Backend) -> None:
    async with backend.open() as history:
        for n in range(1, 6):
            await history.append("t", "e", n)
        position = await history.position("t")
        epoch = position.epoch

        for seen in range(6):
            result = await history.recover("t", seen, epoch)
            assert result.recovered, seen
            assert result.reason is None
            assert offsets(result.publications) == list(range(seen + 1, 6))
            assert [pub.payload for pub in result.publications] == list(range(seen + 1, 6))
            assert result.position == position

        ahead = await history.recover("t", 6, epoch)
        assert (ahead.recovered, ahead.reason, ahead.publications) == (False, EPOCH_CHANGED, [])
        assert ahead.position == position
        other = await history.recover("t", 2, epoch + "x")
        assert (other.recovered, other.reason) == (False, EPOCH_CHANGED)
        with pytest.raises(ValueError, match="offset"):
            await history.recover("t", -1, epoch)


async def test_an_empty_topic_keeps_its_epoch(backend: Backend) -> None:
    async with backend.open() as history:
        before = await history.position("quiet")  # a client joins before anything is said
        await history.append("quiet", "e", "first")
        await history.append("quiet", "e", "second")
        result = await history.recover("quiet", before.offset, before.epoch)
        assert result.recovered
        assert [pub.payload for pub in result.publications] == ["first", "second"]


async def test_retention_by_count(backend: Backend) -> None:
    async with backend.open(max_count=3) as history:
        for n in range(1, 11):
            await history.append("t", "e", n)
        await history.append("other", "e", 0)  # topics are pruned separately
        epoch = (await history.position("t")).epoch
        assert offsets(await history.history("t")) == [8, 9, 10]
        assert offsets(await history.history("t", since=2, limit=2)) == [9, 10]
        assert offsets(await history.history("other")) == [1]

        kept = await history.recover("t", 7, epoch)
        assert kept.recovered
        assert offsets(kept.publications) == [8, 9, 10]
        pruned = await history.recover("t", 6, epoch)
        assert (pruned.recovered, pruned.reason, pruned.publications) == (False, TOO_OLD, [])
        assert pruned.position == Position(10, epoch)
        assert (await history.append("t", "e", 11)).offset == 11  # offsets go on


async def test_retention_by_age(backend: Backend) -> None:
    clock = backend.clock
    async with backend.open(max_age=10.0) as history:
        await history.append("t", "e", "old")  # at START
        clock.now += 5
        await history.append("t", "e", "newer")  # at START + 5
        epoch = (await history.position("t")).epoch

        clock.now = START + 10  # "old" is exactly max_age old: expired (ages are < max_age)
        assert offsets(await history.history("t")) == [2]  # expired on read, no append needed
        gone = await history.recover("t", 0, epoch)
        assert (gone.recovered, gone.reason) == (False, TOO_OLD)
        fine = await history.recover("t", 1, epoch)
        assert fine.recovered
        assert [pub.payload for pub in fine.publications] == ["newer"]

        clock.now = START + 30  # everything expired
        assert await history.history("t") == []
        caught_up = await history.recover("t", 2, epoch)  # missed nothing: still recovered
        assert (caught_up.recovered, caught_up.publications) == (True, [])
        assert (await history.recover("t", 1, epoch)).reason == TOO_OLD
        third = await history.append("t", "e", "third")
        assert (third.offset, third.time) == (3, START + 30)
        assert offsets(await history.history("t")) == [3]


async def test_count_and_age_together(backend: Backend) -> None:
    clock = backend.clock
    async with backend.open(max_count=2, max_age=60.0) as history:
        for n in range(1, 5):
            clock.now = START + n
            await history.append("t", "e", n)
        assert offsets(await history.history("t")) == [3, 4]
        clock.now = START + 63.5  # 3 (at +3) is 60.5 s old, 4 (at +4) 59.5 s
        assert offsets(await history.history("t")) == [4]


async def test_a_reset_backend_is_a_new_epoch(backend: Backend) -> None:
    async with backend.open() as before:
        for n in range(1, 4):
            await before.append("t", "e", n)
        old = await before.position("t")
        assert old.offset == 3

        history = await backend.reset(before)

        result = await history.recover("t", 3, old.epoch)
        assert (result.recovered, result.reason, result.publications) == (
            False,
            EPOCH_CHANGED,
            [],
        )
        new = result.position
        assert new.epoch != old.epoch
        assert new.offset == 0
        assert (await history.append("t", "e", "again")).offset == 1  # from 1 in the new epoch
        again = await history.recover("t", 0, new.epoch)
        assert again.recovered
        assert [pub.payload for pub in again.publications] == ["again"]
        assert (await history.recover("t", 1, old.epoch)).reason == EPOCH_CHANGED
        await history.aclose()


async def test_concurrent_appends_are_dense_and_ordered(backend: Backend) -> None:
    tasks, each = 20, 10
    async with backend.open(max_count=None) as history:
        returned: dict[int, list[int]] = {}

        async def writer(task: int) -> None:
            for i in range(each):
                pub = await history.append("busy", "e", {"task": task, "i": i})
                returned.setdefault(task, []).append(pub.offset)

        async with trio.open_nursery() as nursery:
            for task in range(tasks):
                nursery.start_soon(writer, task)

        stored = await history.history("busy")
        assert offsets(stored) == list(range(1, tasks * each + 1))  # dense, no duplicate
        by_offset = {pub.offset: pub.payload for pub in stored}
        for task, mine in returned.items():
            assert mine == sorted(mine)  # each task's appends in its order
            assert [by_offset[o] for o in mine] == [{"task": task, "i": i} for i in range(each)]
        assert (await history.position("busy")).offset == tasks * each


def test_retention_settings_are_checked(tmp_path: Path) -> None:
    make: Any
    for make in (
        MemoryHistory,
        lambda **kw: SQLiteHistory(tmp_path, **kw),
        lambda **kw: RedisHistory("redis://127.0.0.1:1", **kw),
    ):
        with pytest.raises(ValueError, match="max_count"):
            make(max_count=0)
        with pytest.raises(ValueError, match="max_age"):
            make(max_age=0)
        make(max_count=None, max_age=None)  # no limits at all is allowed
