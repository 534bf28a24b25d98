"""Every transport against a real pymodbus server: RTU and ASCII over a pty pair, RTU over TCP,
UDP and TLS. Each reads every type and writes one register; serial buses are shared."""

from __future__ import annotations

from typing import Any

import pytest

from mapper_modbus.connection import LinkPool
from mapper_modbus.driver import ModbusDriver
from mapper_sdk.errors import DeviceConnectError
from mapper_sdk.testing import ref_of, run_devices

from .conftest import TlsMaterial
from .kit import Catalog, bound_of, device_of, every_type, image_of
from .sim import HOST, Image, Simulator


async def exercise(sim: Simulator, config: dict[str, Any]) -> None:
    """Read every case and write a float through a driver on ``config``."""
    cases = every_type()
    bound = bound_of(cases, config)
    driver = ModbusDriver(bound)
    await driver.connect()
    try:
        assert await driver.read(bound.properties) == [c.expected for c in cases]
        assert len(sim.take()) == 4  # the same plan on every transport
        point = bound.property("float32-cdab-holding")
        assert point is not None
        await driver.write(point, 1.5)
        assert [s.function for s in sim.take()] == [16]
        assert (await driver.read([point]))[0] == 1.5
    finally:
        await driver.aclose()
    assert LinkPool.links() == []


@pytest.mark.parametrize("mode", ["RTU", "ASCII"])
async def test_serial_line(serial_pair: tuple[str, str], mode: str) -> None:
    server_tty, client_tty = serial_pair
    sim = Simulator({1: image_of(every_type())}, kind=mode.lower(), serial_port=server_tty)
    async with sim:
        config = {"communicateMode": mode, "serialName": client_tty, "baudRate": 115200,
                  "parity": "none", "slaveID": 1, "timeout": 2000}  # fmt: skip
        await exercise(sim, config)


async def test_rtu_over_tcp() -> None:
    async with Simulator({1: image_of(every_type())}, kind="rtu-over-tcp") as sim:
        config = {"communicateMode": "RTUoverTCP", "ip": HOST, "port": sim.port, "slaveID": 1}
        await exercise(sim, config)


async def test_udp() -> None:
    async with Simulator({1: image_of(every_type())}, kind="udp") as sim:
        await exercise(sim, {"communicateMode": "UDP", "ip": HOST, "port": sim.port})


async def test_tls_with_client_certificate(tls_material: TlsMaterial) -> None:
    sslctx = tls_material.server_context()
    async with Simulator({1: image_of(every_type())}, kind="tls", sslctx=sslctx) as sim:
        config = {
            "communicateMode": "TLS",
            "ip": HOST,
            "port": str(sim.port),
            "caFile": str(tls_material.ca),
            "certFile": str(tls_material.client_cert),
            "keyFile": str(tls_material.client_key),
        }
        await exercise(sim, config)
        # A server certificate from an unknown CA is refused at connect.
        untrusted = {**config, "caFile": str(tls_material.client_cert)}
        driver = ModbusDriver(bound_of(every_type(), untrusted))
        with pytest.raises(DeviceConnectError):
            await driver.connect()
        missing = {**config, "keyFile": "/nonexistent/client.key"}
        with pytest.raises(DeviceConnectError, match=r"nonexistent|No such file"):
            await ModbusDriver(bound_of(every_type(), missing)).connect()
    assert LinkPool.links() == []


async def test_two_slaves_share_one_serial_bus(serial_pair: tuple[str, str]) -> None:
    server_tty, client_tty = serial_pair
    images = {}
    for unit in (1, 2):
        images[unit] = Image()
        images[unit].put_words("holding", 0, [unit * 111])
    cat = Catalog()
    cat.add("value", "INT", "holding", {}, [0], 0)
    async with Simulator(images, kind="rtu", serial_port=server_tty) as sim:
        devices = []
        for unit in (1, 2):
            config = {"communicateMode": "RTU", "serialName": client_tty, "baudRate": 115200,
                      "slaveID": unit, "timeout": 2000}  # fmt: skip
            devices.append(device_of(cat.cases, config, name=f"slave-{unit}"))
        refs = [ref_of(device) for device, _ in devices]
        async with run_devices(devices, drivers=[ModbusDriver]) as (_, bus):
            await bus.wait_for(lambda: bus.latest(refs[0], "value") == "111")
            await bus.wait_for(lambda: bus.latest(refs[1], "value") == "222")
            assert len(LinkPool.links()) == 1  # one port, opened once, one scheduler
        units = {s.unit for s in sim.requests}
        assert units == {1, 2}


async def test_a_serial_port_cannot_be_shared_with_other_settings(
    serial_pair: tuple[str, str],
) -> None:
    _, client_tty = serial_pair
    cat = Catalog()
    cat.add("value", "INT", "holding", {}, [0], 0)
    base = {"communicateMode": "RTU", "serialName": client_tty, "slaveID": 1}
    first = ModbusDriver(bound_of(cat.cases, {**base, "baudRate": 9600}))
    await first.connect()
    try:
        other = ModbusDriver(bound_of(cat.cases, {**base, "baudRate": 19200, "slaveID": 2}))
        with pytest.raises(DeviceConnectError, match="other settings"):
            await other.connect()
    finally:
        await first.aclose()
