"""The scheduler is pure: time is an argument, so drift, grouping and skips are exact."""

import asyncio
from typing import Any

import pytest

from mapper_sdk._scheduler import Schedule, Ticker, phase_offset
from mapper_sdk.binding import BoundProperty
from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property
from mapper_sdk.virtual import VirtualDriver


def _points(cycles: dict[str, int]) -> tuple[BoundProperty, ...]:
    model = make_model("m", *(model_property(name) for name in cycles))
    device = make_device("d", model, {}, {name: {} for name in cycles})
    raw = device.model_dump(by_alias=True)
    for prop in raw["spec"]["properties"]:
        prop["collectCycle"] = cycles[prop["name"]]
    bound = bind_or_raise(type(device).model_validate(raw), model, VirtualDriver)
    return bound.properties


def test_properties_with_the_same_cycle_form_one_batch() -> None:
    points = _points({"a": 1000, "b": 1000, "c": 500})
    schedule = Schedule.build(points, start=100.0, offset=0.0)
    assert len(schedule.groups) == 2
    assert [p.name for p in schedule.take_due(100.0)] == ["c", "a", "b"]
    assert [p.name for p in schedule.take_due(100.5)] == ["c"]
    assert [p.name for p in schedule.take_due(101.0)] == ["c", "a", "b"]


def test_ticks_stay_on_the_grid_when_served_late() -> None:
    schedule = Schedule.build(_points({"a": 1000}), start=0.0, offset=0.25)
    assert schedule.next_deadline() == 0.25
    schedule.take_due(0.30)  # served 50 ms late
    assert schedule.next_deadline() == 1.25  # no drift: the grid, not "late + period"
    assert schedule.missed == 0


def test_late_ticks_are_skipped_and_counted_not_burst() -> None:
    schedule = Schedule.build(_points({"a": 1000}), start=0.0, offset=0.0)
    schedule.take_due(0.0)
    due = schedule.take_due(3.5)  # the loop stalled for 3.5 periods
    assert [p.name for p in due] == ["a"]  # served once, not four times
    assert schedule.missed == 2  # ticks 2.0 and 3.0 were skipped
    assert schedule.next_deadline() == 4.0


def test_nothing_due_before_the_deadline() -> None:
    schedule = Schedule.build(_points({"a": 200}), start=10.0, offset=0.1)
    assert schedule.take_due(10.05) == ()
    assert schedule.next_deadline() == 10.1


def test_empty_schedule_never_fires() -> None:
    schedule = Schedule.build((), start=0.0, offset=0.0)
    assert schedule.next_deadline() == float("inf")


def test_phase_offset_puts_the_first_tick_on_the_shared_grid() -> None:
    # Two devices starting at different times with the same phase draw land on one tick.
    first = [start + phase_offset(start, 1.0, 0.01, 0.37) for start in (100.0021, 100.0093)]
    assert first[0] == pytest.approx(first[1])
    assert first[0] == pytest.approx(100.38)
    for start, tick in zip((100.0021, 100.0093), first, strict=True):
        assert start <= tick < start + 1.0 + 0.01


def test_phase_offset_keeps_eight_phases_for_fast_devices() -> None:
    # A 40 ms period with a 10 ms step would have only 4 phases: the step shrinks to 5 ms.
    offset = phase_offset(0.0, 0.04, 0.01, 0.3)
    assert offset == pytest.approx(0.015)


def test_phase_offset_without_a_step_keeps_the_raw_phase() -> None:
    assert phase_offset(7.0, 2.0, 0.0, 0.25) == 0.5


async def test_ticker_wakes_every_waiter_of_a_deadline_with_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    timers: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any) -> asyncio.TimerHandle:
        timers.append(when)
        return call_at(when, *args)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    ticker = Ticker()
    deadline = loop.time() + 0.02
    waiters = [ticker.wait_until(deadline) for _ in range(5)]
    waiters[2].cancel()  # a device stopped while waiting: skipped, not an error
    later = ticker.wait_until(deadline + 0.01)
    await asyncio.gather(*waiters[:2], *waiters[3:])
    assert loop.time() >= deadline
    assert not later.done()
    await later
    assert loop.time() >= deadline + 0.01
    assert len(timers) == 2  # one per distinct deadline, not one per waiter


async def test_ticker_never_wakes_an_empty_schedule() -> None:
    ticker = Ticker()
    never = ticker.wait_until(float("inf"))
    soon = ticker.wait_until(asyncio.get_running_loop().time())
    await soon
    assert not never.done()
    never.cancel()
