"""Writes to a real server: every type lands in the right registers with the right function
code, contiguous writes merge, read-only tables are refused, read-back verification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mapper_modbus.driver import ModbusDriver, WriteRefused
from mapper_sdk.binding import BoundDevice
from mapper_sdk.bus import WriteStatus
from mapper_sdk.errors import DeviceProtocolError
from mapper_sdk.testing import ref_of, run_devices

from .kit import Case, Catalog, bound_of, device_of, every_type, tcp_config
from .sim import Image, Simulator


@asynccontextmanager
async def connected(bound: BoundDevice) -> AsyncIterator[ModbusDriver]:
    driver = ModbusDriver(bound)
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.aclose()


def functions_for(case: Case) -> list[int]:
    """The requests a write of ``case`` must send: FC5/15 for coils, FC6/16 for registers, and
    a read first when one bit of a register changes."""
    if case.table == "coils":
        return [5] if len(case.content) == 1 else [15]
    if "bit" in case.visitor:
        return [3, 6]
    return [6] if len(case.content) == 1 else [16]


async def content_of(sim: Simulator, case: Case) -> list[Any]:
    if case.table == "coils":
        return await sim.bits(1, "coils", case.offset, len(case.content))
    return await sim.words(1, case.table, case.offset, len(case.content))


WRITABLE = [c for c in every_type() if c.writable and c.lossless]


async def test_every_type_lands_in_the_right_registers() -> None:
    assert {functions_for(c)[-1] for c in WRITABLE} == {5, 6, 15, 16}
    async with Simulator({1: Image()}) as sim:  # all zero: every register must be written
        bound = bound_of(WRITABLE, tcp_config(sim.port))
        async with connected(bound) as driver:
            for case, point in zip(WRITABLE, bound.properties, strict=True):
                await driver.write(point, case.expected)
                seen = sim.take()
                assert [s.function for s in seen] == functions_for(case), case.name
                assert (seen[-1].address, seen[-1].count) == (case.offset, len(case.content))
            for case in WRITABLE:
                assert await content_of(sim, case) == case.content, case.name
            # and they read back as written
            assert await driver.read(bound.properties) == [c.expected for c in WRITABLE]


async def test_setting_one_bit_keeps_the_others() -> None:
    cat = Catalog()
    cat.add("bit3", "BOOLEAN", "holding", {"bit": 3}, [0], True, offset=10)
    image = Image()
    image.put_words("holding", 10, [0b1010_0000_0000_0001])
    async with Simulator({1: image}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            await driver.write(bound.properties[0], True)
            assert await sim.words(1, "holding", 10, 1) == [0b1010_0000_0000_1001]
            await driver.write(bound.properties[0], False)
            assert await sim.words(1, "holding", 10, 1) == [0b1010_0000_0000_0001]


async def test_contiguous_writes_merge_into_one_request_per_table() -> None:
    cat = Catalog()
    for n in range(3):
        cat.add(f"r{n}", "INT", "holding", {"valueType": "uint16"}, [100 + n], 100 + n)
        cat.add(f"c{n}", "BOOLEAN", "coils", {}, [n != 1], n != 1)
    cat.add("f", "FLOAT", "holding", {"valueType": "float32", "byteOrder": "CDAB"}, [0, 0], 1.5)
    async with Simulator({1: Image()}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            writes = [(p, c.expected) for p, c in zip(bound.properties, cat.cases, strict=True)]
            await driver.write_many(writes)
            seen = sorted(sim.take(), key=lambda s: s.function)
            assert [(s.function, s.address, s.count) for s in seen] == [(15, 0, 3), (16, 0, 5)]
            assert await sim.words(1, "holding", 0, 3) == [100, 101, 102]
            assert await sim.bits(1, "coils", 0, 3) == [True, False, True]


async def test_always_multiple_write_uses_fc16_and_fc15_for_single_items() -> None:
    cat = Catalog()
    cat.add("r", "INT", "holding", {}, [7], 7)
    cat.add("c", "BOOLEAN", "coils", {}, [True], True)
    async with Simulator({1: Image()}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port, alwaysMultipleWrite=True))
        async with connected(bound) as driver:
            for point, case in zip(bound.properties, cat.cases, strict=True):
                await driver.write(point, case.expected)
    assert [s.function for s in sim.requests] == [16, 15]


@pytest.mark.parametrize("table", ["input", "discrete"])
async def test_read_only_tables_are_refused_without_a_request(table: str) -> None:
    cat = Catalog()
    cat.add("ro", "INT", table, {}, [1], 1)
    async with Simulator({1: Image()}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            with pytest.raises(WriteRefused, match="cannot write") as refused:
                await driver.write(bound.properties[0], 1)
            assert refused.value.reason == "read_only"
    assert sim.requests == []


async def test_a_value_that_does_not_fit_is_refused() -> None:
    cat = Catalog()
    cat.add("small", "INT", "holding", {"valueType": "uint16"}, [0], 0)
    async with Simulator({1: Image()}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port))
        async with connected(bound) as driver:
            with pytest.raises(WriteRefused) as refused:
                await driver.write(bound.properties[0], 70000)
            assert refused.value.reason == "out_of_range"
    assert sim.requests == []


async def test_verify_writes_reads_back_and_catches_a_device_that_ignores_writes() -> None:
    ignore = False

    async def maybe_ignore(fc: int, _s: int, _a: int, _c: int, _r: object, values: Any) -> None:
        if ignore and values:
            values[:] = [0] * len(values)  # the device acknowledges but keeps zeros

    cat = Catalog()
    cat.add("setpoint", "INT", "holding", {"valueType": "int32"}, [0, 0], 0)
    async with Simulator({1: Image()}, actions={1: maybe_ignore}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port, verifyWrites=True))
        async with connected(bound) as driver:
            await driver.write(bound.properties[0], 123456)
            assert [s.key for s in sim.take()] == [(16, 0, 2), (3, 0, 2)]
            ignore = True
            with pytest.raises(DeviceProtocolError, match="did not keep a write"):
                await driver.write(bound.properties[0], 654321)


async def test_desired_values_through_the_runtime() -> None:
    cases = [c for c in WRITABLE if c.name in ("float32-cdab-holding", "label", "mode-bits")]
    ro = Catalog()
    ro.add("door", "BOOLEAN", "discrete", {}, [False], False)
    async with Simulator({1: Image()}) as sim:
        device, model = device_of([*cases, *ro.cases], tcp_config(sim.port))
        ref = ref_of(device)
        async with run_devices([(device, model)], drivers=[ModbusDriver]) as (_, bus):
            await bus.wait_for(lambda: bus.latest(ref, "mode-bits") == "0")
            for case in cases:
                result = await bus.send_desired(ref, case.name, case.twin)
                assert result.status is WriteStatus.APPLIED, result
                assert await content_of(sim, case) == case.content
                await bus.wait_for(lambda c=case: bus.latest(ref, c.name) == c.twin)
            refused = await bus.send_desired(ref, "door", "true")
            assert refused.status is WriteStatus.FAILED
            assert "DiscreteInputRegister" in refused.message
