"""The :class:`Outbox`: appending, bounds, expiry, compaction, hand-out, confirmation and
parking, each call one SQLite transaction (see the package docstring for the rules)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from mapper_sdk._outbox.entries import (
    Clock,
    Entry,
    Merger,
    OutboxError,
    OutboxStats,
    ParkedEntry,
    Synchronous,
    entry_from_row,
)
from mapper_sdk._outbox.schema import (
    DELETE_IDS,
    HAND_OUT_IDS,
    INSERT,
    INSERT_SENT,
    PARK,
    RELEASE_IDS,
    SELECT_IDLE,
    SELECT_OLDER,
    SELECT_PARKED,
    UNCOUNT_IDS,
)
from mapper_sdk._outbox.storage import Opened, open_or_fallback

log = logging.getLogger("mapper_sdk.outbox")

_MAX_ID: Final = 2**63 - 1
_AGE_SAVE_INTERVAL: Final = 1.0  # seconds of the outbox clock between saves of it


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


class Outbox:
    """Reports waiting for delivery. Create with :meth:`open`; see the module docstring."""

    def __init__(
        self,
        opened: Opened,
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
        opened = open_or_fallback(os.fspath(path), synchronous, busy_timeout_s, memory_fallback)
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
        self._age = self._age_saved = float(meta.get("age", 0.0))
        self._next_expiry = -math.inf  # the outbox's age at which to look for expired rows
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

    def exchange(
        self, confirm: Sequence[int], append: Sequence[Entry], take: int
    ) -> tuple[list[int], list[Entry]]:
        """``confirm(confirm)``, ``append_many(append)`` and ``pending(take)`` in one transaction.

        What a sender does once per turn of its loop, for one commit instead of three. Returns
        the ids appended and the entries handed out (oldest first, as ``pending``). Appended
        entries that can be handed out at once (nothing older waits, nothing compacts them)
        are stored already in flight, without a second write. Raises as ``append_many`` does:
        ``ValueError`` before anything happened, :class:`OutboxError` with nothing done (the
        appended entries counted as ``write_failed``).
        """
        sizes = [entry.size for entry in append]
        if sizes and max(sizes) > self.max_bytes:
            raise ValueError(f"an entry of {max(sizes)} bytes exceeds max_bytes={self.max_bytes}")
        if not confirm and not append and (take <= 0 or self._rows == len(self._inflight)):
            return [], []
        try:
            with self._transaction() as (conn, tx):
                if confirm:
                    tx.confirmed = self._delete_ids(conn, tx, confirm, None)
                self._expire(conn, tx)
                busy = len(self._inflight)
                if tx.settled:
                    busy -= len(self._inflight.intersection(tx.settled))
                direct = take > 0 and self._rows + tx.rows == busy  # nothing older is idle
                ids: list[int] = []
                out: list[Entry] = []
                for entry, size in zip(append, sizes, strict=True):
                    compacts = self.compaction and entry.key is not None
                    if direct and not compacts and len(out) < take:
                        ident = self._insert(conn, tx, entry, size, sent=True)
                        out.append(_handed(entry, ident, 1))
                    else:
                        direct = False  # an idle entry now waits: the rest queue behind it
                        ident = self._insert(conn, tx, entry, size)
                    ids.append(ident)
                if append:
                    self._enforce_bounds(conn, tx)
                if out:
                    tx.sent.extend(e.id for e in out)
                    tx.handed_out += len(out)
                    if tx.drops:  # a bound may have dropped some of them again
                        gone = set(tx.settled)
                        out = [e for e in out if e.id not in gone]
                while len(out) < take:
                    batch = self._take(conn, tx, take - len(out))
                    if batch is None:
                        break
                    out.extend(batch)
        except OutboxError:
            self.drops["write_failed"] += len(append)
            raise
        return ids, out

    def _insert(
        self, conn: sqlite3.Connection, tx: _Tx, entry: Entry, size: int, *, sent: bool = False
    ) -> int:
        payload = entry.payload
        if self.compaction and entry.key is not None:
            payload = self._supersede(conn, tx, entry)
            size += len(payload) - len(entry.payload)
        head = (self._age, size, entry.device_id, entry.kind, entry.key, entry.event_id)
        cursor = conn.execute(INSERT_SENT if sent else INSERT, (*head, entry.topic, payload))
        tx.rows, tx.bytes, tx.appended = tx.rows + 1, tx.bytes + size, tx.appended + 1
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _supersede(self, conn: sqlite3.Connection, tx: _Tx, entry: Entry) -> bytes:
        """Delete older idle entries with the entry's key; return the payload to store."""
        merger = self._mergers.get(entry.kind)
        older = conn.execute(
            SELECT_OLDER, (entry.device_id, entry.kind, entry.key, merger is not None)
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
        if self.max_age_s is None or self._rows + tx.rows == 0 or self._age < self._next_expiry:
            return
        # Looked for at most every 0.1% of max_age_s (1 s at most), not on every commit.
        self._next_expiry = self._age + min(1.0, self.max_age_s / 1000)
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
        sizes = conn.execute(DELETE_IDS, (_json_ids(ids),)).fetchall()
        deleted, size = len(sizes), sum(row[0] for row in sizes)
        tx.rows, tx.bytes = tx.rows - deleted, tx.bytes - size
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
        rows = conn.execute(SELECT_IDLE, (limit,)).fetchall()
        if not rows:
            return None
        entries = [entry_from_row(row) for row in rows]
        poison = {e.id for e in entries if e.attempts >= self.max_attempts}
        if poison:
            self._park(conn, tx, sorted(poison), "max_attempts")
        ready = [_handed(e, e.id, e.attempts + 1) for e in entries if e.id not in poison]
        ids = [e.id for e in ready]
        conn.execute(HAND_OUT_IDS, (_json_ids(ids),))
        tx.sent.extend(ids)
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
            conn.execute(RELEASE_IDS, (_json_ids(batch),))
            if not count_attempt:
                conn.execute(UNCOUNT_IDS, (_json_ids(batch),))
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
        moved: int = conn.execute(PARK, (reason, _json_ids(ids))).rowcount
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
    def idle_count(self) -> int:
        """Entries stored and not in flight: what ``pending`` would hand out."""
        return self._rows - len(self._inflight)

    @property
    def parked_count(self) -> int:
        return self._parked

    def parked(self, limit: int = 100) -> list[ParkedEntry]:
        """The oldest parked entries, for inspection."""
        rows = self._connection().execute(SELECT_PARKED, (limit,))
        return [ParkedEntry(entry_from_row(row[1:]), row[0]) for row in rows]

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
            # The clock is saved once a second, not with every commit (a page write less): a
            # crash can only make it restart behind, so rows live longer, never shorter.
            save_age = self._age >= self._age_saved + _AGE_SAVE_INTERVAL
            if save_age:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('age', ?)", (self._age,))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise OutboxError(f"outbox transaction failed: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise
        if save_age:
            self._age_saved = self._age
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


def _handed(e: Entry, ident: int, attempts: int) -> Entry:
    """``e`` as handed out: stored under ``ident``, handed out ``attempts`` times."""
    return Entry(e.device_id, e.kind, e.key, e.topic, e.payload, e.event_id, ident, attempts)


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
