"""The report pacing of the DMI link: token bucket and coalescing queue, without sockets."""

from __future__ import annotations

import pytest

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.dmi._pacing import ReportQueue, StateEntry, TokenBucket, TwinsEntry
from mapper_sdk.driver import DeviceState

A, B = DeviceRef("ns", "a"), DeviceRef("ns", "b")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def report(ref: DeviceRef, ts: int, **values: str) -> TwinsEntry:
    twins = tuple(TwinValue(name, value, "float") for name, value in values.items())
    return TwinsEntry.of(TwinReport(ref, ts, twins))


def test_bucket_spends_its_burst_then_paces_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=0.8, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time() == pytest.approx(1 / 0.8)
    clock.now += 1.25
    assert bucket.try_take()
    clock.now += 100  # refills up to the burst, no further
    assert sum(bucket.try_take() for _ in range(10)) == 3


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1)


def test_reports_of_one_device_coalesce_newer_values_win() -> None:
    queue = ReportQueue(max_entries=10)
    queue.put(report(A, 1, temp="1", hum="50"))
    queue.put(report(B, 2, temp="9"))
    queue.put(report(A, 3, temp="2"))
    assert (len(queue), queue.coalesced) == (2, 1)
    first = queue.pop()
    assert isinstance(first, TwinsEntry)
    assert first.ref == A  # kept its place in line
    assert {n: (t.value, ts) for n, (t, ts) in first.twins.items()} == {
        "temp": ("2", 3),
        "hum": ("50", 1),
    }


def test_queue_is_bounded_by_devices_and_counts_drops() -> None:
    queue = ReportQueue(max_entries=1)
    queue.put(report(A, 1, temp="1"))
    queue.put(report(B, 1, temp="1"))
    queue.put(report(A, 2, temp="2"))  # merges: does not need a slot
    assert (len(queue), queue.dropped, queue.coalesced) == (1, 1, 1)


def test_states_coalesce_separately_from_twins() -> None:
    queue = ReportQueue(max_entries=10)
    queue.put(StateEntry(A, DeviceState.ONLINE, 1))
    queue.put(report(A, 1, temp="1"))
    queue.put(StateEntry(A, DeviceState.OFFLINE, 2))
    state = queue.pop()
    assert isinstance(state, StateEntry)
    assert (state.state, state.timestamp_ms) == (DeviceState.OFFLINE, 2)
    assert isinstance(queue.pop(), TwinsEntry)
    assert queue.pop() is None


def test_requeued_entry_goes_first_and_yields_to_newer_values() -> None:
    queue = ReportQueue(max_entries=10)
    failed = report(A, 1, temp="1", hum="50")
    queue.put(report(B, 2, temp="9"))
    queue.put(report(A, 3, temp="2"))  # arrived while `failed` was in flight
    queue.requeue(failed)
    first = queue.pop()
    assert isinstance(first, TwinsEntry)
    assert first.ref == A
    assert {n: t.value for n, (t, _) in first.twins.items()} == {"temp": "2", "hum": "50"}


def test_discard() -> None:
    queue = ReportQueue(max_entries=10)
    queue.put(report(A, 1, temp="1"))
    queue.put(StateEntry(A, DeviceState.ONLINE, 1))
    queue.put(StateEntry(B, DeviceState.ONLINE, 1))
    queue.discard(A, "twins")
    assert queue.discard_kind("state") == 2
    assert len(queue) == 0
