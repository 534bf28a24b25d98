"""Failures against a real server: a dead slave on a shared connection, a server restart, a
link where nobody answers any more, and the shared link's reference counting."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from mapper_modbus.config import ModbusProtocolConfig
from mapper_modbus.connection import Link, LinkPool, inter_frame_gap
from mapper_modbus.driver import ModbusDriver
from mapper_sdk.binding import BoundDevice
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import DeviceConnectError, DeviceTimeoutError, DriverError
from mapper_sdk.testing import FAST_SETTINGS, ref_of, run_devices

from .kit import Case, Catalog, bound_of, device_of, tcp_config
from .sim import Image, Simulator

T = TypeVar("T")
TIMEOUT_MS = 300
TIMEOUT_S = TIMEOUT_MS / 1000
SLACK_S = 0.25  # scheduling noise on a loaded 2-core machine

DEAD, ALIVE = 2, 1


def three_tables() -> list[Case]:
    """Properties in three tables: a read of them is three requests."""
    cat = Catalog()
    cat.add("hr", "INT", "holding", {}, [0], 0)
    cat.add("ir", "INT", "input", {}, [0], 0)
    cat.add("coil", "BOOLEAN", "coils", {}, [False], False)
    return cat.cases


async def timed(awaitable: Awaitable[T]) -> tuple[T | BaseException, float]:
    """The outcome (value or exception) and how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        return await awaitable, loop.time() - start
    except Exception as exc:
        return exc, loop.time() - start


def alive_image() -> Image:
    image = Image()
    image.put_words("holding", 0, [42])
    image.put_words("input", 0, [43])
    image.put_bits("coils", 0, [True])
    return image


@pytest.mark.parametrize("retries", [0, 1])
async def test_a_dead_slave_delays_the_others_by_at_most_one_timeout(retries: int) -> None:
    cases = three_tables()
    async with Simulator({ALIVE: alive_image()}, silent_units=[DEAD]) as sim:

        def bound(unit: int) -> BoundDevice:
            config = tcp_config(sim.port, unit, timeout=TIMEOUT_MS, retries=retries)
            return bound_of(cases, config, name=f"unit-{unit}")

        dead, alive = ModbusDriver(bound(DEAD)), ModbusDriver(bound(ALIVE))
        await dead.connect()
        await alive.connect()
        try:
            assert dead.link is alive.link  # one endpoint: one connection, one scheduler
            assert len(LinkPool.links()) == 1
            points = dead.device.properties
            # The dead unit's three requests are queued first, the live unit's behind them.
            (dead_result, dead_s), (alive_result, alive_s) = await asyncio.gather(
                timed(dead.read(points)), timed(alive.read(alive.device.properties))
            )
            assert alive_result == [42, 43, True]
            assert alive_s <= TIMEOUT_S + SLACK_S  # one timeout, not three (or six)
            assert isinstance(dead_result, DeviceTimeoutError)
            assert dead_s <= (1 + retries) * TIMEOUT_S + SLACK_S
            link = alive.link
            assert link is not None
            assert link.stats.timeouts == 1 + retries
            # Backed off: the dead unit now fails at once and costs its neighbours nothing.
            (dead_result, dead_s), (alive_result, alive_s) = await asyncio.gather(
                timed(dead.read(points)), timed(alive.read(alive.device.properties))
            )
            assert isinstance(dead_result, DeviceTimeoutError)
            assert "stopped answering" in str(dead_result)
            assert dead_s < TIMEOUT_S
            assert alive_result == [42, 43, True]
            assert alive_s < TIMEOUT_S
            assert link.stats.timeouts == 1 + retries
            assert link.connected  # a dead slave does not close the shared connection
        finally:
            await dead.aclose()
            await alive.aclose()
    assert LinkPool.links() == []


async def test_a_dead_slave_does_not_stop_its_neighbours_reports() -> None:
    cat = Catalog()
    cat.add("value", "INT", "holding", {}, [0], 0)
    async with Simulator({ALIVE: alive_image()}, silent_units=[DEAD]) as sim:
        devices = [
            device_of(cat.cases, tcp_config(sim.port, unit, timeout=TIMEOUT_MS), name=f"u{unit}")
            for unit in (ALIVE, DEAD)
        ]
        alive_ref, dead_ref = (ref_of(device) for device, _ in devices)
        async with run_devices(devices, drivers=[ModbusDriver]) as (runtime, bus):
            await bus.wait_for(lambda: bus.latest(alive_ref, "value") == "42")
            await bus.wait_for(lambda: bus.state_of(dead_ref) is not DeviceState.ONLINE)
            for value in (7, 8, 9):
                await sim.set_words(ALIVE, "holding", 0, [value])
                await bus.wait_for(lambda v=value: bus.latest(alive_ref, "value") == str(v))
            assert bus.latest(dead_ref, "value") is None
            supervisor = runtime.supervisor(alive_ref)
            assert supervisor is not None
            assert supervisor.state is DeviceState.ONLINE
            assert supervisor.stats.last_read_ms <= (TIMEOUT_S + SLACK_S) * 1000


async def test_server_restart_reconnects_within_the_backoff_bound() -> None:
    cat = Catalog()
    cat.add("value", "INT", "holding", {}, [0], 0)
    image = Image()
    image.put_words("holding", 0, [1])
    async with Simulator({1: image}) as sim:
        device, model = device_of(cat.cases, tcp_config(sim.port, timeout=TIMEOUT_MS))
        ref = ref_of(device)
        async with run_devices([(device, model)], drivers=[ModbusDriver]) as (_, bus):
            await bus.wait_for(lambda: bus.latest(ref, "value") == "1")
            await sim.stop()
            await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.OFFLINE)
            await sim.restart()
            await sim.set_words(1, "holding", 0, [2])
            loop = asyncio.get_running_loop()
            restarted = loop.time()
            await bus.wait_for(lambda: bus.latest(ref, "value") == "2")
            recovered_s = loop.time() - restarted
            assert bus.state_of(ref) is DeviceState.ONLINE
    # Backoff is capped at backoff_cap; then a connect and the next 100 ms tick.
    assert recovered_s <= FAST_SETTINGS.backoff_cap + 0.1 + TIMEOUT_S + 1.0


async def test_a_link_where_nobody_answers_is_closed_and_reopened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Link, "DEAD_AFTER", 2)
    cases = three_tables()
    async with Simulator({ALIVE: alive_image()}, silent_units=[DEAD]) as sim:
        config = tcp_config(sim.port, DEAD, timeout=TIMEOUT_MS, retries=1)
        driver = ModbusDriver(bound_of(cases, config))
        await driver.connect()
        try:
            # Every unit on the link is silent: after two timeouts in a row it is presumed dead
            # (a half-open TCP connection looks the same), and the read says so.
            with pytest.raises(DeviceConnectError, match="in a row got no answer"):
                await driver.read(driver.device.properties)
            assert await driver.state() is DeviceState.OFFLINE
        finally:
            await driver.aclose()
        assert LinkPool.links() == []
        driver = ModbusDriver(bound_of(cases, {**config, "slaveID": ALIVE}))
        await driver.connect()  # a fresh link
        try:
            assert await driver.read(driver.device.properties) == [42, 43, True]
        finally:
            await driver.aclose()


async def test_the_shared_link_lives_until_its_last_device_leaves() -> None:
    cases = three_tables()
    async with Simulator({1: alive_image(), 2: alive_image()}) as sim:
        drivers = [ModbusDriver(bound_of(cases, tcp_config(sim.port, u))) for u in (1, 2)]
        for driver in drivers:
            await driver.connect()
        (link,) = LinkPool.links()
        assert link.refs == 2
        await drivers[0].aclose()
        await drivers[0].aclose()  # twice is harmless
        assert LinkPool.links() == [link]
        assert link.connected
        assert await drivers[1].read(drivers[1].device.properties) == [42, 43, True]
        await drivers[1].aclose()
        assert LinkPool.links() == []
        assert not link.connected
        with pytest.raises(DeviceConnectError):
            await drivers[1].read(drivers[1].device.properties)


async def test_connect_to_a_closed_port_fails_in_time() -> None:
    async with Simulator({1: Image()}) as sim:
        port = sim.port
    driver = ModbusDriver(bound_of(three_tables(), tcp_config(port, timeout=TIMEOUT_MS)))
    outcome, took = await timed(driver.connect())
    assert isinstance(outcome, DeviceConnectError)
    assert took < TIMEOUT_S + SLACK_S
    assert LinkPool.links() == []


async def test_a_write_jumps_ahead_of_queued_polls() -> None:
    cat = Catalog()
    for n in range(20):  # twenty blocks: maxGap 0 and one register apart
        cat.add(f"r{n}", "INT", "holding", {}, [0], 0, offset=2 * n)
    async with Simulator({1: Image()}) as sim:
        bound = bound_of(cat.cases, tcp_config(sim.port, maxGap=0))
        driver = ModbusDriver(bound)
        await driver.connect()
        try:
            reading = asyncio.create_task(driver.read(bound.properties))
            await asyncio.sleep(0)  # let the read queue its twenty requests
            await driver.write(bound.properties[0], 5)
            results: Any = await reading
        finally:
            await driver.aclose()
    functions = [s.function for s in sim.requests]
    assert functions.index(6) <= 1  # behind at most the poll already on the wire
    assert len(functions) == 21
    assert all(not isinstance(r, DriverError) for r in results)


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_max_in_flight_bounds_the_requests_outstanding(in_flight: int) -> None:
    active = peak = 0
    together = asyncio.Event()

    async def slow(*_: object) -> None:
        # Holds each request until a second one arrives (or 0.2 s): the peak is the bound.
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active > 1:
            together.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await together.wait()
        active -= 1

    cases = three_tables()
    async with Simulator({1: alive_image()}, actions={1: slow}) as sim:
        driver = ModbusDriver(bound_of(cases, tcp_config(sim.port, maxInFlight=in_flight)))
        await driver.connect()
        try:
            assert await driver.read(driver.device.properties) == [42, 43, True]
        finally:
            await driver.aclose()
    assert peak == in_flight


async def test_serial_frames_are_separated_by_the_inter_frame_delay(
    serial_pair: tuple[str, str],
) -> None:
    server_tty, client_tty = serial_pair
    async with Simulator({1: alive_image()}, kind="rtu", serial_port=server_tty) as sim:
        config = {"communicateMode": "RTU", "serialName": client_tty, "baudRate": 115200,
                  "interFrameDelay": 50}  # fmt: skip
        driver = ModbusDriver(bound_of(three_tables(), config))
        await driver.connect()
        try:
            assert await driver.read(driver.device.properties) == [42, 43, True]
        finally:
            await driver.aclose()
    arrivals = [s.at for s in sim.requests]
    assert len(arrivals) == 3
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(arrivals))


def test_the_default_inter_frame_gap_is_three_and_a_half_characters() -> None:
    def gap(**config: Any) -> float:
        return inter_frame_gap(ModbusProtocolConfig.model_validate(config))

    serial = {"communicateMode": "RTU", "serialName": "/dev/ttyS0"}
    assert gap(**serial, baudRate=9600) == pytest.approx(3.5 * 11 / 9600)
    assert gap(**serial, baudRate=115200) == 0.00175
    assert gap(**serial, interFrameDelay=20) == 0.02
    assert gap(ip="10.0.0.1") == 0.0
