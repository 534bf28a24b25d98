"""Durable outbox: insert and drain rates, bytes on disk per entry (reliability R4, B7).

A long outage, time-compressed: N twin reports of ~200 B are appended in batches (one transaction
each), the outbox is closed and reopened (a restart: counting rows and ``quick_check``), then
drained the way the MQTT bus drains it after the link is back: ``pending(batch)`` and a
``confirm`` per batch, and again with one ``confirm`` per message (one transaction per PUBACK,
what a bus confirming each acknowledgement does). Two variants: the insert with
``synchronous=FULL`` (an fsync per commit), and compaction on with the twin merger
(N reports over ``--devices`` devices: the outbox stays at one row per device).

Targets (EdgeCore-link issue): insert >= 5,000 rows/s in batches of 100, drain >= 1,000 msg/s.

    python benchmarks/bench_outbox.py [--entries 100000] [--batch 100] [--devices 1000]
                                      [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from mapper_sdk._outbox import Entry, Outbox, Synchronous, merge_twin_updates
from mapper_sdk.bus import messages as msg

INSERT_TARGET = 5_000.0
DRAIN_TARGET = 1_000.0


def report(n: int, devices: int, key: str | None) -> Entry:
    """A realistic twin/update of about 200 B, as the MQTT bus stages it."""
    device = f"default/sensor-{n % devices:04d}"
    event_id = f"7f3a-6650c1d2-{n}"
    payload = msg.build_twin_report(
        {"temperature": (f"{20 + n % 97 / 8:.3f}", "float"), "humidity": (f"{n % 100}", "int")},
        event_id=event_id,
        timestamp=1_700_000_000_000 + n,
        value_timestamps=False,
    )
    topic = f"$hw/events/device/{device}/twin/update"
    return Entry.new(device, "twin", key, topic, payload, event_id)


def batches(entries: int, batch: int, devices: int, key: bool) -> Iterator[list[Entry]]:
    for start in range(0, entries, batch):
        stop = min(entries, start + batch)
        yield [report(n, devices, "twin" if key else None) for n in range(start, stop)]


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def timed(action: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    count = action()
    return count, time.perf_counter() - start


def insert(box: Outbox, args: argparse.Namespace, *, key: bool = False) -> dict[str, Any]:
    prepared = list(batches(args.entries, args.batch, args.devices, key))  # not timed

    def run() -> int:
        for chunk in prepared:
            box.append_many(chunk)
        return sum(len(chunk) for chunk in prepared)

    count, seconds = timed(run)
    payload = sum(len(e.payload) for chunk in prepared for e in chunk) / count
    stored = sum(e.size for chunk in prepared for e in chunk) / count
    return {
        "rows": count,
        "seconds": round(seconds, 3),
        "rows_per_s": round(count / seconds),
        "mean_payload_bytes": round(payload, 1),
        "mean_entry_bytes": round(stored, 1),  # payload + topic, ids, kind: what max_bytes counts
    }


def drain(box: Outbox, batch: int, count: int, *, confirm_each: bool) -> dict[str, Any]:
    """Hand out and confirm up to ``count`` messages, ``batch`` at a time."""

    def run() -> int:
        drained = 0
        while drained < count and (sent := box.pending(min(batch, count - drained))):
            if confirm_each:
                for entry in sent:
                    box.confirm([entry.id])
            else:
                box.confirm(entry.id for entry in sent)
            drained += len(sent)
        return drained

    drained, seconds = timed(run)
    return {"msgs": drained, "seconds": round(seconds, 3), "msgs_per_s": round(drained / seconds)}


def main_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    path = work / "normal.db"
    with Outbox.open(path) as box:
        inserted = insert(box, args)
        on_disk = disk_bytes(path)
    closed = disk_bytes(path)
    start = time.perf_counter()
    with Outbox.open(path) as box:
        reopen_s = time.perf_counter() - start
        assert box.depth()[0] == args.entries
        assert box.alarm is None
        half = args.entries // 2
        batched = drain(box, args.batch, half, confirm_each=False)
        each = drain(box, args.batch, args.entries - half, confirm_each=True)
        assert box.depth() == (0, 0)
    return {
        "insert": inserted,
        "bytes_on_disk_per_entry_open": round(on_disk / args.entries, 1),
        "bytes_on_disk_per_entry_closed": round(closed / args.entries, 1),
        "reopen_seconds": round(reopen_s, 3),
        "drain_batch_confirm": batched,
        "drain_confirm_each": each,
    }


def full_sync_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sync: Synchronous = "FULL"
    with Outbox.open(work / "full.db", synchronous=sync) as box:
        return insert(box, args)


def compaction_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    path = work / "compact.db"
    with Outbox.open(path, compaction=True, mergers={"twin": merge_twin_updates}) as box:
        inserted = insert(box, args, key=True)
        rows, size = box.depth()
        compacted = box.drops["compacted"]
        return inserted | {"rows_left": rows, "bytes_left": size, "compacted": compacted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-outbox-") as tmp:
        work = Path(tmp)
        normal = main_run(args, work)
        full = full_sync_run(args, work)
        compaction = compaction_run(args, work)
    drain_rate = min(
        normal["drain_batch_confirm"]["msgs_per_s"], normal["drain_confirm_each"]["msgs_per_s"]
    )
    result = {
        "parameters": {"entries": args.entries, "batch": args.batch, "devices": args.devices},
        "synchronous_normal": normal,
        "synchronous_full_insert": full,
        "compaction": compaction,
        "targets": {"insert_rows_per_s": INSERT_TARGET, "drain_msgs_per_s": DRAIN_TARGET},
        "pass": normal["insert"]["rows_per_s"] >= INSERT_TARGET and drain_rate >= DRAIN_TARGET,
    }
    path = write_result("outbox", result)
    print(
        f"insert {normal['insert']['rows_per_s']:,} rows/s (FULL: {full['rows_per_s']:,}),"
        f" drain {normal['drain_batch_confirm']['msgs_per_s']:,} msg/s batched,"
        f" {normal['drain_confirm_each']['msgs_per_s']:,} msg/s confirming each,"
        f" {normal['bytes_on_disk_per_entry_open']} B on disk per entry"
        f" ({normal['insert']['mean_payload_bytes']} B payload); compaction left"
        f" {compaction['rows_left']} rows; -> {path}"
    )
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
