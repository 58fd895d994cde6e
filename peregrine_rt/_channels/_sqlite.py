"""SQLiteHistory: the embedded history of one node, durable across restarts.

One file, ``<directory>/channels-history.sqlite3`` (the directory is created
on first use), holds every topic:

``meta``
    the file's epoch, drawn when the file is created: reopening the same
    file keeps it, so clients of a restarted server recover; a deleted or
    recreated file is a new epoch, so they are told ``epoch_changed``;
``topics``
    each topic's last offset (kept when retention empties the topic, so
    offsets are never reused);
``publications``
    ``(topic, seq)`` (the offset) -> event, payload (JSON text), time.

Threads: stdlib :mod:`sqlite3` blocks, so every call runs in a worker thread
(``trio.to_thread.run_sync``) behind a per-instance ``CapacityLimiter(1)``:
one statement at a time on the one connection, in the order the tasks asked
(trio's limiter is fair), and the trio loop never waits on the disk.  A call
is not abandoned when its task is cancelled: a transaction always finishes or
rolls back in the thread, never half-way.

Offsets: :meth:`SQLiteHistory.append` bumps the topic's counter, inserts the
publication and prunes the topic in one ``BEGIN IMMEDIATE`` transaction, so
even several processes writing the same file (``busy_timeout`` makes them
wait their turn) get dense, unique offsets.  Appends are group-committed:
those that arrive while a transaction is under way go together into the
next one, in the order they arrived, so that under load the thread hop and
the commit are paid once per batch (one append alone still takes one trip).

Durability: WAL journal with ``synchronous=NORMAL``: a committed append
survives the process being killed; a power cut may lose the last commits
(``synchronous="FULL"`` in the constructor trades append latency for that).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from .._json import dumps
from ._history import (
    DEFAULT_MAX_COUNT,
    Position,
    Publication,
    Recovery,
    check_query,
    check_retention,
    new_epoch,
    recovery,
)

__all__ = ["DEFAULT_FILENAME", "SQLiteHistory"]

T = TypeVar("T")

DEFAULT_FILENAME: Final = "channels-history.sqlite3"
BUSY_TIMEOUT_MS: Final = 5000
"""How long a write waits for another process holding the file's write lock."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS publications (
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
"""
_RESERVE: Final = (  # n offsets for a topic: the last of them
    "INSERT INTO topics (topic, last) VALUES (?, ?) "
    "ON CONFLICT (topic) DO UPDATE SET last = last + ? RETURNING last"
)
_SELECT: Final = (
    "SELECT seq, event, payload, time FROM publications "
    "WHERE topic = ? AND seq > ? AND time > ? ORDER BY seq"
)
_SELECT_NEWEST: Final = (
    "SELECT seq, event, payload, time FROM publications "
    "WHERE topic = ? AND seq > ? AND time > ? ORDER BY seq DESC LIMIT ?"
)
_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def _publication(row: tuple[int, str, str, float]) -> Publication:
    offset, event, payload, when = row
    return Publication(offset, event, json.loads(payload), when)


class _Waiter:
    """One append waiting for its group commit."""

    __slots__ = ("done", "error", "publication")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.publication: Publication | None = None
        self.error: Exception | None = None


def _enter_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL, retrying while another process does the same.

    The switch needs an exclusive lock. Two processes opening a new file at
    once both hold a shared lock and want it, and SQLite answers one of
    them "database is locked" at once, without the busy handler, since
    waiting could deadlock. The other one wins, so trying again succeeds
    (the mode is then already WAL) within the same busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


class SQLiteHistory:
    """History in a SQLite file: the embedded default for a single node.

    Publications survive a restart of the server (same file, same epoch, so
    reconnecting clients recover what they missed).  Give each server
    process its own directory, or accept that processes sharing a file share
    offsets but not deliveries (the hub of a single process is in memory).

    Args:
        directory: Where the database lives; created (with its parents) on
            first use.
        filename: The database file's name in ``directory``.
        max_count: Publications kept per topic (None: no limit).
        max_age: Seconds a publication is kept (None: no limit).
        synchronous: SQLite's ``PRAGMA synchronous``: ``"NORMAL"`` (survives a
            killed process) or ``"FULL"`` (also a power cut, slower appends).
        clock: The time source (UNIX seconds), for tests.

    Resource handling:
        The database opens on first use (in a worker thread) and
        :meth:`aclose` closes it; a later call opens it again.  :meth:`run`
        opens it at once and closes it when cancelled, for a server's nursery.
    """

    delivers = False

    def __init__(
        self,
        directory: str | Path,
        *,
        filename: str = DEFAULT_FILENAME,
        max_count: int | None = DEFAULT_MAX_COUNT,
        max_age: float | None = None,
        synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_retention(max_count, max_age)
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        if not filename or Path(filename).name != filename:
            raise ValueError(f"filename must be a plain file name, not {filename!r}")
        self.directory = Path(directory)
        self.path = self.directory / filename
        self.max_count = max_count
        self.max_age = max_age
        self.synchronous = synchronous.upper()
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self._queue: list[tuple[str, str, str, _Waiter]] = []  # appends for the next commit
        self._committing = False
        self._db: sqlite3.Connection | None = None
        self._epoch = ""

    def __repr__(self) -> str:
        return (
            f"SQLiteHistory({str(self.directory)!r}, max_count={self.max_count!r}, "
            f"max_age={self.max_age!r})"
        )

    # -- the worker thread's side -------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """The connection, opened (and the file created with an epoch) if needed."""
        if self._db is not None:
            return self._db
        self.directory.mkdir(parents=True, exist_ok=True)
        # Used from worker threads one at a time (the limiter), not concurrently.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _enter_wal(db)
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', ?) ON CONFLICT (key) DO NOTHING",
                (new_epoch(),),
            )
            (epoch,) = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        self._epoch = str(epoch)
        self._db = db
        return db

    def _horizon(self, now: float) -> float:
        """Publications at or before this time have expired (-inf without max_age)."""
        return now - self.max_age if self.max_age is not None else float("-inf")

    def _append_batch(self, batch: list[tuple[str, str, str]]) -> list[Publication]:
        """Store ``(topic, event, payload)`` items in one transaction, offsets in their order.

        Few statements per batch, whatever its size (one counter update per
        topic, one ``executemany``): each statement is a trip from the GIL
        and back, which costs milliseconds while the event loop is busy.
        """
        db = self._open()
        now = self._clock()
        counts: dict[str, int] = {}
        for topic, _, _ in batch:
            counts[topic] = counts.get(topic, 0) + 1
        db.execute("BEGIN IMMEDIATE")
        try:
            following: dict[str, int] = {}  # each topic's next offset in this batch
            for topic, n in counts.items():
                (last,) = db.execute(_RESERVE, (topic, n, n)).fetchone()
                following[topic] = last - n + 1
            rows = []
            published: list[Publication] = []
            for topic, event, payload in batch:
                offset = following[topic]
                following[topic] = offset + 1
                rows.append((topic, offset, event, payload, now))
                published.append(Publication(offset, event, json.loads(payload), now))
            db.executemany(
                "INSERT INTO publications (topic, seq, event, payload, time) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            for topic, offset in following.items():
                if self.max_count is not None:
                    db.execute(
                        "DELETE FROM publications WHERE topic = ? AND seq <= ?",
                        (topic, offset - 1 - self.max_count),
                    )
                if self.max_age is not None:
                    db.execute(
                        "DELETE FROM publications WHERE topic = ? AND time <= ?",
                        (topic, self._horizon(now)),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return published

    def _last(self, db: sqlite3.Connection, topic: str) -> int:
        row = db.execute("SELECT last FROM topics WHERE topic = ?", (topic,)).fetchone()
        return int(row[0]) if row else 0

    def _history(self, topic: str, since: int, limit: int | None) -> list[Publication]:
        db = self._open()
        horizon = self._horizon(self._clock())
        if limit is None:
            rows = db.execute(_SELECT, (topic, since, horizon)).fetchall()
        else:
            rows = db.execute(_SELECT_NEWEST, (topic, since, horizon, limit)).fetchall()
            rows.reverse()
        return [_publication(row) for row in rows]

    def _position(self, topic: str) -> Position:
        db = self._open()
        return Position(self._last(db, topic), self._epoch)

    def _recover(self, topic: str, offset: int, epoch: str) -> Recovery:
        db = self._open()
        horizon = self._horizon(self._clock())
        db.execute("BEGIN")  # one snapshot: the last offset and the rows agree
        try:
            position = Position(self._last(db, topic), self._epoch)
            rows: list[Any] = []
            if epoch == position.epoch and 0 <= offset < position.offset:
                rows = db.execute(_SELECT, (topic, offset, horizon)).fetchall()
        finally:
            db.execute("COMMIT")
        return recovery(position, [_publication(row) for row in rows], offset, epoch)

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # -- the History interface ----------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, report started, and close it when cancelled."""
        await self._call(self._open)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def append(
        self, topic: str, event: str, payload: Any, *, sender: str | None = None
    ) -> Publication:
        """Store a publication with the topic's next offset, and return it (``sender``: unused).

        Raises:
            TypeError: ``payload`` is not JSON-able.
        """
        text = dumps(payload)  # here, so a bad payload fails before the thread
        waiter = _Waiter()
        self._queue.append((topic, event, text, waiter))
        if self._committing:
            await waiter.done.wait()  # the task committing now takes this one next
        else:
            await self._commit_queued()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.publication is not None
        return waiter.publication

    async def _commit_queued(self) -> None:
        """Group commit: store what is queued, in one transaction per trip to the thread.

        An append that arrives while a transaction is under way waits for the
        next one, with every other append that arrived meanwhile: under load
        the thread hop and the commit are paid once per batch, not per
        publication.  The batch is shielded: once taken, it is stored and its
        waiters are told, even if this task is cancelled meanwhile.
        """
        self._committing = True
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                with trio.CancelScope(shield=True):
                    try:
                        stored = await self._call(
                            self._append_batch, [(t, e, p) for t, e, p, _ in batch]
                        )
                    except Exception as exc:
                        for *_, waiter in batch:
                            waiter.error = exc
                            waiter.done.set()
                        continue
                for (*_, waiter), publication in zip(batch, stored, strict=True):
                    waiter.publication = publication
                    waiter.done.set()
        finally:
            self._committing = False

    async def history(
        self, topic: str, *, since: int | None = None, limit: int | None = None
    ) -> list[Publication]:
        """The retained publications with an offset above ``since``, oldest first.

        ``limit`` keeps the newest ``limit`` of those (still oldest first).
        """
        check_query(since, limit)
        return await self._call(self._history, topic, since or 0, limit)

    async def position(self, topic: str) -> Position:
        """The topic's last offset (0 if it never had a publication) and the file's epoch."""
        return await self._call(self._position, topic)

    async def recover(self, topic: str, offset: int, epoch: str) -> Recovery:
        """What a client that last saw ``offset`` in ``epoch`` missed (see ``Recovery``)."""
        if offset < 0:
            raise ValueError(f"a recovery offset is >= 0, not {offset}")
        return await self._call(self._recover, topic, offset, epoch)

    async def aclose(self) -> None:
        """Close the database (a later call reopens it); calling it twice is harmless."""
        await self._call(self._close)
