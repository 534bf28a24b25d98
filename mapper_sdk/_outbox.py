"""A durable outbox for reports: SQLite (WAL), ordered by sequence number, bounded, counted.

A report counts as *accepted* once :meth:`Outbox.append` (or :meth:`Outbox.append_many`) has
returned: by then its row is committed. It leaves the outbox only when the caller confirms its
delivery (:meth:`Outbox.confirm`), when a bound forces it out, or when it is parked. Every
entry lost that way is counted in :attr:`Outbox.drops` by reason:

``outbox_full_rows`` / ``outbox_full_bytes``
    Drop-oldest: after an append pushes the outbox over ``max_rows`` or ``max_bytes``, the
    oldest entries (lowest sequence numbers, in flight or not) are deleted until it fits again.
    The newest data is what a gateway that lost its link for a long time should deliver.
``expired``
    The entry is older than ``max_age_s`` (see *Age* below).
``compacted``
    A newer entry with the same key superseded it (see *Compaction* below).
``parked``
    It was handed out ``max_attempts`` times without a confirmation, or the caller parked it:
    it moved to the ``parked`` table with a reason (poison isolation), bounded by ``max_parked``.
``write_failed``
    The append's transaction failed (disk full, I/O error): the entries were *not* accepted and
    :class:`OutboxError` was raised.

Order and ids. Each entry's ``id`` is an ``INTEGER PRIMARY KEY AUTOINCREMENT`` sequence number:
strictly increasing, never reused, even after the newest rows were deleted. The wall clock never
orders anything. :meth:`Outbox.pending` hands out unconfirmed entries in id order, which keeps
the order of every device. The pair (:attr:`Outbox.generation`, ``id``) is a stable idempotency
key; the generation changes only when a damaged file was replaced by a fresh one, whose ids start
again at 1.

Delivery is at least once. An entry handed out is *in flight* and is not handed out again until
:meth:`Outbox.release` or :meth:`Outbox.requeue_inflight` (call it on every reconnect; opening
the outbox does it too, since a restart is a reconnect). Duplicates are therefore possible and
are the caller's to count; ``Entry.attempts`` says how often an entry was handed out.

Age. Wall-clock steps must not delete rows early, so age is measured on the outbox's own clock:
elapsed time of the ``clock`` callable (default :func:`time.monotonic`; pass a monotonic clock,
never ``time.time``), summed call to call with backward steps counted as zero, persisted in the
database with every write. An entry expires when that clock has advanced more than ``max_age_s``
since its insertion. Time while the process is down does not count: rows can only live longer
than ``max_age_s``, never shorter. The stamp is monotone in id, so expiry deletes a prefix.

Compaction (``compaction=True``). Appending an entry whose ``key`` is not ``None`` deletes every
*older, not in flight* entry with the same ``(device_id, kind, key)``, each counted as
``compacted``. If ``mergers`` has a function for the entry's kind, the new entry's payload
becomes ``merger([older payloads, oldest first] + [new payload])``; otherwise the newest payload
simply wins. Entries with ``key=None`` are never compacted; entries in flight are never touched,
so nothing being sent is lost or overtaken by an older value. The survivor takes the newest
position: order within ``(device_id, kind)`` is kept, and a superseded value can only move
later relative to the device's other kinds, never earlier. With one key per ``(device, kind)``
(e.g. ``kind="state", key="state"``, and ``kind="twin", key="twin"`` with
:func:`merge_twin_updates`, which keeps the newest value of every property) a long outage costs
one row per device and kind instead of one per report. A merged row ages from its newest part.

Durability. ``PRAGMA journal_mode=WAL`` and ``locking_mode=EXCLUSIVE`` (a second process cannot
open the same outbox and send the same entries; the WAL index lives in heap memory, no ``-shm``
file). ``synchronous="NORMAL"`` is the default: in WAL mode a commit is written to the WAL (the
OS page cache) before ``append`` returns, so it survives ``kill -9`` and any crash of the process,
but the last transactions before a *power loss or kernel crash* can be lost (never corrupted).
That is the failure the reliability plan asks for (C1), and a per-commit ``fsync`` costs
milliseconds and flash wear on the SD cards and eMMC of edge gateways. ``synchronous="FULL"``
fsyncs the WAL on every commit and also survives power loss. Commit once per batch with
``append_many``.

Damage. Opening runs ``PRAGMA quick_check`` (it reads the whole file: O(size), once). A file that
is not a database, fails the check, or belongs to something else is *quarantined*: renamed aside
with its ``-wal``/``-shm`` files (``<name>.corrupt-<UTC timestamp>``), a fresh database is
created, and :attr:`Outbox.alarm` says what happened. A WAL with a damaged header is moved aside
the same way and the database kept. A WAL whose tail is torn is *not* an error: SQLite's recovery
keeps every transaction whose frames are complete, which is how ``kill -9`` during a write is
survived. If the file cannot be opened at all (read-only directory, locked by another process),
the outbox runs in memory with :attr:`Outbox.alarm` set, unless ``memory_fallback=False``, in
which case :class:`OutboxError` is raised. Either way: no crash loop.

Threading and cost. One connection, used from the thread that opened it (the event loop's).
Every call is at most one transaction whose work is O(entries in the call) plus O(entries dropped
by it); ``pending`` also steps over the entries in flight ahead of it (the caller's window) and
``release``/``requeue_inflight`` are O(entries in flight). That is a few microseconds per entry
plus one commit per call (see ``benchmarks/bench_outbox.py``), fine on the event loop for
batches of hundreds; confirm in batches rather than one call per acknowledgement where possible.
Opening is O(rows): counting, ``quick_check``, and clearing in-flight marks left by a crash.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import sqlite3
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from mapper_sdk.errors import EventBusError

__all__ = [
    "Clock",
    "Entry",
    "Merger",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "ParkedEntry",
    "Synchronous",
    "merge_twin_updates",
]

log = logging.getLogger("mapper_sdk.outbox")

Clock = Callable[[], float]
"""Seconds on a monotonic clock."""
Merger = Callable[[Sequence[bytes]], bytes]
"""Merges payloads (oldest first) into one payload carrying the newest value of everything."""
Synchronous = Literal["NORMAL", "FULL"]

APPLICATION_ID: Final = 0x4D534F42  # "MSOB": marks the file as ours in the SQLite header
SCHEMA_VERSION: Final = 1
MEMORY: Final = ":memory:"

_MAX_ID: Final = 2**63 - 1
_WAL_MAGIC: Final = frozenset({0x377F0682, 0x377F0683})
_WAL_HEADER: Final = 32
_CORRUPTION: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

# Small columns first: reading them never touches a large payload's overflow pages.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    inflight INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    born REAL NOT NULL,
    size INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox (device_id, kind, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS parked (
    id INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
"""
_INSERT: Final = (
    "INSERT INTO outbox (born, size, device_id, kind, key, event_id, topic, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_IDLE: Final = (
    "SELECT id, attempts, device_id, kind, key, event_id, topic, payload"
    " FROM outbox WHERE inflight = 0 ORDER BY id LIMIT ?"
)
_SELECT_PARKED: Final = (
    "SELECT reason, id, attempts, device_id, kind, key, event_id, topic, payload"
    " FROM parked ORDER BY id LIMIT ?"
)
# The payload is read only when a merger needs it (4th parameter).
_SELECT_OLDER: Final = (
    "SELECT id, size, CASE WHEN ?4 THEN payload END FROM outbox"
    " WHERE device_id = ?1 AND kind = ?2 AND key = ?3 AND inflight = 0 ORDER BY id"
)
# A set of ids travels as one JSON array parameter (json_each): one fixed statement for any
# batch size, no limit on bound variables.
_PARK: Final = (
    "INSERT INTO parked"
    " (id, reason, attempts, device_id, kind, key, event_id, topic, payload)"
    " SELECT id, ?, attempts, device_id, kind, key, event_id, topic, payload"
    " FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
)
_SIZE_OF_IDS: Final = (
    "SELECT count(*), total(size) FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
)
_DELETE_IDS: Final = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?))"
_RELEASE_IDS: Final = "UPDATE outbox SET inflight = 0 WHERE id IN (SELECT value FROM json_each(?))"
_UNCOUNT_IDS: Final = (
    "UPDATE outbox SET attempts = max(0, attempts - 1) WHERE id IN (SELECT value FROM json_each(?))"
)


class OutboxError(EventBusError):
    """The outbox could not be opened or written; nothing of the failed call was stored."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One encoded report and what the outbox needs to order, bound and compact it.

    ``id`` and ``attempts`` are set by the outbox (0 on an entry not yet appended);
    ``event_id`` is the caller's correlation id for an application-level answer, if any.
    """

    device_id: str
    kind: str
    key: str | None
    topic: str
    payload: bytes
    event_id: str = ""
    id: int = 0
    attempts: int = 0

    @classmethod
    def new(
        cls,
        device_id: str,
        kind: str,
        key: str | None,
        topic: str,
        payload: bytes | bytearray | memoryview,
        event_id: str = "",
    ) -> Entry:
        """An entry to append."""
        return cls(device_id, kind, key, topic, bytes(payload), event_id)

    @property
    def size(self) -> int:
        """Bytes counted against ``max_bytes``: the payload and every text field, UTF-8."""
        return len(self.payload) + _text_size(self)


@dataclass(frozen=True, slots=True)
class ParkedEntry:
    """An entry taken out of delivery, and why."""

    entry: Entry
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot for metrics. Counters count since this process opened the outbox."""

    rows: int
    bytes: int
    inflight: int
    parked: int
    parked_evicted: int
    appended: int
    handed_out: int
    confirmed: int
    drops: dict[str, int]
    merge_failures: int
    quarantined: int
    durable: bool
    alarm: str | None


@dataclass(slots=True)
class _Tx:
    """What one transaction changed; applied to the in-memory view only after COMMIT, so a
    rolled-back transaction leaves counts and in-flight ids exactly as they were."""

    rows: int = 0
    bytes: int = 0
    appended: int = 0
    handed_out: int = 0
    confirmed: int = 0
    parked: int = 0
    parked_evicted: int = 0
    merge_failures: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    sent: list[int] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Opened:
    conn: sqlite3.Connection
    durable: bool
    quarantined: list[Path] = field(default_factory=list)
    alarm: str | None = None


class Outbox:
    """Reports waiting for delivery. Create with :meth:`open`; see the module docstring."""

    def __init__(
        self,
        opened: _Opened,
        *,
        max_rows: int,
        max_bytes: int,
        max_age_s: float | None,
        compaction: bool,
        mergers: Mapping[str, Merger],
        max_attempts: int,
        max_parked: int,
        clock: Clock,
    ) -> None:
        self._conn: sqlite3.Connection | None = opened.conn
        self.durable = opened.durable
        self.quarantined: tuple[Path, ...] = tuple(opened.quarantined)
        self.alarm = opened.alarm
        self.max_rows, self.max_bytes, self.max_age_s = max_rows, max_bytes, max_age_s
        self.compaction, self.max_attempts, self.max_parked = compaction, max_attempts, max_parked
        self._mergers = dict(mergers)
        self._clock = clock
        self._last_clock = clock()
        self.drops: Counter[str] = Counter()
        self.appended = self.handed_out = self.confirmed = 0
        self.merge_failures = self.parked_evicted = 0
        self._inflight: set[int] = set()
        self._load(opened.conn)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_rows: int = 1_000_000,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float | None = 24 * 3600.0,
        compaction: bool = False,
        mergers: Mapping[str, Merger] | None = None,
        max_attempts: int = 5,
        max_parked: int = 1000,
        synchronous: Synchronous = "NORMAL",
        clock: Clock = time.monotonic,
        memory_fallback: bool = True,
        busy_timeout_s: float = 1.0,
    ) -> Outbox:
        """Open (or create) the outbox at ``path``, or a non-durable one at ``":memory:"``.

        Never raises for a damaged file (it is quarantined). Raises :class:`OutboxError` when
        the file cannot be opened and ``memory_fallback`` is false, and ``ValueError`` for
        bounds that are not positive.
        """
        if min(max_rows, max_bytes, max_attempts, max_parked) < 1:
            raise ValueError("max_rows, max_bytes, max_attempts and max_parked must be >= 1")
        if max_age_s is not None and not max_age_s > 0:
            raise ValueError("max_age_s must be > 0 or None")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        opened = _open_or_fallback(os.fspath(path), synchronous, busy_timeout_s, memory_fallback)
        if opened.alarm:
            log.error("outbox %s: %s", os.fspath(path), opened.alarm)
        return cls(
            opened,
            max_rows=max_rows,
            max_bytes=max_bytes,
            max_age_s=max_age_s,
            compaction=compaction,
            mergers=mergers or {},
            max_attempts=max_attempts,
            max_parked=max_parked,
            clock=clock,
        )

    def _load(self, conn: sqlite3.Connection) -> None:
        """Read the persisted state; a restart is a reconnect, so nothing is in flight."""
        rows, size = conn.execute("SELECT count(*), total(size) FROM outbox").fetchone()
        self._rows, self._bytes = int(rows), int(size)
        self._parked = int(conn.execute("SELECT count(*) FROM parked").fetchone()[0])
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        self._age = float(meta.get("age", 0.0))
        if "generation" not in meta:
            meta["generation"] = secrets.token_hex(8)
            conn.execute("INSERT INTO meta VALUES ('generation', ?)", (meta["generation"],))
        self.generation: str = str(meta["generation"])
        conn.execute("UPDATE outbox SET inflight = 0 WHERE inflight = 1")

    # -- writing ---------------------------------------------------------------------------

    def append(self, entry: Entry) -> int:
        """Store one entry; return its id once committed."""
        return self.append_many((entry,))[0]

    def append_many(self, entries: Iterable[Entry]) -> list[int]:
        """Store entries in one transaction, in the given order; return their ids.

        Raises ``ValueError`` (nothing stored) if one entry alone exceeds ``max_bytes``, and
        :class:`OutboxError` (nothing stored, counted as ``write_failed``) if the write fails.
        An id can refer to an entry already dropped again by a bound or compaction.
        """
        batch = list(entries)
        if not batch:
            return []
        sizes = [entry.size for entry in batch]
        if max(sizes) > self.max_bytes:
            raise ValueError(f"an entry of {max(sizes)} bytes exceeds max_bytes={self.max_bytes}")
        try:
            with self._transaction() as (conn, tx):
                self._expire(conn, tx)
                ids = [self._insert(conn, tx, e, n) for e, n in zip(batch, sizes, strict=True)]
                self._enforce_bounds(conn, tx)
        except OutboxError:
            self.drops["write_failed"] += len(batch)
            raise
        return ids

    def _insert(self, conn: sqlite3.Connection, tx: _Tx, entry: Entry, size: int) -> int:
        payload = entry.payload
        if self.compaction and entry.key is not None:
            payload = self._supersede(conn, tx, entry)
            size += len(payload) - len(entry.payload)
        head = (self._age, size, entry.device_id, entry.kind, entry.key, entry.event_id)
        cursor = conn.execute(_INSERT, (*head, entry.topic, payload))
        tx.rows, tx.bytes, tx.appended = tx.rows + 1, tx.bytes + size, tx.appended + 1
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _supersede(self, conn: sqlite3.Connection, tx: _Tx, entry: Entry) -> bytes:
        """Delete older idle entries with the entry's key; return the payload to store."""
        merger = self._mergers.get(entry.kind)
        older = conn.execute(
            _SELECT_OLDER, (entry.device_id, entry.kind, entry.key, merger is not None)
        ).fetchall()
        if not older:
            return entry.payload
        payload = entry.payload
        if merger is not None:
            try:
                payload = merger([row[2] for row in older] + [entry.payload])
            except Exception:  # a bad merger must not make the report itself fail
                log.exception("outbox merger for %r failed; entry kept uncompacted", entry.kind)
                tx.merge_failures += 1
                return entry.payload
        self._delete_ids(conn, tx, [row[0] for row in older], "compacted")
        return payload

    def _enforce_bounds(self, conn: sqlite3.Connection, tx: _Tx) -> None:
        """Drop-oldest until the outbox fits ``max_rows`` and ``max_bytes`` again."""
        excess_rows = self._rows + tx.rows - self.max_rows
        if excess_rows > 0:
            last = conn.execute(
                "SELECT id FROM outbox ORDER BY id LIMIT 1 OFFSET ?", (excess_rows - 1,)
            ).fetchone()[0]
            self._drop_through(conn, tx, last, "outbox_full_rows")
        excess_bytes = self._bytes + tx.bytes - self.max_bytes
        if excess_bytes > 0:
            last = _id_covering(conn, excess_bytes)
            self._drop_through(conn, tx, last, "outbox_full_bytes")

    def _expire(self, conn: sqlite3.Connection, tx: _Tx) -> None:
        if self.max_age_s is None or self._rows + tx.rows == 0:
            return
        # Stamps grow with ids, so the first row still young ends the expired prefix; finding
        # it scans only the expired rows.
        young = conn.execute(
            "SELECT id FROM outbox WHERE born >= ? ORDER BY id LIMIT 1",
            (self._age - self.max_age_s,),
        ).fetchone()
        last = _MAX_ID if young is None else young[0] - 1
        self._drop_through(conn, tx, last, "expired")

    def _drop_through(self, conn: sqlite3.Connection, tx: _Tx, last: int, reason: str) -> None:
        """Delete every entry with ``id <= last``, counting it under ``reason``."""
        rows, size = conn.execute(
            "SELECT count(*), total(size) FROM outbox WHERE id <= ?", (last,)
        ).fetchone()
        if not rows:
            return
        conn.execute("DELETE FROM outbox WHERE id <= ?", (last,))
        tx.rows, tx.bytes = tx.rows - rows, tx.bytes - int(size)
        tx.drops[reason] += rows
        tx.settled.extend(i for i in self._inflight if i <= last)
        tx.settled.extend(i for i in tx.sent if i <= last)

    def _delete_ids(
        self, conn: sqlite3.Connection, tx: _Tx, ids: Sequence[int], reason: str | None
    ) -> int:
        """Delete these entries (missing ids are ignored); count them under ``reason``."""
        id_list = _json_ids(ids)
        deleted, size = conn.execute(_SIZE_OF_IDS, (id_list,)).fetchone()
        conn.execute(_DELETE_IDS, (id_list,))
        tx.rows, tx.bytes = tx.rows - deleted, tx.bytes - int(size)
        if reason is not None and deleted:
            tx.drops[reason] += deleted
        tx.settled.extend(ids)
        return int(deleted)

    # -- delivering ------------------------------------------------------------------------

    def pending(self, limit: int) -> list[Entry]:
        """Up to ``limit`` entries not in flight, oldest first; they are in flight afterwards.

        Each hand-out counts as an attempt; an entry already handed out ``max_attempts`` times
        is parked instead of returned. Expired entries are dropped first.
        """
        if limit <= 0 or self._rows == len(self._inflight):
            return []  # nothing to hand out: no transaction (expiry waits for the next append)
        with self._transaction() as (conn, tx):
            self._expire(conn, tx)
            out: list[Entry] = []
            while len(out) < limit:
                batch = self._take(conn, tx, limit - len(out))
                if batch is None:
                    break
                out.extend(batch)
            return out

    def _take(self, conn: sqlite3.Connection, tx: _Tx, limit: int) -> list[Entry] | None:
        rows = conn.execute(_SELECT_IDLE, (limit,)).fetchall()
        if not rows:
            return None
        entries = [_entry(row) for row in rows]
        poison = {e.id for e in entries if e.attempts >= self.max_attempts}
        if poison:
            self._park(conn, tx, sorted(poison), "max_attempts")
        ready = [replace(e, attempts=e.attempts + 1) for e in entries if e.id not in poison]
        conn.executemany(
            "UPDATE outbox SET inflight = 1, attempts = attempts + 1 WHERE id = ?",
            [(e.id,) for e in ready],
        )
        tx.sent.extend(e.id for e in ready)
        tx.handed_out += len(ready)
        return ready

    def confirm(self, ids: Iterable[int]) -> int:
        """Delivery confirmed: delete these entries. Returns how many were still stored
        (an id confirmed twice, or dropped meanwhile, is ignored)."""
        batch = list(ids)
        if not batch:
            return 0
        with self._transaction() as (conn, tx):
            tx.confirmed = self._delete_ids(conn, tx, batch, None)
        return tx.confirmed

    def release(self, ids: Iterable[int], *, count_attempt: bool = True) -> int:
        """These entries were not delivered: hand them out again (in id order). Returns how
        many were in flight.

        ``count_attempt=False`` takes back the attempt their hand-out counted: for failures
        that are not the entry's fault (the link dropped, the receiver is absent), so only a
        message the receiver keeps refusing is ever parked as poison.
        """
        batch = [i for i in set(ids) if i in self._inflight]
        if not batch:
            return 0
        with self._transaction() as (conn, tx):
            conn.execute(_RELEASE_IDS, (_json_ids(batch),))
            if not count_attempt:
                conn.execute(_UNCOUNT_IDS, (_json_ids(batch),))
            tx.settled.extend(batch)
        return len(batch)

    def requeue_inflight(self) -> int:
        """After a reconnect: everything in flight is handed out again, without counting an
        attempt (a dropped link is not the messages' fault). Returns the count."""
        return self.release(list(self._inflight), count_attempt=False)

    def park(self, ids: Iterable[int], reason: str) -> int:
        """Take entries out of delivery for good (e.g. refused by the receiver), with a reason."""
        batch = list(ids)
        if not batch:
            return 0
        with self._transaction() as (conn, tx):
            return self._park(conn, tx, batch, reason)

    def _park(self, conn: sqlite3.Connection, tx: _Tx, ids: Sequence[int], reason: str) -> int:
        """Move entries to ``parked``; return how many were stored."""
        moved: int = conn.execute(_PARK, (reason, _json_ids(ids))).rowcount
        tx.parked += moved
        self._delete_ids(conn, tx, ids, "parked")
        excess = self._parked + tx.parked - self.max_parked
        if excess > 0:
            # The parked table is bounded too. Its oldest entries go; they were counted as
            # dropped ("parked") already, so this is counted apart, not as a second drop.
            conn.execute(
                "DELETE FROM parked WHERE id IN (SELECT id FROM parked ORDER BY id LIMIT ?)",
                (excess,),
            )
            tx.parked -= excess
            tx.parked_evicted += excess
        return moved

    # -- reading ---------------------------------------------------------------------------

    def depth(self) -> tuple[int, int]:
        """Entries stored (in flight or not) and their bytes."""
        return self._rows, self._bytes

    @property
    def inflight_count(self) -> int:
        return len(self._inflight)

    @property
    def parked_count(self) -> int:
        return self._parked

    def parked(self, limit: int = 100) -> list[ParkedEntry]:
        """The oldest parked entries, for inspection."""
        rows = self._connection().execute(_SELECT_PARKED, (limit,))
        return [ParkedEntry(_entry(row[1:]), row[0]) for row in rows]

    def stats(self) -> OutboxStats:
        return OutboxStats(
            rows=self._rows,
            bytes=self._bytes,
            inflight=len(self._inflight),
            parked=self._parked,
            parked_evicted=self.parked_evicted,
            appended=self.appended,
            handed_out=self.handed_out,
            confirmed=self.confirmed,
            drops=dict(self.drops),
            merge_failures=self.merge_failures,
            quarantined=len(self.quarantined),
            durable=self.durable,
            alarm=self.alarm,
        )

    # -- transactions and lifetime ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise OutboxError("the outbox is closed")
        return self._conn

    def _tick(self) -> None:
        """Advance the outbox's own clock; a backward step of ``clock`` counts as zero."""
        now = self._clock()
        step, self._last_clock = now - self._last_clock, now
        if step > 0 and math.isfinite(step):
            self._age += step

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[tuple[sqlite3.Connection, _Tx]]:
        conn = self._connection()
        self._tick()
        tx = _Tx()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn, tx
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('age', ?)", (self._age,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise OutboxError(f"outbox transaction failed: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise
        self._apply(tx)

    def _apply(self, tx: _Tx) -> None:
        self._rows += tx.rows
        self._bytes += tx.bytes
        self._parked += tx.parked
        self.appended += tx.appended
        self.handed_out += tx.handed_out
        self.confirmed += tx.confirmed
        self.merge_failures += tx.merge_failures
        self.parked_evicted += tx.parked_evicted
        self.drops.update(tx.drops)
        self._inflight.update(tx.sent)
        self._inflight.difference_update(tx.settled)

    def close(self) -> None:
        """Persist the outbox clock and close; later calls raise :class:`OutboxError`."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._tick()
        with contextlib.suppress(sqlite3.Error):
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('age', ?)", (self._age,))
        conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers ----------------------------------------------------------------------------------


def merge_twin_updates(payloads: Sequence[bytes]) -> bytes:
    """A :data:`Merger` for ``twin/update`` payloads: the newest message's envelope
    (``event_id``, ``timestamp``) with the newest twin of every property found in any of them."""
    twins: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    for payload in payloads:
        doc = orjson.loads(payload)
        twins.update(doc["twin"])
    return orjson.dumps({**doc, "twin": twins})


def _text_size(entry: Entry) -> int:
    texts = (entry.device_id, entry.kind, entry.key or "", entry.event_id, entry.topic)
    return sum(len(t.encode()) for t in texts)


def _entry(row: Sequence[Any]) -> Entry:
    ident, attempts, device_id, kind, key, event_id, topic, payload = row
    return Entry(device_id, kind, key, topic, payload, event_id, ident, attempts)


def _json_ids(ids: Iterable[int]) -> bytes:
    return orjson.dumps(list(ids))


def _id_covering(conn: sqlite3.Connection, excess: int) -> int:
    """The smallest id such that entries up to it hold at least ``excess`` bytes."""
    freed = 0
    cursor = conn.execute("SELECT id, size FROM outbox ORDER BY id")
    try:
        while rows := cursor.fetchmany(256):
            for ident, size in rows:
                freed += size
                if freed >= excess:
                    return int(ident)
    finally:
        cursor.close()
    return _MAX_ID


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


# --- opening, checking, quarantining -----------------------------------------------------------


class _Damaged(Exception):
    """The file is not a usable outbox database."""


def _open_or_fallback(
    path: str, synchronous: Synchronous, timeout: float, memory_fallback: bool
) -> _Opened:
    if path == MEMORY:
        return _Opened(_connect(MEMORY, synchronous, timeout), durable=False)
    try:
        return _open_file(Path(path), synchronous, timeout)
    except (sqlite3.Error, OSError, _Damaged) as exc:
        if not memory_fallback:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        alarm = f"cannot open {path} ({exc}); running in memory, reports do not survive a restart"
        return _Opened(_connect(MEMORY, synchronous, timeout), durable=False, alarm=alarm)


def _open_file(path: Path, synchronous: Synchronous, timeout: float) -> _Opened:
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
    return _Opened(conn, durable=True, quarantined=moved, alarm="; ".join(alarms) or None)


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
        conn.executescript(_SCHEMA)
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
