"""Writes typed by the node's DataType, and OPC-UA method calls."""

from __future__ import annotations

from typing import Any

import pytest
from asyncua import ua
from mapper_opcua.driver import OpcUaDriver

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import WriteStatus
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import DriverError
from mapper_sdk.models import Device
from mapper_sdk.runtime import MapperRuntime
from mapper_sdk.testing import ref_of, run_devices

from .device import DeviceServer
from .kit import bound, every_variable, opcua_device

pytestmark = pytest.mark.asyncio(loop_scope="module")

# property -> (desired text, value the server must hold, its built-in type)
WRITES: dict[str, tuple[str, Any, ua.VariantType]] = {
    "flag": ("false", False, ua.VariantType.Boolean),
    "small": ("-77", -77, ua.VariantType.Int16),
    "word": ("12345", 12345, ua.VariantType.UInt16),
    "count32": ("-99999", -99999, ua.VariantType.Int32),
    "big": (str(2**50), 2**50, ua.VariantType.Int64),
    "ratio": ("0.25", 0.25, ua.VariantType.Float),
    "level": ("-1.125", -1.125, ua.VariantType.Double),
    "label": ("world", "world", ua.VariantType.String),
    "series": ("7,8,9,10", [7, 8, 9, 10], ua.VariantType.Int32),
}


async def test_every_type_is_written_as_the_nodes_data_type(device: DeviceServer) -> None:
    dev, model = every_variable(device, "writer")
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (_, bus):
        await bus.wait_for(lambda: all(bus.latest(ref, name) for name in WRITES))
        for name, (text, _, _) in WRITES.items():
            result = await bus.send_desired(ref, name, text)
            assert result.status is WriteStatus.APPLIED, (name, result)
            assert bus.latest(ref, name) == text  # the read-back after the write
    for name, (_, value, variant) in WRITES.items():
        data = await device.nodes[name].read_data_value()
        assert data.Value is not None
        assert (data.Value.Value, data.Value.VariantType) == (value, variant), name


async def test_a_value_outside_the_nodes_type_is_refused(device: DeviceServer) -> None:
    dev, model = every_variable(device, "overflow")
    ref = ref_of(dev)
    before = await device.value("small")
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (_, bus):
        await bus.wait_for(lambda: bus.latest(ref, "small") is not None)
        result = await bus.send_desired(ref, "small", "40000")
    assert result.status is WriteStatus.FAILED
    assert "outside Int16" in result.message
    assert await device.value("small") == before


def _online(rt: MapperRuntime, ref: DeviceRef) -> bool:
    supervisor = rt.supervisor(ref)
    return supervisor is not None and supervisor.state is DeviceState.ONLINE


def _method_device(server: DeviceServer) -> Device:
    props = {"adder": ("STRING", "ReadWrite", {"nodeID": server.node_id("add"), "mode": "method"})}
    dev, _ = opcua_device("calculator", props, {"url": server.url})
    doc = dev.model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["methods"] = [{"name": "sum", "propertyNames": ["adder"]}]
    return Device.model_validate(doc)


async def test_call_method_by_property_and_by_device_method(device: DeviceServer) -> None:
    props = {"adder": ("STRING", "ReadWrite", {"nodeID": device.node_id("add"), "mode": "method"})}
    _, model = opcua_device("calculator", props, {"url": device.url})
    driver = OpcUaDriver(bound(_method_device(device), model))
    async with driver:
        assert await driver.call_method("adder", [2, 3]) == [5]
        assert await driver.call_method("sum", [40, 2]) == [42]
        assert await driver.read(driver.device.properties) == [42]
        with pytest.raises(DriverError, match="takes 2 input"):
            await driver.call_method("sum", [1])
        with pytest.raises(DriverError, match="neither a method property"):
            await driver.call_method("nothing", [])
    assert device.calls[-2:] == [(2, 3), (40, 2)]


async def test_writing_a_method_property_calls_the_method(device: DeviceServer) -> None:
    props = {"adder": ("STRING", "ReadWrite", {"nodeID": device.node_id("add"), "mode": "method"})}
    dev, model = opcua_device("calc-bus", props, {"url": device.url})
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (rt, bus):
        await bus.wait_for(lambda: _online(rt, ref))
        result = await bus.send_desired(ref, "adder", "4,6")
        assert result.status is WriteStatus.APPLIED, result
        assert bus.latest(ref, "adder") == "10"
    assert device.calls[-1] == (4, 6)
