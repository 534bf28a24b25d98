"""The demo simulators shipped by the Modbus and OPC-UA packages (entry-point group
``mapper_sdk.demos``): their YAMLs load and bind, the real drivers read them and write to
them, and ``mapper-gateway demo`` starts them."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mapper_gateway.demo import DEMO_GROUP, demo_devices
from mapper_sdk import WriteStatus
from mapper_sdk._registry import Registry
from mapper_sdk.binding import DeviceRef
from mapper_sdk.loader import bind_all, load_paths
from mapper_sdk.testing import run_devices

from .kit import make_settings

# name -> (device, properties that must report, one that changes every second, writable
# property, value to write)
SIMULATORS = {
    "modbus": (
        "demo-modbus-meter",
        ("voltage", "current", "energy", "switch"),
        "energy",
        "setpoint",
        "750",
    ),
    "opcua": (
        "demo-opcua-boiler",
        ("temperature", "pressure", "burner"),
        "temperature",
        "setpoint",
        "72.5",
    ),
}


def _entry_point(name: str) -> object:
    (ep,) = [ep for ep in entry_points(group=DEMO_GROUP) if ep.name == name]
    return ep.load()


@pytest.mark.parametrize("name", sorted(SIMULATORS))
async def test_simulator_yamls_bind_and_run_with_reads_and_a_write(
    name: str, tmp_path: Path
) -> None:
    device_name, reported, changing, writable, value = SIMULATORS[name]
    factory = _entry_point(name)
    async with factory(tmp_path):  # type: ignore[operator]
        result = load_paths([tmp_path])
        assert result.ok, result.problems
        bound, problems = bind_all(result, Registry.from_entry_points())
        assert [p for p in problems if p.severity == "error"] == []
        assert [b.ref for b in bound] == [DeviceRef("default", device_name)]
        (device,) = [loaded.obj for loaded in result.devices]
        (model,) = [loaded.obj for loaded in result.models]
        ref = DeviceRef("default", device_name)
        async with run_devices([(device, model)]) as (_, bus):
            await bus.wait_for(lambda: all(bus.latest(ref, p) is not None for p in reported), 10)
            first = bus.latest(ref, changing)
            await bus.wait_for(lambda: bus.latest(ref, changing) != first, 5)  # the ticker runs
            write = await bus.send_desired(ref, writable, value)
            assert write.status is WriteStatus.APPLIED, write
            await bus.wait_for(lambda: bus.latest(ref, writable) == value, 10)


async def test_the_demo_starts_both_simulators(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mapper_gateway.demo")
    settings = make_settings(tmp_path, None)
    async with demo_devices(settings) as demo:
        assert demo.devices is not None
        names = {path.name for path in demo.devices.glob("*.yaml")}
        assert {"demo-modbus-meter.yaml", "demo-opcua-boiler.yaml"} <= names
        result = load_paths([demo.devices])
        assert result.ok, result.problems
    for name in SIMULATORS:
        assert f"demo simulator {name!r} started" in caplog.text
