"""The SQLite local store: exact rows, WAL, retention by rows and by age, history reads."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from mapper_sdk.sinks import Sample, SinkError, SqliteSettings
from mapper_sdk.sinks.sqlite import SqliteSink


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT ts, namespace, name, property, value, type FROM samples ORDER BY id"
        ).fetchall()


async def test_samples_are_stored_exactly(sqlite_path: Path) -> None:
    sink = SqliteSink(SqliteSettings(sqlite_path))
    await sink.open()
    ts = now_ms()
    await sink.write(
        [
            Sample("default", "thermo-1", "temp", "21.5", "float", ts),
            Sample("plant", "meter", "label", 'it\'s "quoted"', "string", ts + 1),
            Sample("plant", "meter", "count", "12", "int", ts + 2),
            Sample("plant", "méter", "note", "ünï\ncode ☃ 𝄞", "string", ts + 3),
        ]
    )
    assert rows(sqlite_path) == [
        (ts, "default", "thermo-1", "temp", "21.5", "float"),
        (ts + 1, "plant", "meter", "label", 'it\'s "quoted"', "string"),
        (ts + 2, "plant", "meter", "count", "12", "int"),
        (ts + 3, "plant", "méter", "note", "ünï\ncode ☃ 𝄞", "string"),
    ]
    with sqlite3.connect(sqlite_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    await sink.aclose()


async def test_retention_by_rows_keeps_the_newest(sqlite_path: Path) -> None:
    sink = SqliteSink(SqliteSettings(sqlite_path, max_rows=3, max_age=None))
    await sink.open()
    ts = now_ms()
    for i in range(5):
        await sink.write([Sample("ns", "d", "p", str(i), "int", ts + i)])
    assert [r[4] for r in rows(sqlite_path)] == ["2", "3", "4"]
    await sink.write([Sample("ns", "d", "p", str(i), "int", ts + i) for i in range(5, 10)])
    assert [r[4] for r in rows(sqlite_path)] == ["7", "8", "9"]
    await sink.aclose()


async def test_retention_by_age(sqlite_path: Path) -> None:
    sink = SqliteSink(SqliteSettings(sqlite_path, max_rows=None, max_age=60.0))
    await sink.open()
    ts = now_ms()
    await sink.write(
        [
            Sample("ns", "d", "p", "old", "string", ts - 120_000),
            Sample("ns", "d", "p", "recent", "string", ts - 30_000),
            Sample("ns", "d", "p", "new", "string", ts),
        ]
    )
    assert [r[4] for r in rows(sqlite_path)] == ["recent", "new"]
    await sink.aclose()


async def test_history_reads_one_series_oldest_first(sqlite_path: Path) -> None:
    sink = SqliteSink(SqliteSettings(sqlite_path))
    ts = now_ms()
    await sink.write(
        [Sample("ns", "d", "p", str(i), "int", ts + i) for i in range(10)]
        + [Sample("ns", "d", "q", "other", "string", ts), Sample("ns", "e", "p", "x", "int", ts)]
    )
    last3 = await sink.history("ns", "d", "p", limit=3)
    assert [s.value for s in last3] == ["7", "8", "9"]
    since = await sink.history("ns", "d", "p", since_ms=ts + 8)
    assert since == [
        Sample("ns", "d", "p", "8", "int", ts + 8),
        Sample("ns", "d", "p", "9", "int", ts + 9),
    ]
    await sink.aclose()


async def test_store_survives_reopen(sqlite_path: Path) -> None:
    ts = now_ms()
    first = SqliteSink(SqliteSettings(sqlite_path))
    await first.write([Sample("ns", "d", "p", "1", "int", ts)])
    await first.aclose()
    second = SqliteSink(SqliteSettings(sqlite_path))
    await second.open()
    await second.write([Sample("ns", "d", "p", "2", "int", ts + 1)])
    assert [r[4] for r in rows(sqlite_path)] == ["1", "2"]
    await second.aclose()


async def test_unwritable_path_is_a_retryable_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = SqliteSink(SqliteSettings(blocker / "samples.db"))
    with pytest.raises(SinkError, match="sqlite"):
        await sink.open()
    await sink.aclose()
