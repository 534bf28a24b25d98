"""Subscriptions: data changes reach the bus at once, without polling the subscribed nodes."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import ua
from mapper_opcua.driver import OpcUaDriver

from mapper_sdk.testing import ref_of, run_devices

from .device import TICK, DeviceServer
from .kit import opcua_device

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _subscribed(server: DeviceServer, name: str, **visitor: object) -> dict[str, object]:
    return {"nodeID": server.node_id(name), "mode": "subscribe", **visitor}


async def test_a_change_is_reported_within_a_few_publishing_intervals(
    device: DeviceServer,
) -> None:
    props = {
        "level": ("DOUBLE", "ReadOnly", _subscribed(device, "level", publishingInterval=50.0)),
        "counter": ("INT", "ReadOnly", _subscribed(device, "counter", publishingInterval=50.0)),
    }
    dev, model = opcua_device("pushed", props, {"url": device.url}, collect_cycle_ms=10_000)
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (_, bus):
        await bus.wait_for(lambda: bus.latest(ref, "level") is not None)
        reads = device.reads
        loop = asyncio.get_running_loop()
        for value in (10.5, 11.5, 12.5):
            started = loop.time()
            await device.set("level", value, ua.VariantType.Double)
            await bus.wait_for(lambda v=value: bus.latest(ref, "level") == str(v), timeout=5)
            assert loop.time() - started < 1.0  # publishing interval 50 ms; 2 cores under load
        # The timer's counter keeps arriving too, and nothing was polled meanwhile.
        seen: set[str | None] = set()

        def counted() -> bool:
            seen.add(bus.latest(ref, "counter"))
            return len(seen) > 3

        await bus.wait_for(counted, timeout=40 * TICK)
        assert device.reads == reads


async def test_polled_and_subscribed_properties_of_one_device(device: DeviceServer) -> None:
    props = {
        "counter": ("INT", "ReadOnly", _subscribed(device, "counter", publishingInterval=50.0)),
        "label": ("STRING", "ReadOnly", {"nodeID": device.node_id("label")}),
        "small": ("INT", "ReadOnly", {"nodeID": device.node_id("small"), "mode": "poll"}),
    }
    dev, model = opcua_device("mixed", props, {"url": device.url})
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (rt, bus):
        supervisor = rt.supervisor(ref)
        assert supervisor is not None
        await bus.wait_for(lambda: supervisor.stats.reads >= 2)
        reads, nodes = device.reads, device.nodes_read
        await bus.wait_for(lambda: supervisor.stats.reads >= 5)
        # Each poll reads the two polled nodes only, in one request.
        assert device.nodes_read - nodes == 2 * (device.reads - reads)
        assert bus.latest(ref, "counter") is not None


async def test_deadband_filters_small_changes(device: DeviceServer) -> None:
    visitor = _subscribed(device, "level", publishingInterval=50.0, deadband=5.0)
    props = {"level": ("DOUBLE", "ReadOnly", visitor)}
    dev, model = opcua_device("deadband", props, {"url": device.url}, collect_cycle_ms=10_000)
    ref = ref_of(dev)
    await device.set("level", 100.0, ua.VariantType.Double)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (_, bus):
        await bus.wait_for(lambda: bus.latest(ref, "level") == "100.0")
        await device.set("level", 101.0, ua.VariantType.Double)  # inside the deadband
        await device.set("level", 110.0, ua.VariantType.Double)
        await bus.wait_for(lambda: bus.latest(ref, "level") == "110.0")
        reported = [t.value for r in bus.reports for t in r.twins if t.name == "level"]
    assert "101.0" not in reported
