"""The durable outbox: order, confirmation, bounds, age, compaction, parking, crashes, damage.

Time is an injected clock stepped by hand, a crash is a real ``kill -9`` of a child process, and
damage is done to real files: no sleeps.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import orjson
import pytest

from mapper_sdk._outbox import Entry, Outbox, OutboxError, merge_twin_updates
from mapper_sdk.bus import messages as msg

REPO = Path(__file__).resolve().parents[2]


class StepClock:
    """A monotonic clock the test moves by hand (and, to test robustness, backwards)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def entry(device: str, n: int, *, kind: str = "twin", key: str | None = None) -> Entry:
    return Entry.new(device, kind, key, f"$hw/events/device/{device}/twin/update", f"{n}".encode())


def numbers(entries: Sequence[Entry]) -> list[int]:
    return [int(e.payload) for e in entries]


def test_pending_hands_out_in_sequence_order_and_device_order_survives_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    appended: dict[str, list[int]] = {}
    with Outbox.open(path) as box:
        for n in range(300):
            device = f"d{(n * 7) % 5}"
            appended.setdefault(device, []).append(n)
            box.append(entry(device, n))
    with Outbox.open(path) as box:
        out = box.pending(1000)
    assert [e.id for e in out] == sorted(e.id for e in out)
    assert numbers(out) == list(range(300))
    for device, expected in appended.items():
        assert numbers([e for e in out if e.device_id == device]) == expected


def test_append_many_returns_ids_in_order_and_entries_keep_their_metadata(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db") as box:
        ids = box.append_many(
            [
                Entry.new("a", "twin", None, "t/a", b"1", "ev-1"),
                Entry.new("b", "state", "state", "t/b", bytearray(b"2")),
            ]
        )
        out = box.pending(10)
    assert ids == [1, 2]
    assert out[0] == Entry("a", "twin", None, "t/a", b"1", "ev-1", id=1, attempts=1)
    assert out[1] == Entry("b", "state", "state", "t/b", b"2", "", id=2, attempts=1)


def test_confirm_removes_entries_for_good(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox.open(path) as box:
        box.append_many(entry("d", n) for n in range(10))
        sent = box.pending(10)
        assert box.confirm(e.id for e in sent[:6]) == 6
        assert box.confirm([sent[0].id]) == 0  # a duplicate confirmation is ignored
        assert box.depth() == (4, sum(e.size for e in sent[6:]))
        assert box.confirmed == 6
    with Outbox.open(path) as box:
        assert numbers(box.pending(10)) == [6, 7, 8, 9]


def test_ids_are_never_reused_even_after_everything_was_confirmed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox.open(path) as box:
        first = box.append_many(entry("d", n) for n in range(5))
        box.confirm(first)
        generation = box.generation
    with Outbox.open(path) as box:
        assert box.append(entry("d", 5)) == first[-1] + 1
        assert box.generation == generation  # (generation, id) is the idempotency key


def test_unconfirmed_and_inflight_entries_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox.open(path) as box:
        box.append_many(entry("d", n) for n in range(4))
        box.pending(2)  # in flight when the process stops
    with Outbox.open(path) as box:
        out = box.pending(10)
    assert numbers(out) == [0, 1, 2, 3]  # a restart is a reconnect: everything goes again
    assert [e.attempts for e in out] == [2, 2, 1, 1]


_KILLED_WRITER = """
import os, sys
from mapper_sdk._outbox import Entry, Outbox

path, count = sys.argv[1], int(sys.argv[2])
box = Outbox.open(path)
for start in range(0, count, 50):
    box.append_many(
        Entry.new(f"d{n % 7}", "twin", None, f"t/d{n % 7}", str(n).encode())
        for n in range(start, min(count, start + 50))
    )
print("ok", flush=True)
os.kill(os.getpid(), 9)
"""


def test_committed_entries_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    count = 1234
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(count)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout == "ok\n"
    # The process never closed the database: the entries are in the WAL, recovered on open.
    assert (tmp_path / "outbox.db-wal").stat().st_size > 0
    with Outbox.open(path) as box:
        assert box.alarm is None
        assert box.depth()[0] == count
        out = box.pending(count + 1)
    assert numbers(out) == list(range(count))
    for device in {e.device_id for e in out}:
        mine = numbers([e for e in out if e.device_id == device])
        assert mine == sorted(mine)


# --- bounds ----------------------------------------------------------------------------------


def test_row_cap_drops_exactly_the_oldest_and_counts_them(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", max_rows=10_000) as box:
        for start in range(0, 15_000, 100):
            box.append_many(entry(f"d{n % 20}", n) for n in range(start, start + 100))
        assert box.drops == {"outbox_full_rows": 5_000}
        assert box.depth()[0] == 10_000
        out = box.pending(20_000)
    assert numbers(out) == list(range(5_000, 15_000))


def test_row_cap_applies_within_one_batch(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", max_rows=3) as box:
        ids = box.append_many(entry("d", n) for n in range(5))
        assert ids == [1, 2, 3, 4, 5]
        assert numbers(box.pending(10)) == [2, 3, 4]
        assert box.drops["outbox_full_rows"] == 2


def test_byte_cap_drops_oldest_until_it_fits(tmp_path: Path) -> None:
    one = entry("d", 10).size  # every entry below has the same size
    with Outbox.open(tmp_path / "outbox.db", max_bytes=10 * one) as box:
        box.append_many(entry("d", n) for n in range(10, 35))
        assert box.drops == {"outbox_full_bytes": 15}
        assert box.depth() == (10, 10 * one)
        assert numbers(box.pending(100)) == list(range(25, 35))


def test_an_entry_larger_than_the_byte_cap_is_refused_whole_batch(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", max_bytes=100) as box:
        big = Entry.new("d", "twin", None, "t", b"x" * 200)
        with pytest.raises(ValueError, match="max_bytes"):
            box.append_many([entry("d", 1), big])
        assert box.depth() == (0, 0)
        assert not box.drops


def test_a_failed_write_stores_nothing_and_is_counted(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db") as box:
        box.append(entry("d", 0))
        # Simulate a full disk: the database may not grow by a single page.
        pages = box._conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[union-attr]
        box._conn.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[union-attr]
        big = [Entry.new("d", "twin", None, "t", os.urandom(3000)) for _ in range(20)]
        with pytest.raises(OutboxError):
            box.append_many(big)
        assert box.drops == {"write_failed": 20}
        assert box.depth() == (1, entry("d", 0).size)
        assert box.appended == 1
        box._conn.execute("PRAGMA max_page_count = 1000000")  # type: ignore[union-attr]
        box.append(entry("d", 1))
        assert numbers(box.pending(10)) == [0, 1]


# --- age -------------------------------------------------------------------------------------


def test_entries_expire_after_max_age_on_the_injected_clock(tmp_path: Path) -> None:
    clock = StepClock()
    with Outbox.open(tmp_path / "outbox.db", max_age_s=100, clock=clock) as box:
        box.append_many(entry("d", n) for n in range(3))
        clock.now += 60
        box.append_many(entry("d", n) for n in range(3, 5))
        clock.now += 40  # the first three are exactly 100 s old: not yet expired
        assert numbers(box.pending(10)) == [0, 1, 2, 3, 4]
        box.requeue_inflight()
        clock.now += 0.5
        out = box.pending(10)
        assert box.drops == {"expired": 3}
        assert numbers(out) == [3, 4]


def test_a_clock_stepped_backwards_deletes_nothing_early(tmp_path: Path) -> None:
    clock = StepClock(start=5_000.0)
    with Outbox.open(tmp_path / "outbox.db", max_age_s=100, clock=clock) as box:
        box.append_many(entry("d", n) for n in range(3))
        clock.now -= 3_600  # stepped back one hour: counts as no time at all
        box.append(entry("d", 3))
        clock.now += 99  # 99 s have really passed since the first append
        assert numbers(box.pending(10)) == [0, 1, 2, 3]
        assert not box.drops
        box.requeue_inflight()
        clock.now += 2
        assert box.pending(10) == []
        assert box.drops == {"expired": 4}


def test_a_clock_that_starts_over_after_a_restart_deletes_nothing_early(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    before = StepClock(start=50_000.0)
    with Outbox.open(path, max_age_s=100, clock=before) as box:
        box.append(entry("d", 0))
        before.now += 60
        box.append(entry("d", 1))
    # After a reboot the monotonic clock starts near zero; downtime does not count as age.
    clock = StepClock(start=3.0)
    with Outbox.open(path, max_age_s=100, clock=clock) as box:
        clock.now += 39  # 60 + 39 = 99 s of age for entry 0
        assert numbers(box.pending(10)) == [0, 1]
        box.requeue_inflight()
        clock.now += 2
        assert numbers(box.pending(10)) == [1]
        assert box.drops == {"expired": 1}


def test_a_clock_jump_forward_is_real_elapsed_time(tmp_path: Path) -> None:
    clock = StepClock()
    with Outbox.open(tmp_path / "outbox.db", max_age_s=100, clock=clock) as box:
        box.append_many(entry("d", n) for n in range(3))
        clock.now += 86_400
        box.append(entry("d", 3))  # expiry also runs on append, without a pending() call
        assert box.drops == {"expired": 3}
        assert box.depth()[0] == 1


# --- compaction ------------------------------------------------------------------------------


def test_compaction_keeps_the_newest_entry_per_key_and_counts_the_rest(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", compaction=True) as box:
        for n in range(100):
            box.append(entry(f"d{n % 2}", n, kind="state", key="state"))
        box.append_many(entry("d0", n) for n in range(100, 103))  # key None: never compacted
        assert box.drops == {"compacted": 98}
        out = box.pending(10)
    assert [(e.device_id, int(e.payload)) for e in out] == [
        ("d0", 98),
        ("d1", 99),
        ("d0", 100),
        ("d0", 101),
        ("d0", 102),
    ]


def test_compaction_within_one_batch_and_per_kind(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", compaction=True) as box:
        box.append_many(
            [
                entry("d", 1, kind="state", key="k"),
                entry("d", 2, kind="other", key="k"),
                entry("d", 3, kind="state", key="k"),
            ]
        )
        assert box.drops["compacted"] == 1
        assert numbers(box.pending(10)) == [2, 3]


def test_compaction_is_off_by_default(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db") as box:
        box.append_many(entry("d", n, kind="state", key="state") for n in range(5))
        assert box.depth()[0] == 5
        assert not box.drops


def test_compaction_never_touches_entries_in_flight(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", compaction=True) as box:
        box.append(entry("d", 0, kind="state", key="state"))
        assert numbers(box.pending(10)) == [0]
        box.append(entry("d", 1, kind="state", key="state"))
        box.append(entry("d", 2, kind="state", key="state"))
        assert box.drops == {"compacted": 1}  # entry 1, not the one in flight
        box.requeue_inflight()
        assert numbers(box.pending(10)) == [0, 2]


def twin_update(values: dict[str, str], event_id: str, timestamp: int) -> bytes:
    return msg.build_twin_report(
        {name: (value, "int") for name, value in values.items()},
        event_id=event_id,
        timestamp=timestamp,
    )


def test_a_merger_keeps_the_newest_value_of_every_property(tmp_path: Path) -> None:
    payloads = [
        twin_update({"temp": "1", "hum": "50"}, "e1", 1_000),
        twin_update({"temp": "2"}, "e2", 2_000),
        twin_update({"pressure": "7"}, "e3", 3_000),
    ]
    with Outbox.open(
        tmp_path / "outbox.db", compaction=True, mergers={"twin": merge_twin_updates}
    ) as box:
        for n, payload in enumerate(payloads, 1):
            box.append(Entry.new("d", "twin", "twin", "t/d", payload, f"e{n}"))
        assert box.drops == {"compacted": 2}
        (out,) = box.pending(10)
    doc = orjson.loads(out.payload)
    assert out.event_id == doc["event_id"] == "e3"
    assert doc["timestamp"] == 3_000
    values = {name: twin["actual"]["value"] for name, twin in doc["twin"].items()}
    assert values == {"temp": "2", "hum": "50", "pressure": "7"}
    assert doc["twin"]["hum"]["actual"]["metadata"]["timestamp"] == 1_000  # when it was read
    msg.parse_twin_update(out.payload)  # still a valid twin/update


def test_a_failing_merger_keeps_every_entry(tmp_path: Path) -> None:
    def broken(payloads: Sequence[bytes]) -> bytes:
        raise RuntimeError("bug")

    with Outbox.open(tmp_path / "outbox.db", compaction=True, mergers={"twin": broken}) as box:
        box.append_many(entry("d", n, key="twin") for n in range(3))
        assert box.merge_failures == 2
        assert not box.drops
        assert numbers(box.pending(10)) == [0, 1, 2]


# --- delivery: in flight, requeue, parking ----------------------------------------------------


def test_entries_in_flight_are_not_handed_out_twice_until_requeued(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db") as box:
        box.append_many(entry("d", n) for n in range(10))
        first, second = box.pending(5), box.pending(5)
        assert numbers(first) == [0, 1, 2, 3, 4]
        assert numbers(second) == [5, 6, 7, 8, 9]
        assert box.pending(5) == []
        assert box.inflight_count == 10
        assert box.requeue_inflight() == 10
        again = box.pending(100)
        assert numbers(again) == list(range(10))
        # A dropped link is not the entries' fault: requeueing takes the attempt back.
        assert {e.attempts for e in again} == {1}
        assert box.handed_out == 20
        assert box.release([e.id for e in again[:3]]) == 3  # counted: the receiver was alive
        assert [e.attempts for e in box.pending(3)] == [2, 2, 2]


def test_release_returns_entries_ahead_of_newer_ones(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db") as box:
        box.append_many(entry("d", n) for n in range(6))
        sent = box.pending(3)
        assert box.release([sent[1].id, 999]) == 1  # an id not in flight is ignored
        assert numbers(box.pending(2)) == [1, 3]


def test_an_entry_never_confirmed_is_parked_after_max_attempts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox.open(path, max_attempts=3) as box:
        box.append(Entry.new("bad", "twin", None, "t/bad", b"poison"))
        for attempt in range(1, 4):
            box.append(entry("good", attempt))
            out = box.pending(10)
            assert out[0].payload == b"poison"
            assert out[0].attempts == attempt
            box.confirm(e.id for e in out[1:])  # the others get through
            box.release([out[0].id])  # unanswered while the receiver answered the others
        assert box.pending(10) == []
        assert box.parked_count == 1
        assert box.drops == {"parked": 1}
    with Outbox.open(path, max_attempts=3) as box:
        (parked,) = box.parked()
        assert parked.reason == "max_attempts"
        assert parked.entry.payload == b"poison"
        assert parked.entry.attempts == 3
        assert box.depth() == (0, 0)


def test_the_caller_can_park_and_the_parked_table_is_bounded(tmp_path: Path) -> None:
    with Outbox.open(tmp_path / "outbox.db", max_parked=2) as box:
        ids = box.append_many(entry("d", n) for n in range(5))
        assert box.park(ids[:3], "refused: 400") == 3
        assert box.parked_count == 2
        assert box.parked_evicted == 1
        assert [p.entry.id for p in box.parked()] == ids[1:3]
        assert box.drops == {"parked": 3}
        assert numbers(box.pending(10)) == [3, 4]


# --- damage and unusable files ----------------------------------------------------------------


def _filled(path: Path, count: int = 2000) -> None:
    with Outbox.open(path) as box:
        box.append_many(Entry.new("d", "twin", None, "t", os.urandom(200)) for _ in range(count))


def _assert_fresh_after_quarantine(path: Path, bad: bytes) -> None:
    with Outbox.open(path) as box:
        assert box.alarm is not None
        assert "moved aside" in box.alarm
        assert box.durable
        assert box.depth() == (0, 0)
        aside = [p for p in box.quarantined if p.name.startswith("outbox.db.corrupt-")]
        assert len(aside) == 1
        assert aside[0].read_bytes() == bad
        assert box.stats().quarantined == len(box.quarantined)
        box.append(entry("d", 1))  # and it works
    with Outbox.open(path) as box:  # the next start is clean: no crash loop, no new alarm
        assert box.alarm is None
        assert numbers(box.pending(10)) == [1]


def test_a_garbage_file_is_quarantined_and_a_fresh_outbox_created(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    bad = os.urandom(8192)
    path.write_bytes(bad)
    _assert_fresh_after_quarantine(path, bad)


def test_a_truncated_database_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    _filled(path)
    bad = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(bad)
    _assert_fresh_after_quarantine(path, bad)


def test_a_damaged_header_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    _filled(path)
    bad = b"\x00" * 100 + path.read_bytes()[100:]
    path.write_bytes(bad)
    _assert_fresh_after_quarantine(path, bad)


def test_another_programs_database_is_quarantined_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE users (name TEXT)")
    other.commit()
    other.close()
    bad = path.read_bytes()
    _assert_fresh_after_quarantine(path, bad)


def _snapshot_after_two_commits(tmp_path: Path) -> Path:
    """Files as a kill -9 leaves them: two committed batches still in the WAL."""
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    live.mkdir()
    crashed.mkdir()
    box = Outbox.open(live / "outbox.db")
    box.append_many(entry("d", n) for n in range(10))
    box.append_many(entry("d", n) for n in range(10, 20))
    for name in ("outbox.db", "outbox.db-wal"):
        shutil.copyfile(live / name, crashed / name)
    box.close()
    return crashed / "outbox.db"


def test_a_torn_wal_tail_keeps_every_complete_transaction(tmp_path: Path) -> None:
    path = _snapshot_after_two_commits(tmp_path)
    wal = tmp_path / "crashed" / "outbox.db-wal"
    with wal.open("r+b") as f:  # cut the second batch's commit frame in half
        f.truncate(wal.stat().st_size - 1000)
    with Outbox.open(path) as box:
        # SQLite's recovery drops the incomplete transaction; that is not damage.
        assert box.alarm is None
        assert box.quarantined == ()
        assert numbers(box.pending(100)) == list(range(10))


def test_a_wal_with_a_damaged_header_is_moved_aside(tmp_path: Path) -> None:
    path = _snapshot_after_two_commits(tmp_path)
    wal = tmp_path / "crashed" / "outbox.db-wal"
    bad = b"\xff" * 32 + wal.read_bytes()[32:]
    wal.write_bytes(bad)
    with Outbox.open(path) as box:
        assert box.alarm is not None
        assert "WAL header damaged" in box.alarm
        (aside,) = box.quarantined
        assert aside.name.startswith("outbox.db-wal.corrupt-")
        assert aside.read_bytes() == bad
        box.append(entry("d", 99))
        assert numbers(box.pending(100))[-1] == 99


def test_an_unopenable_path_runs_in_memory_with_an_alarm(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with Outbox.open(blocker / "outbox.db") as box:
        assert not box.durable
        assert box.alarm is not None
        assert "running in memory" in box.alarm
        box.append(entry("d", 1))
        assert numbers(box.pending(10)) == [1]
        assert box.stats().alarm == box.alarm
    with pytest.raises(OutboxError, match="cannot open"):
        Outbox.open(blocker / "outbox.db", memory_fallback=False)


def test_a_second_opener_cannot_share_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox.open(path) as first:
        first.append(entry("d", 1))
        with Outbox.open(path, busy_timeout_s=0.01) as second:
            assert not second.durable
            assert second.alarm is not None
            assert "locked" in second.alarm
            assert second.depth() == (0, 0)  # never the same entries sent twice
        assert first.depth()[0] == 1


# --- misc ------------------------------------------------------------------------------------


def test_memory_outbox_and_stats(tmp_path: Path) -> None:
    with Outbox.open(":memory:", max_rows=2) as box:
        box.append_many(entry("d", n) for n in range(3))
        box.pending(1)
        stats = box.stats()
    assert stats.rows == 2
    assert stats.inflight == 1
    assert stats.appended == 3
    assert stats.handed_out == 1
    assert stats.drops == {"outbox_full_rows": 1}
    assert not stats.durable
    assert stats.alarm is None


def test_a_closed_outbox_refuses_calls(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "outbox.db")
    box.close()
    box.close()  # twice is fine
    with pytest.raises(OutboxError, match="closed"):
        box.append(entry("d", 1))


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
def test_the_file_is_in_wal_mode_with_the_chosen_synchronous_level(
    tmp_path: Path, synchronous: Literal["NORMAL", "FULL"], level: int
) -> None:
    with Outbox.open(tmp_path / "outbox.db", synchronous=synchronous) as box:
        conn = box._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert box.durable


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rows": 0},
        {"max_bytes": 0},
        {"max_attempts": 0},
        {"max_age_s": 0.0},
        {"synchronous": "OFF"},
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Outbox.open(tmp_path / "outbox.db", **kwargs)  # type: ignore[arg-type]
