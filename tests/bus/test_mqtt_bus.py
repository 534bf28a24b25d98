"""The MQTT event bus against a real mosquitto and the EdgeCore emulator (tests/helpers).

The emulator stands in for EdgeCore, which cannot run here; it follows contract §3.4/§3.5a.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers.edgecore_emulator import EdgeCoreEmulator
from helpers.mosquitto import Mosquitto
from helpers.mqtt import AsyncMqttClient

from mapper_sdk._registry import Registry
from mapper_sdk.bus import messages
from mapper_sdk.bus.mqtt import MqttEventBus
from mapper_sdk.bus.mqtt_settings import ConfirmMode, MqttSettings
from mapper_sdk.driver import DeviceState
from mapper_sdk.runtime import MapperRuntime
from mapper_sdk.testing import (
    FAST_SETTINGS,
    bind_or_raise,
    make_device,
    make_model,
    model_property,
    ref_of,
)
from mapper_sdk.virtual import VirtualDriver

MODEL = make_model(
    "thermo",
    model_property("temp", "FLOAT", "ReadOnly"),
    model_property("setpoint", "FLOAT", "ReadWrite", minimum="5", maximum="35"),
)
VISITORS = {
    "temp": {"kind": "counter", "value": 1, "step": 1, "max": 1e9},
    "setpoint": {"kind": "writable", "value": 20},
}


@pytest.fixture(autouse=True)
def fresh_world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


def settings(broker: Mosquitto, **kw: object) -> MqttSettings:
    fast = {"node": "edge-1", "backoff_base": 0.05, "backoff_cap": 0.5, "keepalive": 5}
    return MqttSettings.from_url(f"tcp://127.0.0.1:{broker.port}", **{**fast, **kw})


def registry() -> Registry:
    reg = Registry()
    reg.add(VirtualDriver)
    return reg


async def run(bus: MqttEventBus, names: list[str], collect_ms: int = 100) -> MapperRuntime:
    runtime = MapperRuntime(bus, registry=registry(), settings=FAST_SETTINGS, write_wait=3.0)
    await runtime.__aenter__()
    devices = [
        bind_or_raise(
            make_device(n, MODEL, {}, VISITORS, collect_cycle_ms=collect_ms), MODEL, VirtualDriver
        )
        for n in names
    ]
    await runtime.apply(devices)
    return runtime


async def test_reports_reach_a_subscriber_in_the_exact_shape(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with AsyncMqttClient("127.0.0.1", mosquitto.port) as watcher:
        await watcher.subscribe(
            "$hw/events/device/+/+/twin/update", "$hw/events/device/+/+/state/update"
        )
        bus = MqttEventBus(settings(mosquitto), state_dir=tmp_path)
        runtime = await run(bus, ["t1"])
        try:
            message = await watcher.wait_for("$hw/events/device/default/t1/twin/update", timeout=5)
            body = orjson.loads(message.payload)
            assert set(body) == {"event_id", "timestamp", "twin"}
            assert isinstance(body["timestamp"], int)
            temp = body["twin"]["temp"]
            assert temp["metadata"] == {"type": "float"}
            assert isinstance(temp["actual"]["value"], str)
            assert isinstance(temp["actual"]["metadata"]["timestamp"], int)
            messages.parse_twin_update(message.payload)  # EdgeCore's own parse rules accept it
            state = await watcher.wait_for("$hw/events/device/default/t1/state/update", timeout=5)
            assert orjson.loads(state.payload)["state"] == "online"
        finally:
            await runtime.__aexit__(None, None, None)


async def test_emulated_edgecore_confirms_reports_and_delta_writes_the_device(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with EdgeCoreEmulator(
        "127.0.0.1", mosquitto.port, node="edge-1", devices=["default/t1"]
    ) as edgecore:
        bus = MqttEventBus(settings(mosquitto), state_dir=tmp_path)
        runtime = await run(bus, ["t1"])
        try:
            await edgecore.wait_for_reports(4, timeout=5)
            await edgecore.wait_until(
                lambda: bus.stats.confirmed >= 4 and bus._edgecore_answers, timeout=5
            )
            assert edgecore.rejections == []
            assert edgecore.errors == []
            # An edge app sets a target: EdgeCore publishes a delta; the device is written.
            edgecore.set_expected("default", "t1", "setpoint", "25.5", type="float")
            await edgecore.wait_until(
                lambda: ("setpoint", "25.5") in edgecore.reported("default/t1"), timeout=5
            )
            assert VirtualDriver.world.device("default/t1").writes == [("setpoint", 25.5)]
            # Deltas repeat after every report until actual == expected: applied at most once.
            await edgecore.wait_for_reports(len(edgecore.reports) + 4, timeout=5)
            assert VirtualDriver.world.device("default/t1").writes == [("setpoint", 25.5)]
            # An out-of-range target is refused with a reason, never written.
            edgecore.set_expected("default", "t1", "setpoint", "99", type="float")
            await edgecore.wait_until(
                lambda: bus.stats.desired_refused["out_of_range"] == 1, timeout=5
            )
            assert VirtualDriver.world.device("default/t1").writes == [("setpoint", 25.5)]
            assert edgecore.state("default", "t1") == "online"
        finally:
            await runtime.__aexit__(None, None, None)


async def test_unknown_device_gets_404_counted_and_confirmed(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with EdgeCoreEmulator(
        "127.0.0.1", mosquitto.port, node="edge-1", devices=["default/known"]
    ) as edgecore:
        bus = MqttEventBus(settings(mosquitto, confirm=ConfirmMode.RESULT), state_dir=tmp_path)
        runtime = await run(bus, ["known", "stranger"])
        try:
            await bus.wait_for(lambda: bus.stats.rejected["edgecore_404"] >= 2, 5)
            await bus.wait_for(lambda: bus.depth()[0] <= 4, 5)  # 404s are not retried forever
            assert edgecore.reported("default/known")
        finally:
            await runtime.__aexit__(None, None, None)


async def test_broker_killed_reports_are_delivered_after_restart_in_order(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    bus = MqttEventBus(settings(mosquitto, confirm=ConfirmMode.PUBACK), state_dir=tmp_path)
    runtime = await run(bus, ["t1"], collect_ms=50)
    try:
        await bus.wait_connected(5)
        async with AsyncMqttClient("127.0.0.1", mosquitto.port, auto_reconnect=True) as watcher:
            await watcher.subscribe("$hw/events/device/default/t1/twin/update")
            await watcher.wait_for("$hw/events/device/default/t1/twin/update", timeout=5)
            mosquitto.kill()
            await bus.wait_for(lambda: not bus.connected, 10)
            produced_while_down = bus.stats.produced
            await bus.wait_for(lambda: bus.stats.produced >= produced_while_down + 10, 10)
            mosquitto.start()
            await watcher.wait_connected(10)
            await watcher.session_ready.wait()
            await bus.wait_for(
                lambda: bus.depth()[0] == 0 and bus.stats.produced > produced_while_down + 10, 15
            )
        counts = [
            float(orjson.loads(m.payload)["twin"]["temp"]["actual"]["value"])
            for m in watcher.received
            if "temp" in orjson.loads(m.payload)["twin"]
        ]
        assert counts == sorted(counts), "per-device order kept"
        assert bus.stats.connects >= 2
    finally:
        await runtime.__aexit__(None, None, None)


async def test_malformed_messages_are_rejected_counted_and_harmless(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with EdgeCoreEmulator(
        "127.0.0.1", mosquitto.port, node="edge-1", devices=["default/t1", "default/t2"]
    ) as edgecore:
        bus = MqttEventBus(settings(mosquitto), state_dir=tmp_path)
        runtime = await run(bus, ["t1", "t2"])
        try:
            await bus.wait_connected(5)
            async with AsyncMqttClient("127.0.0.1", mosquitto.port) as attacker:
                bad = [
                    b"not json",
                    b"[]",
                    b'{"event_id": 5}',
                    b'{"delta": {"setpoint": 1}}',
                    b"{" * 5000,
                    b'{"twin": NaN}',
                ]
                for i in range(1000):
                    attacker.publish_nowait(
                        "$hw/events/device/default/t1/twin/update/delta", bad[i % len(bad)]
                    )
                await attacker.publish("$hw/events/device/default/t1/twin/update/delta", b"[1]")
            await bus.wait_for(lambda: sum(bus.stats.rejected.values()) >= 1001, 10)
            before = len(edgecore.reported("default/t2"))
            await edgecore.wait_until(
                lambda: len(edgecore.reported("default/t2")) >= before + 4, timeout=5
            )
            assert VirtualDriver.world.device("default/t1").writes == []
            assert runtime.devices[ref_of(make_device("t1", MODEL))].state is DeviceState.ONLINE
        finally:
            await runtime.__aexit__(None, None, None)


async def test_desired_values_survive_a_gateway_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with EdgeCoreEmulator(
        "127.0.0.1", mosquitto.port, node="edge-1", devices=["default/t1"]
    ) as edgecore:
        bus = MqttEventBus(settings(mosquitto), state_dir=tmp_path)
        runtime = await run(bus, ["t1"])
        await edgecore.wait_for_reports(2, timeout=5)
        edgecore.set_expected("default", "t1", "setpoint", "12", type="float")
        await edgecore.wait_until(
            lambda: ("setpoint", "12.0") in edgecore.reported("default/t1"), timeout=5
        )
        await runtime.__aexit__(None, None, None)
        # The device forgets (power cycle); the restarted gateway restores the desired value.
        VirtualDriver.world.reset()
        bus2 = MqttEventBus(settings(mosquitto), state_dir=tmp_path)
        runtime2 = await run(bus2, ["t1"])
        try:
            await edgecore.wait_until(
                lambda: VirtualDriver.world.device("default/t1").writes == [("setpoint", 12.0)],
                timeout=5,
            )
        finally:
            await runtime2.__aexit__(None, None, None)


async def test_a_report_too_large_for_the_outbox_is_refused_alone(mosquitto: Mosquitto) -> None:
    from mapper_sdk._outbox import Outbox
    from mapper_sdk.binding import DeviceRef
    from mapper_sdk.bus import TwinReport, TwinValue

    outbox = Outbox.open(":memory:", max_bytes=2_000)
    bus = MqttEventBus(settings(mosquitto, confirm=ConfirmMode.PUBACK), outbox=outbox)

    async def refuse(change: object) -> None:
        raise AssertionError("no desired values here")

    await bus.start(refuse)  # type: ignore[arg-type]
    try:
        ref = DeviceRef("default", "big")
        huge = TwinReport(ref, 1, (TwinValue("blob", "x" * 3_000, "string"),))
        small = TwinReport(ref, 2, (TwinValue("n", "1", "int"),))
        bus.publish_twins(small)
        bus.publish_twins(huge)
        bus.publish_twins(small)
        await bus.wait_for(lambda: bus.stats.confirmed == 2)
        assert bus.stats.rejected["outbox_write_failed"] == 1
        assert bus.stats.persisted == 2
        assert bus.depth() == (0, 0)
    finally:
        await bus.aclose()
