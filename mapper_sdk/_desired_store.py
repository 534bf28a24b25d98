"""Desired values persisted before they are acknowledged, and restored after a restart.

A desired value that arrives over the bus is written here (committed) before the MQTT message
is acknowledged, so a gateway killed at any instant either never acknowledged it (the broker
redelivers it from our persistent session) or finds it here on start and applies it. One row
per (device, property): newest version wins.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_PUT = (
    "INSERT INTO desired VALUES (?, ?, ?, ?, 'pending')"
    " ON CONFLICT (device, property) DO UPDATE SET"
    " value = excluded.value, version = excluded.version, status = 'pending'"
    " WHERE excluded.version > desired.version"
)
_MARK = "UPDATE desired SET status = ? WHERE device = ? AND property = ? AND version = ?"


@dataclass(frozen=True, slots=True)
class StoredDesired:
    device_id: str
    property: str
    value: str
    version: int
    status: str


class DesiredStore:
    """A small SQLite table of the latest desired value per property."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives kill -9
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS desired ("
            " device TEXT NOT NULL, property TEXT NOT NULL, value TEXT NOT NULL,"
            " version INTEGER NOT NULL, status TEXT NOT NULL,"
            " PRIMARY KEY (device, property))"
        )

    def put(self, device_id: str, prop: str, value: str, version: int) -> bool:
        """Store a desired value unless a newer or equal version is held; True if stored."""
        return self.put_many([(device_id, prop, value, version)])[0]

    def put_many(self, values: Sequence[tuple[str, str, str, int]]) -> list[bool]:
        """``put`` for several ``(device, property, value, version)`` in one commit (a delta
        of 50 properties is one transaction, not 50); one answer per value, in order."""
        stored = []
        with self._transaction():
            for row in values:
                stored.append(self._db.execute(_PUT, row).rowcount > 0)
        return stored

    def mark(self, device_id: str, prop: str, version: int, status: str) -> None:
        self.mark_many([(device_id, prop, version, status)])

    def mark_many(self, marks: Sequence[tuple[str, str, int, str]]) -> None:
        """Record ``(device, property, version, status)`` outcomes in one commit."""
        with self._transaction():
            self._db.executemany(_MARK, [(st, dev, prop, ver) for dev, prop, ver, st in marks])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def for_device(self, device_id: str) -> list[StoredDesired]:
        rows = self._db.execute(
            "SELECT device, property, value, version, status FROM desired WHERE device = ?",
            (device_id,),
        )
        return [StoredDesired(*row) for row in rows]

    def close(self) -> None:
        self._db.close()
