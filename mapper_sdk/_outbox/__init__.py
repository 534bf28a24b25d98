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
database with a write once a second of it has passed, and on close. An entry expires when that
clock has advanced more than ``max_age_s`` since its insertion; expired entries are looked for
at most every 0.1% of ``max_age_s`` (1 s at most). Time while the process is down does not
count: rows can only live longer than ``max_age_s``, never shorter. The stamp is monotone in
id, so expiry deletes a prefix.

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

from mapper_sdk._outbox.entries import (
    Clock,
    Entry,
    Merger,
    OutboxError,
    OutboxStats,
    ParkedEntry,
    Synchronous,
    merge_twin_updates,
)
from mapper_sdk._outbox.outbox import Outbox
from mapper_sdk._outbox.schema import APPLICATION_ID, MEMORY, SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "MEMORY",
    "SCHEMA_VERSION",
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
