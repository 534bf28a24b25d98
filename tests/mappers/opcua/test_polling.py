"""Polling a real asyncua server: exact values, every NodeId syntax, one Read per tick."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from mapper_opcua.driver import OpcUaDriver

from mapper_sdk.binding import BoundProperty
from mapper_sdk.driver import Value
from mapper_sdk.errors import DriverError
from mapper_sdk.testing import ref_of, run_devices

from .device import GUID, NAMESPACE, VARIABLES, DeviceServer
from .kit import bound, every_variable, opcua_device

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_every_type_reaches_the_bus_exactly(device: DeviceServer) -> None:
    dev, model = every_variable(device)
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (_, bus):
        await bus.wait_for(lambda: all(bus.latest(ref, v.name) is not None for v in VARIABLES))
        got = {v.name: bus.latest(ref, v.name) for v in VARIABLES}
    assert got == {v.name: v.twin for v in VARIABLES}


async def test_every_node_id_syntax_and_browse_paths_resolve(device: DeviceServer) -> None:
    ns = device.ns
    visitors = {
        "numeric": {"nodeID": f"ns={ns};i=7001"},
        "string": {"nodeID": f"ns={ns};s=count32"},
        "guid": {"nodeID": f"ns={ns};g={GUID}"},
        "opaque": {"nodeID": device.node_id("opaque")},
        "by-uri": {"nodeID": f"nsu={NAMESPACE};i=7001"},
        "by-path": {"browseName": f"{ns}:Device/{ns}:guided"},
        "standard": {"nodeID": "i=2259"},  # Server_ServerStatus_State: Running = 0
    }
    props = {name: ("INT", "ReadOnly", v) for name, v in visitors.items()}
    dev, model = opcua_device("syntaxes", props, {"url": device.url})
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[OpcUaDriver]) as (_, bus):
        await bus.wait_for(lambda: all(bus.latest(ref, n) is not None for n in visitors))
        got = {n: bus.latest(ref, n) for n in visitors}
    assert got == {
        "numeric": "7",
        "string": "123456",
        "guid": "8",
        "opaque": "9",
        "by-uri": "7",
        "by-path": "8",
        "standard": "0",
    }


async def test_a_bad_node_fails_its_slot_only(device: DeviceServer) -> None:
    props = {
        "good": ("INT", "ReadOnly", {"nodeID": device.node_id("count32")}),
        "missing": ("INT", "ReadOnly", {"nodeID": f"ns={device.ns};s=NoSuchNode"}),
        "unknown-uri": ("INT", "ReadOnly", {"nodeID": "nsu=urn:nowhere;i=1"}),
        "lost-path": ("INT", "ReadOnly", {"browseName": f"{device.ns}:Device/{device.ns}:x"}),
        "structure": ("STRING", "ReadOnly", {"nodeID": "i=2256"}),  # ServerStatusDataType
    }
    dev, model = opcua_device("partial", props, {"url": device.url})
    driver = OpcUaDriver(bound(dev, model))
    async with driver:
        results = await driver.read(driver.device.properties)
    good, missing, unknown_uri, lost_path, structure = results
    assert good == 123456
    assert isinstance(missing, DriverError)
    assert "BadNodeIdUnknown" in str(missing)
    assert isinstance(unknown_uri, DriverError)
    assert "urn:nowhere" in str(unknown_uri)
    assert isinstance(lost_path, DriverError)
    assert "not found" in str(lost_path)
    assert isinstance(structure, DriverError)
    assert "ExtensionObject" in str(structure)


class PerNodeDriver(OpcUaDriver):
    """The peers' design (one Read request per property), as a baseline."""

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        results: list[Value | DriverError] = []
        for point in points:
            results.extend(await super().read([point]))
        return results


@pytest.mark.parametrize(("driver", "per_tick"), [(OpcUaDriver, 1), (PerNodeDriver, 9)])
async def test_read_service_calls_per_tick(
    device: DeviceServer, driver: type[OpcUaDriver], per_tick: int
) -> None:
    """Counted by the server: N polled nodes cost 1 Read call per tick (N with the baseline)."""
    dev, model = every_variable(device, f"count-{per_tick}")
    ref = ref_of(dev)
    async with run_devices([(dev, model)], drivers=[driver]) as (rt, bus):
        supervisor = rt.supervisor(ref)
        assert supervisor is not None
        await bus.wait_for(lambda: supervisor.stats.reads >= 2)
        ticks, reads = supervisor.stats.reads, device.reads
        await bus.wait_for(lambda: supervisor.stats.reads >= ticks + 5)
        ticks, reads = supervisor.stats.reads - ticks, device.reads - reads
    assert reads == ticks * per_tick


async def test_reads_split_at_the_read_limit(device: DeviceServer) -> None:
    dev, model = every_variable(device, "limited", {"maxNodesPerRead": 4.0})
    driver = OpcUaDriver(bound(dev, model))
    async with driver:
        before = device.reads
        results = await driver.read(driver.device.properties)
        assert device.reads - before == 3  # 9 nodes, 4 per request
    assert [r for r in results if isinstance(r, DriverError)] == []
