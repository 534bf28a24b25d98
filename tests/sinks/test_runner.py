"""SinkRunner: bounded drop-oldest queue, batching, retries with backoff, close."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from mapper_sdk.sinks import (
    CLOSED,
    QUEUE_FULL,
    REJECTED,
    RunnerSettings,
    Sample,
    SinkError,
    SinkRejected,
    SinkRunner,
)

from .conftest import RecordingSink, failing


def sample(i: int) -> Sample:
    return Sample("default", "dev", "temp", str(i), "int", 1_700_000_000_000 + i)


def values(samples: list[Sample]) -> list[int]:
    return [int(s.value) for s in samples]


FAST = RunnerSettings(max_delay=0.01, backoff_base=0.005, backoff_cap=0.02, close_timeout=2.0)


async def test_full_batches_go_out_without_waiting_for_the_delay() -> None:
    sink = RecordingSink()
    runner = SinkRunner(sink, RunnerSettings(max_batch=3, max_delay=60.0))
    runner.start()
    for i in range(7):
        runner.offer(sample(i))
    await sink.wait_for(lambda: len(sink.batches) == 2)
    assert [values(b) for b in sink.batches] == [[0, 1, 2], [3, 4, 5]]
    assert runner.stats.queued == 1
    await runner.aclose()  # the 7th sample is flushed on close, not dropped
    assert [values(b) for b in sink.batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert runner.stats.written == 7
    assert runner.stats.batches == 3
    assert runner.stats.dropped == {}
    assert sink.closed


async def test_a_partial_batch_goes_out_after_max_delay() -> None:
    sink = RecordingSink()
    runner = SinkRunner(sink, RunnerSettings(max_batch=100, max_delay=0.05))
    runner.start()
    started = time.monotonic()
    runner.offer(sample(1))
    runner.offer(sample(2))
    await sink.wait_for(lambda: sink.batches)
    assert time.monotonic() - started >= 0.04  # it waited for more samples first
    assert [values(b) for b in sink.batches] == [[1, 2]]
    await runner.aclose()


async def test_full_queue_drops_the_oldest_and_counts_it() -> None:
    sink = RecordingSink()
    sink.gate.clear()  # the destination hangs: nothing leaves the queue
    runner = SinkRunner(sink, RunnerSettings(max_queue=5, max_batch=2, max_delay=0.0))
    runner.start()
    runner.offer(sample(0))
    runner.offer(sample(1))
    await sink.wait_for(lambda: sink.attempts == 1)  # [0, 1] is in flight
    for i in range(2, 12):
        runner.offer(sample(i))
    assert runner.stats.queued == 5
    assert runner.stats.in_flight == 2
    assert runner.stats.dropped == {QUEUE_FULL: 5}  # 2..6 made room for 7..11
    sink.gate.set()
    await sink.wait_for(lambda: len(sink.samples) == 7)
    assert values(sink.samples) == [0, 1, 7, 8, 9, 10, 11]
    assert runner.stats.offered == 12
    assert runner.stats.written == 7
    await runner.aclose()


async def test_failing_sink_is_retried_with_backoff_and_offer_never_blocks() -> None:
    sink = RecordingSink()
    sink.fail = failing(1000)
    settings = RunnerSettings(max_queue=50_000, max_batch=100, max_delay=0.0,
                              backoff_base=0.01, backoff_cap=0.05)  # fmt: skip
    runner = SinkRunner(sink, settings)
    runner.start()
    runner.offer(sample(0))
    await sink.wait_for(lambda: sink.attempts >= 3)
    assert not runner.stats.healthy
    assert runner.stats.last_error == "server down"
    # While the sink is down, offer() is a plain append: 20,000 of them take milliseconds
    # (generous bound for a loaded 2-core machine), and none of them waits on the sink.
    started = time.perf_counter()
    for i in range(1, 20_001):
        runner.offer(sample(i))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    assert runner.stats.queued + runner.stats.in_flight == 20_001
    # Retries go on at the capped pace: several more attempts in well under a second each.
    attempts = sink.attempts
    await sink.wait_for(lambda: sink.attempts >= attempts + 5)
    assert runner.stats.failures == sink.attempts
    sink.fail.clear()  # the destination comes back
    await sink.wait_for(lambda: len(sink.samples) == 20_001, timeout=30.0)
    assert values(sink.samples) == list(range(20_001))  # in order, nothing lost, no duplicate
    assert runner.stats.healthy
    assert runner.stats.dropped == {}
    await runner.aclose()


async def test_backoff_waits_grow_but_stay_under_the_cap() -> None:
    sink = RecordingSink()
    sink.fail = failing(8)
    stamps: list[float] = []
    original = sink.write

    async def timed(batch: list[Sample]) -> None:
        stamps.append(asyncio.get_running_loop().time())
        await original(batch)

    sink.write = timed  # type: ignore[method-assign]
    runner = SinkRunner(sink, RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.1))
    runner.start()
    runner.offer(sample(0))
    await sink.wait_for(lambda: sink.samples)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 8
    # Full jitter: each wait is uniform in [0, min(cap, base * 2**n)]; allow scheduling slack.
    assert all(gap < 0.1 + 0.5 for gap in gaps)
    await runner.aclose()


async def test_a_failed_batch_goes_back_in_front_and_the_bound_still_holds() -> None:
    sink = RecordingSink()
    sink.gate.clear()
    sink.fail = failing(1)
    runner = SinkRunner(sink, RunnerSettings(max_queue=4, max_batch=3, max_delay=0.0,
                                             backoff_base=0.001, backoff_cap=0.002))  # fmt: skip
    runner.start()
    for i in range(3):
        runner.offer(sample(i))
    await sink.wait_for(lambda: sink.attempts == 1)  # [0, 1, 2] in flight
    for i in range(3, 6):
        runner.offer(sample(i))  # queue: 3, 4, 5 (room for one more)
    sink.gate.set()
    await sink.wait_for(lambda: len(sink.samples) == 4)
    # The failed batch went back in front, but only one of its samples fitted: 2 (the newest).
    assert values(sink.samples) == [2, 3, 4, 5]
    assert runner.stats.dropped == {QUEUE_FULL: 2}
    await runner.aclose()


async def test_rejected_batches_are_dropped_and_counted() -> None:
    sink = RecordingSink()
    sink.fail = [SinkRejected("HTTP 400 bad request")]
    runner = SinkRunner(sink, RunnerSettings(max_batch=2, max_delay=0.0))
    runner.start()
    runner.offer(sample(0))
    runner.offer(sample(1))
    await sink.wait_for(lambda: sink.attempts == 1)
    runner.offer(sample(2))
    await sink.wait_for(lambda: sink.samples)
    assert values(sink.samples) == [2]
    assert runner.stats.dropped == {REJECTED: 2}
    assert runner.stats.last_error == "HTTP 400 bad request"
    assert runner.stats.healthy  # a bad batch says nothing about the destination
    await runner.aclose()


async def test_only_the_unwritten_tail_is_retried() -> None:
    sink = RecordingSink()
    sink.fail = [SinkError("reset after two", written=2)]
    runner = SinkRunner(sink, RunnerSettings(max_batch=5, max_delay=0.0, backoff_base=0.001))
    runner.start()
    for i in range(5):
        runner.offer(sample(i))
    await sink.wait_for(lambda: sink.samples)
    assert [values(b) for b in sink.batches] == [[2, 3, 4]]
    assert runner.stats.written == 5
    await runner.aclose()


async def test_open_is_retried_until_it_succeeds() -> None:
    sink = RecordingSink()
    sink.open_fail = failing(3, "connection refused")
    runner = SinkRunner(sink, FAST)
    runner.start()
    runner.offer(sample(0))
    await sink.wait_for(lambda: sink.samples)
    assert sink.opened == 4
    assert runner.stats.failures == 3
    await runner.aclose()


async def test_close_gives_up_on_a_dead_sink_and_counts_the_rest() -> None:
    sink = RecordingSink()
    sink.fail = failing(1000)
    runner = SinkRunner(sink, RunnerSettings(max_batch=2, max_delay=0.0, backoff_base=30.0,
                                             backoff_cap=30.0, close_timeout=5.0))  # fmt: skip
    runner.start()
    for i in range(5):
        runner.offer(sample(i))
    await sink.wait_for(lambda: sink.attempts == 1)
    started = time.monotonic()
    await runner.aclose()  # wakes the 30 s backoff, tries once more, then gives up
    assert time.monotonic() - started < 4.0
    assert runner.stats.dropped == {CLOSED: 5}
    assert runner.stats.queued == 0
    runner.offer(sample(9))  # after close: counted, not queued
    assert runner.stats.dropped == {CLOSED: 6}
    assert sink.closed


async def test_close_cancels_a_hung_write_after_the_flush_deadline() -> None:
    sink = RecordingSink()
    sink.gate.clear()
    runner = SinkRunner(sink, RunnerSettings(max_batch=2, max_delay=0.0, close_timeout=0.1))
    runner.start()
    for i in range(3):
        runner.offer(sample(i))
    await sink.wait_for(lambda: sink.attempts == 1)
    await runner.aclose()
    assert runner.stats.dropped == {CLOSED: 3}  # two in flight, one queued


def test_settings_refuse_an_empty_queue() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RunnerSettings(max_queue=0)


async def test_flush_waits_for_the_queue_without_sitting_out_max_delay() -> None:
    sink = RecordingSink()
    runner = SinkRunner(sink, RunnerSettings(max_batch=100, max_delay=60.0))
    runner.start()
    for i in range(3):
        runner.offer(sample(i))
    async with asyncio.timeout(5):
        await runner.flush()
    assert values(sink.samples) == [0, 1, 2]
    assert runner.stats.queued == 0
    await runner.aclose()


async def test_close_releases_a_waiting_flush() -> None:
    sink = RecordingSink()
    sink.fail = failing(1000)
    runner = SinkRunner(sink, RunnerSettings(max_delay=0.0, backoff_base=0.01, close_timeout=0.1))
    runner.start()
    runner.offer(sample(0))
    flushing = asyncio.create_task(runner.flush())
    await sink.wait_for(lambda: sink.attempts >= 2)
    assert not flushing.done()  # the sink is down: nothing leaves the queue
    await runner.aclose()
    async with asyncio.timeout(5):
        await flushing
    assert runner.stats.dropped == {CLOSED: 1}
