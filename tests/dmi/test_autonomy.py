"""Edge autonomy of ``DmiLink``: a mapper restarted while EdgeCore is down runs its last known
devices, with their last desired values, and reconciles as a diff when EdgeCore answers.

Real gRPC over unix sockets in ``tmp_path`` against the EdgeCore DMI emulator; the virtual driver
records every write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from helpers.dmi_emulator import DmiEmulator
from helpers.dmi_kit import MODEL, connects, edgecore_socket, until
from helpers.dmi_kit import mapper as dmi_mapper

from mapper_sdk._spec_store import SpecStore
from mapper_sdk.binding import DeviceRef
from mapper_sdk.dmi.link import DmiLink
from mapper_sdk.driver import DeviceState
from mapper_sdk.models import Device
from mapper_sdk.runtime import MapperRuntime
from mapper_sdk.testing import make_device, ref_of
from mapper_sdk.virtual import SimulatedDevice, VirtualDriver


@pytest.fixture(autouse=True)
def world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


def thermo(name: str, *, setpoint: str = "20", seed: int = 1) -> Device:
    return make_device(
        name,
        MODEL,
        {"seed": seed},
        {"temp": {"kind": "counter", "step": 1, "max": 1000}, "setpoint": {"kind": "writable"}},
        collect_cycle_ms=100,
        desired={"setpoint": setpoint},
    )


def sim(device: Device) -> SimulatedDevice:
    return VirtualDriver.world.device(device.id)


def mapper(tmp_path: Path) -> AbstractAsyncContextManager[tuple[DmiLink, MapperRuntime]]:
    """A virtual-protocol mapper whose state directory is ``tmp_path/state``."""
    return dmi_mapper(tmp_path, state_dir=tmp_path / "state")


def store(tmp_path: Path) -> SpecStore:
    """The file the link in ``mapper`` keeps its devices in."""
    return SpecStore(tmp_path / "state" / "specs-dmi-virtual.json")


def working(runtime: MapperRuntime, ref: DeviceRef) -> bool:
    """The device is online and has reported at least once."""
    supervisor = runtime.supervisor(ref)
    return (
        supervisor is not None
        and supervisor.state is DeviceState.ONLINE
        and supervisor.stats.reports > 0
    )


async def first_run(tmp_path: Path, *devices: Device) -> None:
    """Register with EdgeCore once, so the state directory holds ``devices``; then stop."""
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(d, MODEL) for d in devices])
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        await until(lambda: all(working(runtime, ref_of(d)) for d in devices))


# --- restart while EdgeCore is down --------------------------------------------------------------


async def test_restart_without_edgecore_runs_the_last_devices_then_registers_without_restart(
    tmp_path: Path,
) -> None:
    one, two = thermo("one"), thermo("two")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(one, MODEL), (two, MODEL)])
    async with emulator, mapper(tmp_path) as (link, _runtime):
        await link.wait_registered(timeout=10)
        # The last desired value arrives after registration, as an UpdateDevice call.
        await emulator.update_device(thermo("one", setpoint="42"), MODEL)
        await link.wait_applied(timeout=5)
        await until(lambda: ("setpoint", 42) in sim(one).writes)
    VirtualDriver.world.reset()  # forget the first run's writes: only the second run's count

    # EdgeCore is down: the mapper runs what it last heard of, and keeps trying to register.
    refs = {ref_of(one), ref_of(two)}
    async with mapper(tmp_path) as (link, runtime):
        await link.wait_applied(timeout=5)
        assert link.stats.restored_devices == 2
        assert set(runtime.devices) == refs
        await until(lambda: all(working(runtime, ref) for ref in refs))
        await until(lambda: sim(one).writes == [("setpoint", 42)])  # the last desired value
        await until(lambda: ("setpoint", 20) in sim(two).writes)
        await until(lambda: link.queued > 0 and link.stats.send_errors > 0)  # reports wait
        assert link.stats.register_attempts >= 1
        assert not link.registered
        supervisors = runtime.devices

        # EdgeCore is back with the same devices: a diff in which nothing changed.
        async with emulator:
            await link.wait_registered(timeout=10)
            assert link.stats.last_apply is not None
            assert set(link.stats.last_apply.unchanged) == refs
            assert runtime.devices == supervisors
            assert all(connects(runtime, ref) == 1 for ref in refs)
            assert sim(one).writes == [("setpoint", 42)]  # not written again
            # The reports queued while EdgeCore was away reach it.
            await emulator.wait_for(
                lambda: all(emulator.reports_of(d.id) for d in (one, two)), timeout=10
            )


async def test_edgecores_answer_is_applied_as_a_diff_to_the_restored_devices(
    tmp_path: Path,
) -> None:
    keep, gone, changed, written = thermo("keep"), thermo("gone"), thermo("changed"), thermo("w")
    await first_run(tmp_path, keep, gone, changed, written)
    VirtualDriver.world.reset()

    # While the mapper was down, the cloud removed one device, gave another a new connection
    # and a third a new desired value.
    answer = [
        (keep, MODEL),
        (thermo("changed", seed=2), MODEL),
        (thermo("w", setpoint="55"), MODEL),
    ]
    async with mapper(tmp_path) as (link, runtime):
        await link.wait_applied(timeout=5)
        assert set(runtime.devices) == {ref_of(d) for d in (keep, gone, changed, written)}
        await until(lambda: all(working(runtime, ref) for ref in runtime.devices))
        old_changed = runtime.supervisor(ref_of(changed))

        emulator = DmiEmulator(edgecore_socket(tmp_path), answer)
        async with emulator:
            await link.wait_registered(timeout=10)
            result = link.stats.last_apply
            assert result is not None
            assert result.unchanged == [ref_of(keep)]
            assert result.stopped == [ref_of(gone)]
            assert result.restarted == [ref_of(changed)]
            assert result.updated == [ref_of(written)]
            assert set(runtime.devices) == {ref_of(d) for d in (keep, changed, written)}
            assert runtime.supervisor(ref_of(changed)) is not old_changed
            assert connects(runtime, ref_of(keep)) == 1
            assert connects(runtime, ref_of(written)) == 1  # a write, not a restart
            await until(lambda: sim(written).writes[-1:] == [("setpoint", 55)])
            await emulator.wait_for(lambda: (gone.id, "offline") in emulator.states)

    # The answer is what the state directory now holds.
    saved = store(tmp_path).load()
    assert saved is not None
    assert {d.id for d in saved.devices} == {keep.id, changed.id, written.id}


async def test_a_corrupt_state_file_is_quarantined_and_the_mapper_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = store(tmp_path).path
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"format": 1, "devices": [{"metadata": ')  # cut short, as by a bad disk
    device = thermo("fresh")
    caplog.set_level(logging.WARNING, logger="mapper_sdk.spec_store")
    async with mapper(tmp_path) as (link, runtime):
        await link.wait_applied(timeout=5)
        assert runtime.devices == {}
        assert link.stats.restored_devices == 0
        assert not path.exists()
        aside = list(path.parent.glob(f"{path.name}.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes().startswith(b'{"format": 1')  # kept for a human to read
        assert any("unusable" in r.getMessage() for r in caplog.records)

        async with DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)]):
            await link.wait_registered(timeout=10)
            assert set(runtime.devices) == {ref_of(device)}
    saved = store(tmp_path).load()
    assert saved is not None
    assert [d.id for d in saved.devices] == [device.id]


# --- what is saved -------------------------------------------------------------------------------


async def test_every_change_edgecore_makes_is_saved_with_its_desired_values(
    tmp_path: Path,
) -> None:
    one, two = thermo("one"), thermo("two")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(one, MODEL)])
    async with emulator, mapper(tmp_path) as (link, _runtime):
        await link.wait_registered(timeout=10)
        assert saved_setpoints(tmp_path) == {one.id: "20"}

        await emulator.register_device(two, MODEL)
        await link.wait_applied(timeout=5)
        assert saved_setpoints(tmp_path) == {one.id: "20", two.id: "20"}

        await emulator.update_device(thermo("two", setpoint="77"), MODEL)
        await link.wait_applied(timeout=5)
        assert saved_setpoints(tmp_path) == {one.id: "20", two.id: "77"}

        await emulator.remove_device(one)
        await link.wait_applied(timeout=5)
        assert saved_setpoints(tmp_path) == {two.id: "77"}

        await emulator.remove_device_model(MODEL)
        await link.wait_applied(timeout=5)
        saved = store(tmp_path).load()
        assert saved is not None
        assert saved.models == []
    assert not list((tmp_path / "state").glob(".*.tmp"))  # no temp file left behind


async def test_a_change_answered_just_before_stopping_is_saved(tmp_path: Path) -> None:
    device = thermo("one")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)])
    async with emulator:
        async with mapper(tmp_path) as (link, _runtime):
            await link.wait_registered(timeout=10)
            # Stop as soon as EdgeCore has its answer, whether or not the change was applied.
            await emulator.update_device(thermo("one", setpoint="66"), MODEL)
        assert saved_setpoints(tmp_path) == {device.id: "66"}


def saved_setpoints(tmp_path: Path) -> dict[str, str]:
    saved = store(tmp_path).load()
    assert saved is not None
    result = {}
    for device in saved.devices:
        for prop in device.spec.properties:
            if prop.name == "setpoint" and prop.desired is not None:
                result[device.id] = prop.desired.value
    return result


async def test_a_state_dir_that_cannot_be_written_does_not_stop_the_mapper(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    device = thermo("one")
    caplog.set_level(logging.ERROR, logger="mapper_sdk.dmi")
    async with (
        DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)]),
        mapper(tmp_path) as (link, runtime),
    ):
        await link.wait_registered(timeout=10)
        assert link.stats.save_errors == 1
        assert link.stats.saves == 0
        await until(lambda: working(runtime, ref_of(device)))
    assert any("cannot save" in r.getMessage() for r in caplog.records)
