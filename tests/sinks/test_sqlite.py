"""The SQLite local store: exact values, one row per report, WAL, retention by rows and by
age, history reads, and the conversion of stores written with one row per value."""

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
    """Every stored value as (ts, namespace, name, property, value, type), in store order."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT r.ts, r.namespace, r.name, v.key, json_extract(v.value, '$[0]'), "
            "json_extract(v.value, '$[1]') FROM reports AS r, json_each(r.vals) AS v "
            "ORDER BY r.id, v.id"
        ).fetchall()


def report_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
        return count


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


async def test_one_row_per_device_report_and_no_value_folded(sqlite_path: Path) -> None:
    sink = SqliteSink(SqliteSettings(sqlite_path))
    ts = now_ms()
    batch = [
        Sample("ns", "d", "a", "1", "int", ts),
        Sample("ns", "d", "b", "2", "int", ts),
        Sample("ns", "e", "a", "3", "int", ts),
        Sample("ns", "d", "a", "4", "int", ts),  # same device, time and property: a new row
        Sample("ns", "d", "b", "5", "int", ts + 1),
    ]
    await sink.write(batch)
    assert report_count(sqlite_path) == 4
    assert sorted(rows(sqlite_path)) == sorted(
        (s.timestamp_ms, s.namespace, s.name, s.property, s.value, s.type) for s in batch
    )
    assert [s.value for s in await sink.history("ns", "d", "a")] == ["1", "4"]
    await sink.aclose()


async def test_history_of_a_property_with_awkward_name(sqlite_path: Path) -> None:
    sink = SqliteSink(SqliteSettings(sqlite_path))
    ts = now_ms()
    names = ['a"b', "a.b", "$[0]", "ünï"]
    await sink.write([Sample("ns", "d", n, str(i), "int", ts) for i, n in enumerate(names)])
    for i, n in enumerate(names):
        assert [s.value for s in await sink.history("ns", "d", n)] == [str(i)]
    await sink.aclose()


async def test_store_of_one_row_per_value_is_converted(sqlite_path: Path) -> None:
    """Stores written by mapper-sdk 0.1 (table ``samples``) keep every value."""
    ts = now_ms()
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(sqlite_path) as db:
        db.executescript(
            "CREATE TABLE samples (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
            "namespace TEXT NOT NULL, name TEXT NOT NULL, property TEXT NOT NULL, "
            "value TEXT NOT NULL, type TEXT NOT NULL);"
        )
        db.executemany(
            "INSERT INTO samples (ts, namespace, name, property, value, type) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (ts, "ns", "d", "a", "1", "int"),
                (ts, "ns", "d", "b", "x", "string"),
                (ts + 1, "ns", "d", "a", "2", "int"),
            ],
        )
    sink = SqliteSink(SqliteSettings(sqlite_path))
    await sink.open()
    await sink.write([Sample("ns", "d", "a", "3", "int", ts + 2)])
    assert rows(sqlite_path) == [
        (ts, "ns", "d", "a", "1", "int"),
        (ts, "ns", "d", "b", "x", "string"),
        (ts + 1, "ns", "d", "a", "2", "int"),
        (ts + 2, "ns", "d", "a", "3", "int"),
    ]
    with sqlite3.connect(sqlite_path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "samples" not in tables
    await sink.aclose()


async def test_store_of_a_newer_version_is_refused_untouched(sqlite_path: Path) -> None:
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(sqlite_path) as db:
        db.execute("PRAGMA user_version = 99")
    sink = SqliteSink(SqliteSettings(sqlite_path))
    with pytest.raises(SinkError, match=r"newer mapper-sdk.*move the file away"):
        await sink.open()
    await sink.aclose()
    with sqlite3.connect(sqlite_path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (99,)
