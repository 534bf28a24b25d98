"""The samples in device_models/modbus, run against a simulator that holds what they describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mapper_modbus.driver import ModbusDriver
from mapper_sdk.bus import WriteStatus
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.testing import ref_of, run_devices

from .kit import f32
from .sim import HOST, Image, Simulator, text_words, wire_words

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "device_models" / "modbus"
UPSTREAM = ROOT / ".." / "shared" / "conformance" / "kubeedge" / "samples" / "v1beta1"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((SAMPLES / name).read_text())
    assert isinstance(data, dict)
    return data


def on_simulator(doc: dict[str, Any], port: int) -> Device:
    """The sample Device, pointed at the local simulator and polled every 100 ms (the first
    poll of a 10 s cycle may come up to 10 s after the start, to spread devices out)."""
    doc["spec"]["protocol"]["configData"].update(ip=HOST, port=str(port), timeout=1000)
    for prop in doc["spec"]["properties"]:
        prop.update(collectCycle=100, reportCycle=100)
    return Device.model_validate(doc)


def test_the_temperature_sample_keeps_kubeedges_keys_and_values() -> None:
    upstream = UPSTREAM / "modbus-temperature-instance.yaml"
    if not upstream.exists():
        pytest.skip(f"{upstream} is not in this checkout")
    ours, theirs = load("temperature-instance.yaml"), yaml.safe_load(upstream.read_text())
    for mine, original in zip(
        ours["spec"]["properties"], theirs["spec"]["properties"], strict=True
    ):
        assert mine["visitors"] == original["visitors"]
    mine_cfg, their_cfg = (
        ours["spec"]["protocol"]["configData"],
        theirs["spec"]["protocol"]["configData"],
    )
    assert mine_cfg.keys() == their_cfg.keys()
    assert mine_cfg["port"] == their_cfg["port"] == "5502"


async def test_both_samples_read_and_write_on_one_endpoint() -> None:
    temperature = Image()
    temperature.put_words("holding", 0, [235])
    meter = Image()
    for offset, value in ((0, 230.5), (6, 4.25), (12, 980.0)):
        meter.put_words("input", offset, wire_words("float32", value, "CDAB"))
    meter.put_words("input", 72, wire_words("uint32", 1234567, "CDAB"))
    meter.put_words("input", 80, wire_words("int32", -42))
    meter.put_words("holding", 200, [0b1001])
    meter.put_words("holding", 202, wire_words("int16", 655))
    meter.put_words("holding", 210, text_words(b"PM-0042 ", 8, pad=b" "))
    async with Simulator({1: temperature, 3: meter}) as sim:
        devices = []
        for stem in ("temperature", "power-meter"):
            model = DeviceModel.model_validate(load(f"{stem}-model.yaml"))
            devices.append((on_simulator(load(f"{stem}-instance.yaml"), sim.port), model))
        temp_ref, meter_ref = (ref_of(device) for device, _ in devices)
        async with run_devices(devices, drivers=[ModbusDriver]) as (_, bus):
            expected = {
                (temp_ref, "temperature"): "23.5",
                (meter_ref, "voltage"): "230.5",
                (meter_ref, "current"): "4.25",
                (meter_ref, "active-power"): "980.0",
                (meter_ref, "energy"): "12345.67",
                (meter_ref, "pulses"): "-42",
                (meter_ref, "status"): "9",
                (meter_ref, "overvoltage"): "true",
                (meter_ref, "cabinet-temperature"): str(f32(655 * 0.1 - 40)),
                (meter_ref, "serial-number"): "PM-0042",
                (meter_ref, "relay"): "false",
            }
            await bus.wait_for(lambda: all(bus.latest(*key) is not None for key in expected))
            assert {key: bus.latest(*key) for key in expected} == expected
            # The desired values of both samples were written when the devices came online.
            await bus.wait_for(lambda: bus.latest(temp_ref, "temperature-switch") == "1")
            await bus.wait_for(lambda: bus.latest(meter_ref, "demand-limit") == "25000")
            assert await sim.words(3, "holding", 204, 2) == wire_words("uint32", 25000, "CDAB")
            result = await bus.send_desired(meter_ref, "relay", "true")
            assert result.status is WriteStatus.APPLIED
            assert await sim.bits(3, "coils", 0, 1) == [True]
