"""Requests counted at a real server: what the driver sends per cycle is the planner's plan,
exception 02/03 fallback keeps what it learned, change detection skips decoding."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from pymodbus.constants import ExcCodes

from mapper_modbus import reader
from mapper_modbus.codec import BlockDecoder
from mapper_modbus.connection import ModbusExceptionError
from mapper_modbus.driver import ModbusDriver
from mapper_modbus.planner import ReadItem, ReadPlanner
from mapper_modbus.tables import Register
from mapper_sdk.binding import BoundDevice
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import DeviceProtocolError

from .kit import TABLES, Case, Catalog, bound_of, every_type, image_of, tcp_config
from .sim import Image, Simulator, wire_words


@asynccontextmanager
async def connected(bound: BoundDevice) -> AsyncIterator[ModbusDriver]:
    driver = ModbusDriver(bound)
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.aclose()


def planned(cases: Sequence[Case], **planner_options: int) -> list[tuple[int, int, int]]:
    """The planner's requests for ``cases``, as (function, address, count)."""
    items = [
        ReadItem(c.name, 1, Register(TABLES[c.table]), c.offset, len(c.content),
                 c.visitor.get("maxBlock"))
        for c in cases
    ]  # fmt: skip
    plan = ReadPlanner(**planner_options).plan(items)
    return [(r.function, r.address, r.count) for r in plan.requests]


def uint16s(offsets: Sequence[int], **visitor: int) -> list[Case]:
    cat = Catalog()
    for n in offsets:
        cat.add(f"r{n}", "INT", "holding", {"valueType": "uint16", **visitor}, [1000 + n], 1000 + n,
                offset=n)  # fmt: skip
    return cat.cases


async def test_every_cycle_sends_exactly_the_plan() -> None:
    cases = every_type()
    expected = planned(cases)
    assert len(expected) == 4  # one per table for 53 properties: the peers send 53
    async with Simulator({1: image_of(cases)}) as sim:
        bound = bound_of(cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            for _ in range(3):
                results = await driver.read(bound.properties)
                assert [s.key for s in sim.take()] == expected
                assert results == [c.expected for c in cases]
            # A subset due in a tick gets its own plan.
            due = [p for p in bound.properties if p.name.startswith(("int32", "relay"))]
            await driver.read(due)
            subset = [c for c in cases if c.name.startswith(("int32", "relay"))]
            assert [s.key for s in sim.take()] == planned(subset)


@pytest.mark.parametrize(("options", "visitor"), [({"maxGap": 0}, {}), ({}, {"maxBlock": 3})])
async def test_gap_and_block_limits_shape_the_requests(
    options: dict[str, int], visitor: dict[str, int]
) -> None:
    cases = uint16s([0, 1, 2, 3, 4, 6, 7, 20, 21], **visitor)
    expected = planned(cases, max_gap=options.get("maxGap", 10))
    assert len(expected) > 2
    async with Simulator({1: image_of(cases)}) as sim:
        bound = bound_of(cases, tcp_config(sim.port, **options))
        async with connected(bound) as driver:
            assert await driver.read(bound.properties) == [c.expected for c in cases]
    assert [s.key for s in sim.requests] == expected


async def test_a_refused_register_fails_alone_and_the_rest_stays_merged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = uint16s(range(13))
    image = image_of(cases)
    image.invalid.add(("holding", 7))  # the device answers exception 02 for any read of it
    async with Simulator({1: image}) as sim:
        bound = bound_of(cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            results = await driver.read(bound.properties)  # merged, refused, split, retried
            assert isinstance(results[7], ModbusExceptionError)
            assert results[7].code == 2
            assert "even when read alone" in str(results[7])
            assert results[:7] + results[8:] == [c.expected for c in cases[:7] + cases[8:]]
            assert driver._reader is not None
            assert driver._reader.planner.bad_ranges(1, Register.HOLDING) == [(7, 8)]
            sim.take()
            # Next ticks: the good properties merge around the bad one, which is not re-sent.
            for _ in range(2):
                again = await driver.read(bound.properties)
                assert [s.key for s in sim.take()] == [(3, 0, 7), (3, 8, 5)]
                assert again[:7] == results[:7]
                assert isinstance(again[7], ModbusExceptionError)
            monkeypatch.setattr(reader, "RECHECK_REFUSED_S", 0.0)
            await driver.read(bound.properties)  # a refused-error that expired is re-tried
            await driver.read(bound.properties)
            assert (3, 7, 1) in [s.key for s in sim.take()]


async def test_a_device_refusing_big_blocks_teaches_a_limit_that_is_kept() -> None:
    async def small_reads_only(
        fc: int, _start: int, _addr: int, count: int, *_: object
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_VALUE if fc == 3 and count > 8 else None

    cases = uint16s(range(20))
    async with Simulator({1: image_of(cases)}, actions={1: small_reads_only}) as sim:
        bound = bound_of(cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            assert await driver.read(bound.properties) == [c.expected for c in cases]
            assert sim.exceptions == [3, 3, 3]  # 0..19, then both halves of 10
            assert driver._reader is not None
            limit = driver._reader.planner.learned_limit(1, Register.HOLDING)
            assert limit is not None
            assert limit <= 8
            sim.take()
            for _ in range(3):
                assert await driver.read(bound.properties) == [c.expected for c in cases]
                seen = sim.take()
                assert len(seen) == -(-20 // limit)
                assert all(s.count <= limit for s in seen)
            assert sim.exceptions == [3, 3, 3]  # nothing refused after learning


async def test_busy_and_device_failure_fail_the_block_for_this_tick_only() -> None:
    answers = [ExcCodes.DEVICE_BUSY, ExcCodes.DEVICE_FAILURE]

    async def flaky(fc: int, *_: object) -> ExcCodes | None:
        return answers.pop(0) if fc == 3 and answers else None

    cases = uint16s(range(4))
    async with Simulator({1: image_of(cases)}, actions={1: flaky}) as sim:
        bound = bound_of(cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            for code in (6, 4):
                results = await driver.read(bound.properties)
                assert all(isinstance(r, ModbusExceptionError) and r.code == code for r in results)
                assert all(isinstance(r, DeviceProtocolError) for r in results)
            assert await driver.read(bound.properties) == [c.expected for c in cases]
            assert driver._reader is not None
            assert driver._reader.planner.learned_limit(1, Register.HOLDING) is None


async def test_unchanged_bytes_are_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    original = BlockDecoder.decode

    def counting(self: BlockDecoder, data: bytes) -> list[object]:
        decoded.append(len(data))
        return original(self, data)  # type: ignore[return-value]

    monkeypatch.setattr(BlockDecoder, "decode", counting)
    cases = every_type()
    async with Simulator({1: image_of(cases)}) as sim:
        bound = bound_of(cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            first = await driver.read(bound.properties)
            assert len(decoded) == 4  # one decode per block
            assert await driver.read(bound.properties) == first
            assert len(decoded) == 4  # same bytes: nothing decoded
            target = next(c for c in cases if c.name == "float32-cdab-input")
            await sim.set_words(1, "input", target.offset, [0, 0])
            after = await driver.read(bound.properties)
            assert len(decoded) == 5  # only the input register block changed
            index = cases.index(target)
            assert after[index] == 0.0
            assert after[:index] + after[index + 1 :] == first[:index] + first[index + 1 :]


async def test_a_one_block_read_decodes_only_changed_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one-block fast path keeps the raw-bytes check, and hands out its own list."""
    decoded: list[bytes] = []
    original = BlockDecoder.decode

    def counting(self: BlockDecoder, data: bytes) -> list[object]:
        decoded.append(data)
        return original(self, data)  # type: ignore[return-value]

    monkeypatch.setattr(BlockDecoder, "decode", counting)
    cat = Catalog()
    for n in range(3):
        cat.add(f"f{n}", "FLOAT", "holding", {"valueType": "float32"},
                wire_words("float32", n + 0.5), n + 0.5)  # fmt: skip
    async with Simulator({1: image_of(cat.cases)}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            first = await driver.read(bound.properties)
            assert first == [0.5, 1.5, 2.5]
            assert len(sim.take()) == 1  # one block
            first.append("mine")  # a caller's list is its own
            assert await driver.read(bound.properties) == [0.5, 1.5, 2.5]
            assert len(decoded) == 1
            await sim.set_words(1, "holding", 2, wire_words("float32", -4.0))
            assert await driver.read(bound.properties) == [0.5, -4.0, 2.5]
            assert len(decoded) == 2
            assert decoded[1][4:8] == struct.pack(">f", -4.0)


async def test_state_is_unhealthy_after_requests_keep_failing() -> None:
    async def busy(*_: object) -> ExcCodes:
        return ExcCodes.DEVICE_BUSY

    cases = uint16s([0])
    async with Simulator({1: Image(), 2: Image()}, actions={2: busy}) as sim:
        bound = bound_of(cases, tcp_config(sim.port, unit=2))
        async with connected(bound) as driver:
            assert await driver.state() is DeviceState.ONLINE
            for _ in range(ModbusDriver.HEALTH_WINDOW):
                await driver.read(bound.properties)
            assert await driver.state() is DeviceState.UNHEALTHY
        assert await driver.state() is DeviceState.OFFLINE
