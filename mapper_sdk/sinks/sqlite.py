"""The local store: every sample in one SQLite table, bounded by rows and age.

This is the store a gateway keeps on its own disk (history for the dashboard, a buffer for
later export); it is not a KubeEdge ``dbMethod``, so ``SinkHub(local_store=...)`` turns it on
for every reported value. Layout::

    samples(id INTEGER PRIMARY KEY, ts INTEGER ms, namespace, name, property, value, type)

with indexes on ``ts`` (age pruning) and ``(namespace, name, property, ts)`` (history reads).
WAL journal and ``synchronous=NORMAL``: a crash may lose the last transaction, never corrupt
the file, and readers never block the writer. Retention runs after every batch: rows beyond
``max_rows`` (oldest first) and rows older than ``max_age`` are deleted.

sqlite3 calls block, so the connection lives on one worker thread of its own: it never holds
the event loop, and it never competes with ``asyncio.to_thread`` users for the default pool.
A batch is inserted by one statement reading a JSON array (``json_each``), not by
``executemany``: sqlite3 releases the GIL around every step, and a worker thread that gives
the GIL up once per row waits for it again behind a busy event loop each time (measured:
~900 rows/s with ``executemany`` against a busy loop, ~28,000 with one statement per batch).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson

from mapper_sdk.sinks._base import Sample, SinkError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    property TEXT NOT NULL,
    value TEXT NOT NULL,
    type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
CREATE INDEX IF NOT EXISTS samples_series ON samples (namespace, name, property, ts);
"""
# One statement per batch: the rows arrive as one JSON array of [ts, namespace, ...] arrays.
_INSERT = """
INSERT INTO samples (ts, namespace, name, property, value, type)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
FROM json_each(?)
"""


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """Where the store lives and how much it keeps (``None``: no limit of that kind)."""

    path: Path
    max_rows: int | None = 1_000_000
    max_age: float | None = 7 * 24 * 3600.0
    """Seconds, measured against the wall clock at write time."""

    def build(self) -> SqliteSink:
        return SqliteSink(self)


class SqliteSink:
    """Appends samples to the ``samples`` table and prunes it; also answers history reads."""

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.name = f"sqlite {settings.path}"
        self._db: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-sink")

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def open(self) -> None:
        try:
            await self._call(self._open)
        except (sqlite3.Error, OSError) as exc:
            raise SinkError(f"{self.name}: {exc}") from exc

    def _open(self) -> None:
        if self._db is not None:
            return
        self.settings.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.settings.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        self._db = db

    async def write(self, batch: Sequence[Sample]) -> None:
        rows = orjson.dumps(
            [(s.timestamp_ms, s.namespace, s.name, s.property, s.value, s.type) for s in batch]
        )
        try:
            await self._call(lambda: self._write(rows))
        except (sqlite3.Error, OSError) as exc:
            raise SinkError(f"{self.name}: {exc}") from exc

    def _write(self, rows: bytes) -> None:
        self._open()
        db = self._db
        assert db is not None
        db.execute("BEGIN")
        try:
            db.execute(_INSERT, (rows.decode(),))
            self._prune(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _prune(self, db: sqlite3.Connection) -> None:
        s = self.settings
        if s.max_rows is not None:
            # ids only grow, so "all but the newest max_rows" is one range on the primary key.
            db.execute(
                "DELETE FROM samples WHERE id <= (SELECT MAX(id) FROM samples) - ?",
                (s.max_rows,),
            )
        if s.max_age is not None:
            cutoff = int((time.time() - s.max_age) * 1000)
            db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,))

    async def history(
        self,
        namespace: str,
        name: str,
        property: str,
        *,
        since_ms: int = 0,
        limit: int = 1000,
    ) -> list[Sample]:
        """The newest ``limit`` samples of one property since ``since_ms``, oldest first."""

        def read() -> list[Sample]:
            self._open()
            assert self._db is not None
            rows = self._db.execute(
                "SELECT ts, value, type FROM samples WHERE namespace = ? AND name = ? "
                "AND property = ? AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
                (namespace, name, property, since_ms, limit),
            ).fetchall()
            return [Sample(namespace, name, property, v, t, ts) for ts, v, t in reversed(rows)]

        return await self._call(read)

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await self._call(close)
        finally:
            self._pool.shutdown(wait=False)
