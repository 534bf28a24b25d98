"""``DmiLink`` against the EdgeCore DMI emulator: real gRPC over unix sockets in ``tmp_path``."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.dmi_emulator import AcceptedReport, DmiEmulator
from helpers.dmi_kit import MODEL, connects, edgecore_socket, mapper, until

from mapper_sdk._registry import Registry
from mapper_sdk.dmi.link import DmiLink, DmiSettings
from mapper_sdk.errors import EventBusError
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.runtime import MapperRuntime
from mapper_sdk.testing import make_device, make_model, model_property, ref_of
from mapper_sdk.virtual import VirtualDriver


@pytest.fixture(autouse=True)
def world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


def thermo(name: str, *, setpoint: str = "20", kind: str = "counter") -> Device:
    return make_device(
        name,
        MODEL,
        {"seed": 1},
        {"temp": {"kind": kind, "step": 1, "max": 1000}, "setpoint": {"kind": "writable"}},
        collect_cycle_ms=100,
        desired={"setpoint": setpoint},
    )


# --- registration --------------------------------------------------------------------------------


async def test_mapper_registers_and_runs_the_devices_edgecore_sends(tmp_path: Path) -> None:
    devices = [thermo("thermo-1"), thermo("thermo-2")]
    other = make_device("other", make_model("other-model", model_property("x"), protocol="modbus"))
    emulator = DmiEmulator(
        edgecore_socket(tmp_path), [(d, MODEL) for d in devices] + [(other, other_model())]
    )
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        info = emulator.mappers[-1]
        assert (info.name, info.api_version, info.protocol, info.state) == (
            "virtual-mapper",
            "v1beta1",
            "virtual",
            "ok",
        )
        assert info.address == str(tmp_path / "mapper" / "virtual.sock").encode()
        assert set(runtime.devices) == {ref_of(d) for d in devices}  # modbus went elsewhere

        def polled(device: Device) -> list[AcceptedReport]:
            # Reports carry the properties due together: a poll that finds both due sends both
            # in one call (the read-back after the initial write carries only the setpoint).
            return [r for r in emulator.reports_of(device.id) if len(r.twins) == 2]

        await emulator.wait_for(lambda: all(polled(d) for d in devices))
        for device in devices:
            report = polled(device)[0]
            assert set(report.twins) == {"temp", "setpoint"}  # all twins in one call
            assert report.observed_desired("setpoint") == "20"
            assert report.observed_desired("temp") == ""
        assert emulator.crash_triggers == []


def other_model() -> DeviceModel:
    return make_model("other-model", model_property("x"), protocol="modbus")


async def test_a_device_that_does_not_bind_is_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = thermo("good")
    bad = make_device("bad", MODEL, {}, {"temp": {"kind": "bogus"}})
    nested = make_device("nested", MODEL, {"serial": {"port": "/dev/ttyS0"}})
    emulator = DmiEmulator(
        edgecore_socket(tmp_path), [(good, MODEL), (bad, MODEL), (nested, MODEL)]
    )
    caplog.set_level(logging.WARNING, logger="mapper_sdk.dmi")
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        assert "default/nested" in emulator.skipped  # EdgeCore itself never sends it (§1.5)
        assert set(runtime.devices) == {ref_of(good)}
        # Another change makes the link bind everything again: the problem is not logged again.
        await emulator.update_device(thermo("good", setpoint="30"), MODEL)
        await link.wait_applied(timeout=5)
    lines = [r.getMessage() for r in caplog.records if "default/bad" in r.getMessage()]
    assert len(lines) == 1
    assert "spec.properties.0.visitors.configData.kind" in lines[0]
    assert "skipped" in lines[0]


async def test_link_keeps_retrying_until_edgecore_appears(tmp_path: Path) -> None:
    device = thermo("late")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)])
    async with mapper(tmp_path) as (link, runtime):
        await until(lambda: link.stats.register_attempts >= 3)
        assert not link.registered
        assert runtime.devices == {}
        async with emulator:
            await link.wait_registered(timeout=10)
            assert link.stats.registrations == 1
            assert set(runtime.devices) == {ref_of(device)}
            await emulator.wait_for(lambda: bool(emulator.reports_of(device.id)))


# --- EdgeCore -> mapper calls --------------------------------------------------------------------


async def test_update_device_with_a_new_desired_value_writes_without_restarting(
    tmp_path: Path,
) -> None:
    device = thermo("thermo-1", setpoint="20")
    ref, sim = ref_of(device), VirtualDriver.world.device(device.id)
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)])
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        await until(lambda: ("setpoint", 20) in sim.writes)

        await emulator.update_device(thermo("thermo-1", setpoint="42"), MODEL)
        await until(lambda: sim.writes[-1] == ("setpoint", 42))

        def reported_back() -> bool:
            twin = emulator.latest(device.id, "setpoint")
            return twin is not None and (twin.reported.value, twin.observedDesired.value) == (
                "42",
                "42",
            )

        await emulator.wait_for(reported_back)
        assert link.stats.last_apply is not None
        assert link.stats.last_apply.updated == [ref]
        assert connects(runtime, ref) == 1  # no restart


async def test_update_device_with_an_unchanged_spec_restarts_nothing(tmp_path: Path) -> None:
    device = thermo("thermo-1")
    ref, sim = ref_of(device), VirtualDriver.world.device(device.id)
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)])
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        await until(lambda: bool(sim.writes))
        writes = list(sim.writes)
        await emulator.update_device(device, MODEL)
        await link.wait_applied(timeout=5)
        assert link.stats.last_apply is not None
        assert link.stats.last_apply.unchanged == [ref]
        assert connects(runtime, ref) == 1
        assert sim.writes == writes


async def test_update_device_with_a_new_connection_restarts_only_that_device(
    tmp_path: Path,
) -> None:
    one, two = thermo("one"), thermo("two")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(one, MODEL), (two, MODEL)])
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        first = runtime.supervisor(ref_of(two))
        changed = make_device(
            "one",
            MODEL,
            {"seed": 2},
            {"temp": {"kind": "counter"}, "setpoint": {"kind": "writable"}},
            collect_cycle_ms=100,
            desired={"setpoint": "20"},
        )
        await emulator.update_device(changed, MODEL)
        await link.wait_applied(timeout=5)
        assert link.stats.last_apply is not None
        assert link.stats.last_apply.restarted == [ref_of(one)]
        assert runtime.supervisor(ref_of(two)) is first


async def test_remove_device_stops_it(tmp_path: Path) -> None:
    keep, gone = thermo("keep"), thermo("gone")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(keep, MODEL), (gone, MODEL)])
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        await emulator.remove_device(gone)
        await link.wait_applied(timeout=5)
        assert set(runtime.devices) == {ref_of(keep)}
        await emulator.wait_for(lambda: (gone.id, "offline") in emulator.states)


async def test_register_device_waits_for_its_model(tmp_path: Path) -> None:
    model = make_model("late-model", model_property("temp", "FLOAT", "ReadOnly"))
    device = make_device("fresh", model, {}, {"temp": {"kind": "constant", "value": 7}})
    emulator = DmiEmulator(edgecore_socket(tmp_path))
    async with emulator, mapper(tmp_path) as (link, runtime):
        await link.wait_registered(timeout=10)
        response = await emulator.register_device(device, model)
        assert (response.deviceNamespace, response.deviceName) == ("default", "fresh")
        await link.wait_applied(timeout=5)
        assert runtime.devices == {}
        await emulator.create_device_model(model)
        await link.wait_applied(timeout=5)
        assert set(runtime.devices) == {ref_of(device)}
        await emulator.wait_for(lambda: emulator.latest(device.id, "temp") is not None)
        twin = emulator.latest(device.id, "temp")
        assert twin is not None
        assert float(twin.reported.value) == 7  # configData 7 arrived as FloatValue 7.0


async def test_get_device_answers_the_last_known_twins(tmp_path: Path) -> None:
    device = thermo("thermo-1", kind="constant")
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(device, MODEL)])
    async with emulator, mapper(tmp_path) as (link, _runtime):
        await link.wait_registered(timeout=10)
        await emulator.wait_for(lambda: emulator.latest(device.id, "temp") is not None)
        answer = await emulator.get_device("default", "thermo-1")
        assert answer.name == "thermo-1"
        assert answer.spec.deviceModelReference == "thermo-model"
        twins = {t.propertyName: t for t in answer.status.twins}
        assert twins["temp"].reported.value == "0.0"  # a twin string, not a JSON document
        assert twins["setpoint"].reported.value == "20"
        assert twins["setpoint"].observedDesired.value == "20"
        assert twins["temp"].reported.metadata["type"] == "float"


async def test_get_device_of_an_unknown_device_is_not_found(tmp_path: Path) -> None:
    import grpc

    emulator = DmiEmulator(edgecore_socket(tmp_path))
    async with emulator, mapper(tmp_path) as (link, _runtime):
        await link.wait_registered(timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await emulator.get_device("default", "nope")
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


# --- paced reports -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_pacing_keeps_edgecores_shared_bucket_from_refusing(tmp_path: Path) -> None:
    # 50 devices reporting every 100 ms: 500 reports/s offered against EdgeCore's 1/s.
    devices = [thermo(f"thermo-{i}") for i in range(50)]
    emulator = DmiEmulator(edgecore_socket(tmp_path), [(d, MODEL) for d in devices])
    settings = DmiSettings(backoff_base=0.05, backoff_cap=0.3, close_timeout=0.5)
    async with emulator, mapper(tmp_path, settings) as (link, _runtime):
        await link.wait_registered(timeout=10)
        # The burst (50) goes at once, then 0.8/s: wait for two paced calls past the burst.
        await emulator.wait_for(lambda: len(emulator.reports) + len(emulator.states) >= 52)
        assert emulator.refused == 0
        assert link.stats.rate_limited == 0
        assert link.coalesced > 100  # the offered load folded into per-device reports
        assert link.dropped == 0
        assert link.queued <= 2 * len(devices)  # O(devices): one twin report + one state each
        assert all(set(r.twins) == {"temp", "setpoint"} for r in emulator.reports)


async def test_too_many_request_is_backed_off_and_reports_still_arrive(tmp_path: Path) -> None:
    devices = [thermo(f"thermo-{i}") for i in range(3)]
    emulator = DmiEmulator(
        edgecore_socket(tmp_path), [(d, MODEL) for d in devices], rate=4, burst=2
    )
    greedy = DmiSettings(report_rate=100, report_burst=100, backoff_base=0.05, backoff_cap=0.2)
    async with emulator, mapper(tmp_path, greedy) as (link, _runtime):
        await link.wait_registered(timeout=10)
        await until(lambda: link.stats.rate_limited >= 3)
        assert emulator.refused >= 3
        accepted = len(emulator.reports)
        await emulator.wait_for(lambda: len(emulator.reports) >= accepted + 5)
        assert emulator.crash_triggers == []


# --- sockets -------------------------------------------------------------------------------------


async def test_a_stale_socket_is_replaced_and_removed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "mapper" / "virtual.sock"
    path.parent.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a crash
    emulator = DmiEmulator(edgecore_socket(tmp_path))
    async with emulator, mapper(tmp_path) as (link, _runtime):
        await link.wait_registered(timeout=10)
        assert path.is_socket()
    assert not path.exists()


async def test_a_regular_file_at_the_socket_path_is_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "mapper" / "virtual.sock"
    path.parent.mkdir()
    path.write_text("precious")
    with pytest.raises(EventBusError, match="not a socket"):
        async with mapper(tmp_path):
            pass
    assert path.read_text() == "precious"


async def test_starting_without_attach_is_an_error(tmp_path: Path) -> None:
    link = DmiLink("virtual", mapper_socket=tmp_path / "m.sock")
    with pytest.raises(EventBusError, match="attach"):
        async with MapperRuntime(link, registry=Registry()):
            pass
