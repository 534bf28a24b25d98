"""Legacy membership over MQTT against a real mosquitto and the EdgeCore emulator (contract §3):
the YAML devices run only while EdgeCore lists them for the node, and the list survives a
restart of the gateway."""

from __future__ import annotations

from pathlib import Path

from helpers.edgecore_emulator import EdgeCoreEmulator
from helpers.mosquitto import Mosquitto

from mapper_gateway.gateway import Gateway
from mapper_sdk import DeviceRef

from .kit import device_yaml, make_settings, wait_until

ONE = DeviceRef("default", "thermo-1")
TWO = DeviceRef("default", "thermo-2")


async def test_membership_decides_which_yaml_devices_run(
    tmp_path: Path, devices_dir: Path, mosquitto: Mosquitto
) -> None:
    (devices_dir / "thermo-2.yaml").write_text(device_yaml("thermo-2"))
    url = f"tcp://{mosquitto.host}:{mosquitto.port}"
    settings = make_settings(tmp_path, devices_dir, mqtt_url=url, node="edge-1", membership=True)
    async with EdgeCoreEmulator(
        mosquitto.host, mosquitto.port, node="edge-1", devices=[ONE.id]
    ) as edgecore:
        async with Gateway(settings) as gateway:
            runtime = gateway.require_runtime()
            await wait_until(lambda: ONE in runtime.devices)
            assert TWO not in runtime.devices
            await edgecore.wait_until(lambda: bool(edgecore.reported(ONE.id)))
            edgecore.add_device("default", "thermo-2", notify=True)
            await wait_until(lambda: TWO in runtime.devices)
            edgecore.remove_device("default", "thermo-1", notify=True)
            await wait_until(lambda: ONE not in runtime.devices)
        assert edgecore.errors == []
    # EdgeCore is gone: a restarted gateway runs the last list it got (edge autonomy).
    settings = settings.model_copy(update={"mqtt_url": "off"})
    async with Gateway(settings) as gateway:
        await gateway.wait_loaded(10)
        assert set(gateway.require_runtime().devices) == {TWO}
