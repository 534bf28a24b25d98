"""The scheduler is pure: time is an argument, so drift, grouping and skips are exact."""

from mapper_sdk._scheduler import Schedule
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
    assert schedule.take_due(10.05) == []
    assert schedule.next_deadline() == 10.1


def test_empty_schedule_never_fires() -> None:
    schedule = Schedule.build((), start=0.0, offset=0.0)
    assert schedule.next_deadline() == float("inf")
