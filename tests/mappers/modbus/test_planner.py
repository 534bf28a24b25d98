"""Modbus read/write planner: request counts, limits, separation, learning from 02/03, JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapper_modbus.planner import (
    ReadItem,
    ReadPlan,
    ReadPlanner,
    ReadRequest,
    WriteItem,
    plan_writes,
)
from mapper_modbus.tables import Register

HOLDING, INPUT, COIL, DISCRETE = (
    Register.HOLDING,
    Register.INPUT,
    Register.COIL,
    Register.DISCRETE_INPUT,
)


def floats(n: int, start: int = 0, unit: int = 1, table: Register = HOLDING) -> list[ReadItem]:
    return [ReadItem(("f", unit, table, i), unit, table, start + 2 * i, 2) for i in range(n)]


def singles(offsets: list[int] | range, table: Register = HOLDING, **kw: int) -> list[ReadItem]:
    return [ReadItem(o, 1, table, o, 1, **kw) for o in offsets]


def spans(plan: ReadPlan) -> list[tuple[int, int]]:
    return [(r.address, r.count) for r in plan.requests]


def assert_covers(plan: ReadPlan, items: list[ReadItem]) -> None:
    """Every item is served by exactly one request, which reads all of it."""
    served = [(item, r) for r in plan.requests for item in r.items]
    assert sorted(id(i) for i, _ in served) == sorted(id(i) for i in items)
    for item, request in served:
        assert (item.unit, item.table) == (request.unit, request.table)
        assert request.address <= item.offset
        assert item.end <= request.end


Refusal = Callable[[ReadRequest], int | None]


def run_tick(planner: ReadPlanner, items: list[ReadItem], refuse: Refusal) -> tuple[int, int]:
    """Read like a driver: retry what record_failure returns. Gives (requests sent, failures)."""
    queue = list(planner.plan(items).requests)
    sent = failures = 0
    while queue:
        request = queue.pop(0)
        sent += 1
        code = refuse(request)
        if code is not None:
            failures += 1
            queue += planner.record_failure(request, code)
        assert sent < 1000, "fallback does not terminate"
    return sent, failures


# -- merging ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "requests"), [(1, 1), (10, 1), (62, 1), (63, 2), (100, 2), (500, 9)])
def test_contiguous_float32_request_counts(n: int, requests: int) -> None:
    items = floats(n)
    plan = ReadPlanner().plan(items)
    assert len(plan) == requests == math.ceil(n / 62)
    assert all(r.count <= 125 for r in plan.requests)
    assert_covers(plan, items)


def test_100_floats_split_at_a_property_boundary() -> None:
    plan = ReadPlanner().plan(floats(100))
    assert spans(plan) == [(0, 124), (124, 76)]


def test_125_and_2000_limits() -> None:
    planner = ReadPlanner()
    assert spans(planner.plan(singles(range(125)))) == [(0, 125)]
    assert spans(planner.plan(singles(range(126)))) == [(0, 125), (125, 1)]
    assert spans(planner.plan(singles(range(2000), COIL))) == [(0, 2000)]
    assert spans(planner.plan(singles(range(2001), DISCRETE))) == [(0, 2000), (2000, 1)]


@pytest.mark.parametrize(
    ("gap", "table", "max_gap", "requests"),
    [
        (10, HOLDING, 10, 1),
        (11, HOLDING, 10, 2),
        (2, HOLDING, 0, 2),
        (0, HOLDING, 0, 1),
        (64, COIL, 10, 1),
        (65, COIL, 10, 2),
    ],
)
def test_gap_fill(gap: int, table: Register, max_gap: int, requests: int) -> None:
    items = singles([0, 1 + gap], table)
    assert len(ReadPlanner(max_gap=max_gap).plan(items)) == requests


def test_every_third_register_is_one_request() -> None:
    items = singles(range(0, 120, 3))
    assert spans(ReadPlanner().plan(items)) == [(0, 118)]
    assert len(ReadPlanner(max_gap=1).plan(items)) == len(items)


def test_overlapping_properties_share_a_request() -> None:
    items = [
        ReadItem("word", 1, HOLDING, 5, 1),
        ReadItem("bit", 1, HOLDING, 5, 1),
        ReadItem("f", 1, HOLDING, 4, 2),
    ]
    plan = ReadPlanner().plan(items)
    assert spans(plan) == [(4, 2)]
    assert_covers(plan, items)


def test_max_block_splits_the_block() -> None:
    items = [ReadItem(i, 1, HOLDING, 2 * i, 2, max_block=16) for i in range(50)]
    plan = ReadPlanner().plan(items)
    assert [r.count for r in plan.requests] == [16] * 6 + [4]
    assert_covers(plan, items)


def test_max_block_of_one_property_limits_only_its_block() -> None:
    items = [
        *singles(range(10)),
        ReadItem("slow", 1, HOLDING, 200, 1, max_block=4),
        *singles(range(201, 210)),
    ]
    plan = ReadPlanner().plan(items)
    assert spans(plan) == [(0, 10), (200, 4), (204, 6)]
    late = [
        *singles(range(10)),
        ReadItem("late", 1, HOLDING, 10, 1, max_block=4),
        *singles(range(11, 14)),
    ]
    assert spans(ReadPlanner().plan(late)) == [(0, 10), (10, 4)]


def test_units_and_tables_are_never_merged() -> None:
    items = (
        floats(5, unit=2)
        + floats(5, unit=1, table=INPUT)
        + floats(5, unit=1)
        + singles(range(10), COIL)
    )
    plan = ReadPlanner().plan(items)
    assert [(r.unit, r.function, r.address, r.count) for r in plan.requests] == [
        (1, 1, 0, 10),
        (1, 3, 0, 10),
        (1, 4, 0, 10),
        (2, 3, 0, 10),
    ]
    assert_covers(plan, items)


def test_no_items_no_requests() -> None:
    assert ReadPlanner().plan([]).requests == ()


@given(
    st.lists(
        st.tuples(
            st.integers(1, 3),
            st.sampled_from(list(Register)),
            st.integers(0, 600),
            st.integers(1, 4),
        ),
        max_size=200,
    ),
    st.integers(0, 20),
)
def test_any_plan_is_legal(raw: list[tuple[int, Register, int, int]], max_gap: int) -> None:
    items = [
        ReadItem(n, unit, table, offset, count)
        for n, (unit, table, offset, count) in enumerate(raw)
    ]
    plan = ReadPlanner(max_gap=max_gap, max_gap_bits=max_gap).plan(items)
    assert_covers(plan, items)
    for request in plan.requests:
        assert request.count <= request.table.max_read
        ordered = sorted(request.items, key=lambda i: i.offset)
        reach = ordered[0].end
        for item in ordered[1:]:
            assert item.offset - reach <= max_gap  # never a hole wider than allowed
            reach = max(reach, item.end)


# -- learning from exceptions 02/03 --------------------------------------------------------------


def test_size_refusal_halves_and_learns_the_limit() -> None:
    planner = ReadPlanner()
    block = planner.plan(singles(range(125))).requests[0]
    halves = planner.record_failure(block, 3)
    assert [(r.address, r.count) for r in halves] == [(0, 63), (63, 62)]
    assert planner.learned_limit(1, HOLDING) == 63
    assert spans(planner.plan(singles(range(125)))) == [(0, 63), (63, 62)]
    assert planner.learned_limit(1, INPUT) is None  # per table
    assert planner.learned_limit(2, HOLDING) is None  # per unit


def test_device_with_a_small_block_limit_settles_in_one_tick() -> None:
    planner = ReadPlanner()
    items = floats(100)

    def refuse_big(request: ReadRequest) -> int | None:
        return 2 if request.count > 50 else None  # answers 02, as many devices do

    _sent, failures = run_tick(planner, items, refuse_big)
    assert failures > 0
    assert all(r.count <= 50 for r in planner.plan(items).requests)
    assert run_tick(planner, items, refuse_big) == (len(planner.plan(items)), 0)
    assert len(planner.plan(items)) <= 2 * math.ceil(200 / 50)


def test_bad_register_is_isolated_and_does_not_poison_neighbours() -> None:
    planner = ReadPlanner()
    items = singles(range(20))

    def refuse_7(request: ReadRequest) -> int | None:
        return 2 if request.address <= 7 < request.end else None

    _sent, failures = run_tick(planner, items, refuse_7)
    assert failures <= 2 * math.ceil(math.log2(20)) + 1
    assert planner.bad_ranges(1, HOLDING) == [(7, 8)]
    assert planner.learned_limit(1, HOLDING) is None  # the failures it explained are forgotten
    assert spans(planner.plan(items)) == [(0, 7), (7, 1), (8, 12)]
    assert run_tick(planner, items, refuse_7) == (3, 1)  # only the bad one fails


def test_bad_register_that_answers_03_is_isolated_too() -> None:
    planner = ReadPlanner()
    items = singles(range(40))
    run_tick(planner, items, lambda r: 3 if r.address <= 30 < r.end else None)
    assert planner.bad_ranges(1, HOLDING) == [(30, 31)]
    assert planner.learned_limit(1, HOLDING) is None
    assert spans(planner.plan(items)) == [(0, 30), (30, 1), (31, 9)]


def test_gap_fill_never_covers_a_bad_range() -> None:
    planner = ReadPlanner()
    planner.record_failure(ReadRequest.covering(singles([5])), 2)
    assert spans(planner.plan(singles([0, 1, 9, 10]))) == [
        (0, 2),
        (9, 2),
    ]  # 5 not due, still avoided


def test_unmapped_hole_stops_being_filled_after_one_failure() -> None:
    planner = ReadPlanner()
    items = singles([*range(15), *range(16, 31)])

    def refuse_15(request: ReadRequest) -> int | None:
        return 2 if request.address <= 15 < request.end else None

    assert spans(planner.plan(items)) == [(0, 31)]
    sent, failures = run_tick(planner, items, refuse_15)
    assert (sent, failures) == (3, 1)
    assert spans(planner.plan(items)) == [(0, 15), (16, 15)]
    assert planner.learned_limit(1, HOLDING) is None
    assert planner.bad_ranges(1, HOLDING) == []


def test_same_range_properties_fail_together() -> None:
    planner = ReadPlanner()
    request = ReadRequest.covering(
        [ReadItem("a", 1, HOLDING, 4, 2), ReadItem("b", 1, HOLDING, 4, 2)]
    )
    assert planner.record_failure(request, 2) == []
    assert planner.bad_ranges(1, HOLDING) == [(4, 6)]


def test_halves_keep_their_items() -> None:
    items = floats(10)
    halves = ReadPlanner().record_failure(ReadRequest.covering(items), 3)
    assert [len(h.items) for h in halves] == [5, 5]
    assert_covers(ReadPlan(tuple(halves)), items)


@pytest.mark.parametrize("code", [1, 4, 6, 11])
def test_other_exceptions_teach_nothing(code: int) -> None:
    planner = ReadPlanner()
    block = planner.plan(singles(range(10))).requests[0]
    assert planner.record_failure(block, code) == []
    assert planner.learned_limit(1, HOLDING) is None
    assert spans(planner.plan(singles(range(10)))) == [(0, 10)]


def test_forget() -> None:
    planner = ReadPlanner()
    planner.record_failure(ReadRequest.covering(singles([3])), 2)
    planner.record_failure(ReadRequest.covering(singles(range(10, 20))), 3)
    other_unit = ReadRequest.covering([ReadItem("x", 2, HOLDING, 3, 1)])
    planner.record_failure(other_unit, 2)
    planner.forget(1)
    assert (planner.bad_ranges(1, HOLDING), planner.learned_limit(1, HOLDING)) == ([], None)
    assert planner.bad_ranges(2, HOLDING) == [(3, 4)]
    planner.forget()
    assert planner.bad_ranges(2, HOLDING) == []


# -- JSON -------------------------------------------------------------------------------------


def test_plan_json_round_trip() -> None:
    plan = ReadPlanner().plan(floats(100) + singles(range(3), COIL))
    text = json.dumps(plan.to_json())
    assert json.loads(text) == [
        {"unit": 1, "function": 1, "address": 0, "count": 3},
        {"unit": 1, "function": 3, "address": 0, "count": 124},
        {"unit": 1, "function": 3, "address": 124, "count": 76},
    ]
    replay = ReadPlan.from_json(json.loads(text))
    assert [(r.unit, r.table, r.address, r.count) for r in replay.requests] == [
        (r.unit, r.table, r.address, r.count) for r in plan.requests
    ]


# -- writes ------------------------------------------------------------------------------------


def w(
    key: str, offset: int, values: tuple[int, ...], table: Register = HOLDING, unit: int = 1
) -> WriteItem:
    return WriteItem(key, unit, table, offset, values)


def test_contiguous_register_writes_merge_into_fc16() -> None:
    requests = plan_writes([w("a", 10, (1, 2)), w("b", 12, (3,)), w("c", 20, (4,))])
    assert [(r.function, r.address, r.values, r.keys) for r in requests] == [
        (16, 10, (1, 2, 3), ("a", "b")),
        (6, 20, (4,), ("c",)),
    ]


def test_single_coil_and_coil_runs() -> None:
    requests = plan_writes([w("on", 0, (1,), COIL), w("x", 5, (1,), COIL), w("y", 6, (0,), COIL)])
    assert [(r.function, r.address, r.values) for r in requests] == [(5, 0, (1,)), (15, 5, (1, 0))]


def test_always_multiple() -> None:
    requests = plan_writes([w("r", 0, (7,)), w("c", 0, (1,), COIL)], always_multiple=True)
    assert [r.function for r in requests] == [16, 15]


@pytest.mark.parametrize(
    ("table", "n", "counts"), [(HOLDING, 200, [123, 77]), (COIL, 2000, [1968, 32])]
)
def test_write_limits(table: Register, n: int, counts: list[int]) -> None:
    requests = plan_writes([w(str(i), i, (1,), table) for i in range(n)])
    assert [r.count for r in requests] == counts
    assert requests[1].address == counts[0]


def test_overlapping_writes_last_one_wins() -> None:
    requests = plan_writes([w("old", 0, (1, 1)), w("new", 1, (9,))])
    assert [(r.address, r.values, r.keys) for r in requests] == [(0, (1, 9), ("old", "new"))]


def test_writes_separate_units_and_tables() -> None:
    requests = plan_writes([w("a", 0, (1,)), w("b", 1, (2,), unit=2), w("c", 1, (1,), COIL)])
    assert [(r.unit, r.function, r.address) for r in requests] == [(1, 6, 0), (2, 6, 1), (1, 5, 1)]


def test_write_without_merging() -> None:
    requests = plan_writes([w("a", 0, (1,)), w("b", 1, (2, 3))], merge=False)
    assert [(r.function, r.address, r.values) for r in requests] == [(6, 0, (1,)), (16, 1, (2, 3))]


def test_read_only_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="read-only"):
        plan_writes([w("a", 0, (1,), INPUT)])


def test_write_json() -> None:
    requests = plan_writes([w("a", 3, (1, 2))])
    assert json.loads(json.dumps([r.to_json() for r in requests])) == [
        {"unit": 1, "function": 16, "address": 3, "count": 2, "values": [1, 2]}
    ]
