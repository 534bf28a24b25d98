"""Opening an outbox file: connection pragmas, integrity and ownership checks, and the
quarantine of damaged files (``<name>.corrupt-<UTC timestamp>``) with an in-memory fallback."""

from __future__ import annotations

import sqlite3
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mapper_sdk._outbox.entries import OutboxError, Synchronous
from mapper_sdk._outbox.schema import APPLICATION_ID, MEMORY, SCHEMA, SCHEMA_VERSION

_WAL_MAGIC: Final = frozenset({0x377F0682, 0x377F0683})
_WAL_HEADER: Final = 32
_CORRUPTION: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


@dataclass(slots=True)
class Opened:
    conn: sqlite3.Connection
    durable: bool
    quarantined: list[Path] = field(default_factory=list)
    alarm: str | None = None


class _Damaged(Exception):
    """The file is not a usable outbox database."""


def open_or_fallback(
    path: str, synchronous: Synchronous, timeout: float, memory_fallback: bool
) -> Opened:
    if path == MEMORY:
        return Opened(_connect(MEMORY, synchronous, timeout), durable=False)
    try:
        return _open_file(Path(path), synchronous, timeout)
    except (sqlite3.Error, OSError, _Damaged) as exc:
        if not memory_fallback:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        alarm = f"cannot open {path} ({exc}); running in memory, reports do not survive a restart"
        return Opened(_connect(MEMORY, synchronous, timeout), durable=False, alarm=alarm)


def _open_file(path: Path, synchronous: Synchronous, timeout: float) -> Opened:
    moved: list[Path] = []
    alarms: list[str] = []
    wal = _sidecar(path, "-wal")
    if _wal_header_damaged(wal):
        # SQLite would silently ignore this WAL; keep it for inspection and say so.
        moved += _move_aside([wal, _sidecar(path, "-shm")])
        alarms.append(f"WAL header damaged, moved aside to {moved[0].name}")
    try:
        conn = _connect(str(path), synchronous, timeout)
    except (sqlite3.DatabaseError, _Damaged) as exc:
        if not _is_damage(exc):
            raise
        aside = _move_aside([path, wal, _sidecar(path, "-shm"), _sidecar(path, "-journal")])
        moved += aside
        alarms.append(f"damaged database ({exc}) moved aside to {aside[0].name}; started empty")
        conn = _connect(str(path), synchronous, timeout)  # a second failure propagates: no loop
    return Opened(conn, durable=True, quarantined=moved, alarm="; ".join(alarms) or None)


def _is_damage(exc: Exception) -> bool:
    if isinstance(exc, _Damaged):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPTION


def _connect(target: str, synchronous: Synchronous, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(target, timeout=timeout, isolation_level=None)
    try:
        # EXCLUSIVE before WAL: the WAL index then lives in heap memory, and a second process
        # cannot open the same outbox. Check before changing anything, so a file quarantined
        # is the file as found.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        _check(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def _check(conn: sqlite3.Connection) -> None:
    """Raise ``_Damaged`` unless the file is intact and empty or ours."""
    result = conn.execute("PRAGMA quick_check").fetchall()
    if result != [("ok",)]:
        raise _Damaged("quick_check: " + "; ".join(str(r[0]) for r in result[:3]))
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if tables and (app, version) != (APPLICATION_ID, SCHEMA_VERSION):
        raise _Damaged(f"not an outbox v{SCHEMA_VERSION} (application_id {app}, v{version})")


def _wal_header_damaged(wal: Path) -> bool:
    try:
        with wal.open("rb") as f:
            head = f.read(_WAL_HEADER)
    except FileNotFoundError:
        return False
    if not head:
        return False  # an empty WAL is normal
    if len(head) < _WAL_HEADER:
        return True  # SQLite writes the header in one piece: a short one was damaged
    magic, _version, page_size = struct.unpack(">III", head[:12])
    return magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1) != 0


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _move_aside(paths: Iterable[Path]) -> list[Path]:
    """Rename existing files to ``<name>.corrupt-<UTC timestamp>[-n]``; return the new paths."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for src in paths:
        if not src.exists():
            continue
        dst = src.with_name(f"{src.name}.corrupt-{stamp}")
        n = 0
        while dst.exists():
            n += 1
            dst = src.with_name(f"{src.name}.corrupt-{stamp}-{n}")
        src.rename(dst)
        moved.append(dst)
    return moved
