"""The lean Modbus/TCP path end to end against a peer the test drives by hand (``RawPeer``):
exception answers, timeouts, late and foreign transaction ids, split answers, a peer that
closes or speaks garbage, and deadlines kept by one timer per link."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mapper_modbus.channel import Op
from mapper_modbus.connection import LinkPool, ModbusExceptionError
from mapper_modbus.driver import ModbusDriver
from mapper_modbus.tcp import TcpChannel
from mapper_sdk.errors import (
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    DriverError,
)

from .kit import Catalog, bound_of, tcp_config
from .rawpeer import RawPeer, adu

TIMEOUT_MS = 300
TIMEOUT_S = TIMEOUT_MS / 1000
SLACK_S = 0.25  # scheduling noise on a loaded 2-core machine


def two_registers() -> Catalog:
    cat = Catalog()
    cat.add("a", "INT", "holding", {}, [0], 0)
    cat.add("b", "INT", "holding", {}, [0], 0)
    return cat


@asynccontextmanager
async def driver_on(peer: RawPeer, **config: Any) -> AsyncIterator[ModbusDriver]:
    extra = {"timeout": TIMEOUT_MS, "retries": 0, **config}
    driver = ModbusDriver(bound_of(two_registers().cases, tcp_config(peer.port, **extra)))
    await driver.connect()
    try:
        yield driver
    finally:
        await driver.aclose()
    assert LinkPool.links() == []


def channels(driver: ModbusDriver) -> list[TcpChannel]:
    assert driver.link is not None
    found = [c for c in driver.link._channels if isinstance(c, TcpChannel)]
    assert found, "TCP links use the lean channel"
    return found


async def test_a_read_is_one_request_and_its_answer() -> None:
    async with RawPeer() as peer, driver_on(peer) as driver:
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        assert (request.unit, request.function, request.address, request.count) == (1, 3, 0, 2)
        request.answer_registers([11, 0xFFFF])
        assert await reading == [11, 0xFFFF]


async def test_an_answer_in_single_bytes_is_read_whole() -> None:
    async with RawPeer() as peer, driver_on(peer) as driver:
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        frame = adu(request.tid, 1, struct.pack(">BB2H", 3, 4, 5, 6))
        for n in range(len(frame)):
            request.send(frame[n : n + 1])
            await request.writer.drain()
        assert await reading == [5, 6]


async def test_an_exception_answer_fails_the_read_and_keeps_the_link() -> None:
    async with RawPeer() as peer, driver_on(peer) as driver:
        reading = asyncio.create_task(driver.read(driver.device.properties[:1]))
        request = await peer.next()
        request.send(adu(request.tid, 1, bytes([0x83, 0x04])))
        (result,) = await reading
        assert isinstance(result, ModbusExceptionError)
        assert result.code == 4
        assert "server device failure" in str(result)
        assert driver.link is not None
        assert driver.link.connected
        assert driver.link.stats.exceptions == 1


async def test_an_answer_with_another_transaction_id_is_not_taken() -> None:
    """A foreign id is dropped; the request keeps waiting for its own answer (or times out)."""
    async with RawPeer() as peer, driver_on(peer) as driver:
        loop = asyncio.get_running_loop()
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        request.answer_registers([1, 1], tid=request.tid + 100)
        request.answer_registers([2, 2])
        assert await reading == [2, 2]
        assert channels(driver)[0].stale == 1
        # Only a foreign answer: the read times out, the link stays up for the next one.
        started = loop.time()
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        request.answer_registers([3, 3], tid=request.tid ^ 0x5555)
        with pytest.raises(DeviceTimeoutError):
            await reading
        assert TIMEOUT_S - 0.01 <= loop.time() - started <= TIMEOUT_S + SLACK_S
        assert driver.link is not None
        assert driver.link.connected


async def test_a_late_answer_never_answers_the_retry() -> None:
    async with RawPeer() as peer, driver_on(peer, retries=1) as driver:
        reading = asyncio.create_task(driver.read(driver.device.properties))
        late = await peer.next()
        retry = await peer.next()  # sent once the first attempt's deadline passed
        assert (retry.tid, retry.address) == (late.tid + 1, late.address)
        late.answer_registers([9, 9])  # the first attempt's answer, after its deadline
        retry.answer_registers([4, 5])
        assert await reading == [4, 5]
        assert channels(driver)[0].stale == 1
        assert driver.link is not None
        assert driver.link.stats.timeouts == 1


async def test_requests_in_flight_together_each_time_out_on_time() -> None:
    async with RawPeer() as peer, driver_on(peer, maxInFlight=2, maxGap=0) as driver:
        loop = asyncio.get_running_loop()
        cat = Catalog()
        cat.add("x", "INT", "holding", {}, [0], 0)
        cat.add("y", "INT", "holding", {}, [0], 0, offset=50)
        bound = bound_of(cat.cases, tcp_config(peer.port, timeout=TIMEOUT_MS, retries=0,
                                               maxInFlight=2, maxGap=0))  # fmt: skip
        other = ModbusDriver(bound)
        await other.connect()
        try:
            assert other.link is not None
            assert other.link is driver.link
            started = loop.time()
            reading = asyncio.create_task(other.read(bound.properties))  # two requests
            held = [await peer.next(), await peer.next()]  # both in flight at once
            assert {r.address for r in held} == {0, 50}
            with pytest.raises(DeviceTimeoutError):
                await reading
            took = loop.time() - started
            assert TIMEOUT_S - 0.01 <= took <= TIMEOUT_S + SLACK_S
            assert other.link.stats.timeouts == 2
            assert peer.connections == 2
        finally:
            await other.aclose()


async def test_answered_requests_arm_no_timer_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") == "_expire":
            armed.append(when)
        return call_at(when, callback, *args, **kw)

    monkeypatch.setattr(loop, "call_at", counting)
    async with RawPeer() as peer, driver_on(peer, timeout=5000) as driver:
        for n in range(50):
            reading = asyncio.create_task(driver.read(driver.device.properties))
            (await peer.next()).answer_registers([n, n])
            assert await reading == [n, n]
    assert len(armed) == 1  # one deadline timer for the link, armed by the first request


async def test_a_peer_that_closes_fails_the_request_at_once() -> None:
    async with RawPeer() as peer, driver_on(peer, timeout=5000) as driver:
        loop = asyncio.get_running_loop()
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        started = loop.time()
        request.writer.close()
        with pytest.raises(DeviceConnectError, match="closed by the device"):
            await reading
        assert loop.time() - started < 1.0  # not the 5 s timeout
        assert driver.link is not None
        assert not driver.link.connected


async def test_garbage_on_the_wire_closes_the_link() -> None:
    async with RawPeer() as peer, driver_on(peer, timeout=5000) as driver:
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        request.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        with pytest.raises(DeviceConnectError, match="not a Modbus/TCP frame"):
            await reading
        assert driver.link is not None
        assert not driver.link.connected


async def test_an_answer_from_another_unit_is_a_protocol_error() -> None:
    async with RawPeer() as peer, driver_on(peer) as driver:
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()
        request.send(adu(request.tid, 9, struct.pack(">BB2H", 3, 4, 5, 6)))
        results = await reading
        assert all(isinstance(r, DeviceProtocolError) for r in results)
        assert "unit 9 answered" in str(results[0])


async def test_writes_are_answered_by_their_echo() -> None:
    async with RawPeer() as peer, driver_on(peer) as driver:
        a, b = driver.device.properties
        writing = asyncio.create_task(driver.write_many([(a, 1), (b, 2)]))
        request = await peer.next()
        assert (request.function, request.address, request.count) == (16, 0, 2)
        request.send(adu(request.tid, 1, struct.pack(">BHH", 16, 0, 2)))
        await writing
        writing = asyncio.create_task(driver.write(b, 3))
        request = await peer.next()
        assert (request.function, request.address) == (6, 1)
        request.send(adu(request.tid, 1, struct.pack(">BHH", 6, 7, 3)))  # echo of another
        with pytest.raises(DeviceProtocolError, match="address 7"):
            await writing


async def test_a_request_modbus_cannot_carry_fails_alone() -> None:
    async with RawPeer() as peer, driver_on(peer) as driver:
        link = driver.link
        assert link is not None
        with pytest.raises(DriverError, match=r"request not sent: FC3 reads 1\.\.125"):
            await link.request(Op(3, 1, 0, 200), timeout=TIMEOUT_S)
        reading = asyncio.create_task(driver.read(driver.device.properties))
        request = await peer.next()  # the connection is free for the next request
        request.answer_registers([1, 2])
        assert await reading == [1, 2]
        assert peer.pending() == 0  # nothing of the refused request reached the wire
