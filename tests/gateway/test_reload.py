"""Hot reload with real files and the real watcher: only what a file changes is touched, and a
broken file leaves its last good version running, with the error located."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mapper_gateway.gateway import Gateway
from mapper_sdk import DeviceRef
from mapper_sdk.virtual import VirtualDriver

from .kit import device_yaml, wait_until

ONE = DeviceRef("default", "thermo-1")


def cycle_of(gateway: Gateway, ref: DeviceRef) -> int | None:
    """The first property's collect cycle of the running device (absent while it restarts)."""
    supervisor = gateway.require_runtime().devices.get(ref)
    return supervisor.device.properties[0].collect_cycle_ms if supervisor else None


TWO = DeviceRef("default", "thermo-2")


async def test_an_added_file_starts_only_its_device(gateway: Gateway, devices_dir: Path) -> None:
    runtime = gateway.require_runtime()
    first = runtime.devices[ONE]
    (devices_dir / "thermo-2.yaml").write_text(device_yaml("thermo-2"))
    await wait_until(lambda: TWO in runtime.devices)
    assert runtime.devices[ONE] is first  # untouched


async def test_a_desired_only_change_is_a_write_not_a_restart(
    gateway: Gateway, devices_dir: Path
) -> None:
    runtime = gateway.require_runtime()
    supervisor = runtime.devices[ONE]
    await wait_until(lambda: supervisor.stats.connects == 1)
    (devices_dir / "thermo-1.yaml").write_text(device_yaml(desired="30"))
    sim = VirtualDriver.world.device(ONE.id)
    await wait_until(lambda: ("setpoint", 30.0) in sim.writes)
    assert runtime.devices[ONE] is supervisor
    assert supervisor.stats.connects == 1


async def test_a_config_change_restarts_the_device(gateway: Gateway, devices_dir: Path) -> None:
    runtime = gateway.require_runtime()
    supervisor = runtime.devices[ONE]
    (devices_dir / "thermo-1.yaml").write_text(device_yaml(cycle=250))
    await wait_until(lambda: runtime.devices.get(ONE) not in (None, supervisor))
    await wait_until(lambda: cycle_of(gateway, ONE) == 250)


async def test_a_broken_file_keeps_its_last_good_version_running(
    gateway: Gateway, devices_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mapper_gateway")
    runtime = gateway.require_runtime()
    supervisor = runtime.devices[ONE]
    path = devices_dir / "thermo-1.yaml"
    broken = device_yaml(cycle=250).replace("collectCycle: 250", "collectCycle: soon", 1)
    path.write_text(broken)
    assert gateway.files is not None
    files = gateway.files
    await wait_until(lambda: str(path) in files.rejected())
    assert runtime.devices[ONE] is supervisor  # the last good version runs on
    (problem,) = [p for p in files.problems if p.severity == "error"]
    line = broken.splitlines().index("      collectCycle: soon") + 1
    column = broken.splitlines()[line - 1].index("collectCycle") + 1
    assert (problem.file, problem.line, problem.column) == (str(path), line, column)
    assert problem.path == "spec.properties[0].collectCycle"
    assert f"{path}:{line}:{column}: spec.properties[0].collectCycle" in caplog.text
    assert "its last good version keeps running" in caplog.text
    # Fixed again: the new version replaces the last good one.
    path.write_text(device_yaml(cycle=250))
    await wait_until(lambda: not files.rejected())
    await wait_until(lambda: cycle_of(gateway, ONE) == 250)


async def test_a_binding_error_also_keeps_the_last_good_version(
    gateway: Gateway, devices_dir: Path
) -> None:
    runtime = gateway.require_runtime()
    supervisor = runtime.devices[ONE]
    path = devices_dir / "thermo-1.yaml"
    path.write_text(device_yaml(desired="99"))  # out of the model's range
    assert gateway.files is not None
    files = gateway.files
    await wait_until(lambda: str(path) in files.rejected())
    assert runtime.devices[ONE] is supervisor
    assert any("desired" in p.path for p in files.problems if p.file == str(path))


async def test_a_removed_file_stops_its_device(gateway: Gateway, devices_dir: Path) -> None:
    runtime = gateway.require_runtime()
    (devices_dir / "thermo-2.yaml").write_text(device_yaml("thermo-2"))
    await wait_until(lambda: TWO in runtime.devices)
    first = runtime.devices[ONE]
    (devices_dir / "thermo-1.yaml").unlink()
    await wait_until(lambda: ONE not in runtime.devices)
    assert TWO in runtime.devices
    assert first.state.value == "offline" or ONE not in runtime.devices
