"""MQTT push against a real mosquitto: JSON payloads on the CRD's topics with its qos and
retained flag, one session per broker, recovery after the broker restarts."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from helpers.mosquitto import Mosquitto, free_port
from helpers.mqtt import AsyncMqttClient

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import PushMethodMqtt
from mapper_sdk.sinks import RunnerSettings, SinkError, SinkHub
from mapper_sdk.sinks.mqtt import MqttRoute, MqttSinkSettings

from .conftest import device_with_push, wait_until
from .test_hub import report

FAST = RunnerSettings(max_delay=0.0, backoff_base=0.02, backoff_cap=0.2, close_timeout=2.0)
TS = 1_700_000_000_123


def push(port: int, topic: str, qos: int = 1, retained: bool = False) -> dict[str, object]:
    return {"mqtt": {"address": f"tcp://127.0.0.1:{port}", "topic": topic, "qos": qos,
                     "retained": retained}}  # fmt: skip


async def test_samples_are_published_as_json_on_each_propertys_topic(
    mosquitto: Mosquitto,
) -> None:
    device = device_with_push(
        "thermo-1",
        {"temp": push(mosquitto.port, "plant/thermo-1/temp", qos=1),
         "count": push(mosquitto.port, "plant/thermo-1/count", qos=0, retained=True)},
    )  # fmt: skip
    hub = SinkHub(settings=FAST, env={})
    assert hub.add_device(device) == []
    assert list(hub.runners) == [f"mqtt tcp://127.0.0.1:{mosquitto.port}"]  # one session
    async with AsyncMqttClient("127.0.0.1", mosquitto.port) as watcher:
        await watcher.subscribe("plant/#", qos=1)
        hub.submit(report(device.ref, TS, temp="21.5", count="3"))
        temp = await watcher.wait_for("plant/thermo-1/temp")
        count = await watcher.wait_for("plant/thermo-1/count")
    assert orjson.loads(temp.payload) == {
        "device": "default/thermo-1", "namespace": "default", "name": "thermo-1",
        "property": "temp", "value": "21.5", "type": "float", "timestamp": TS,
    }  # fmt: skip
    assert temp.qos == 1
    assert orjson.loads(count.payload)["value"] == "3"
    assert count.qos == 0
    [runner] = hub.runners.values()
    async with asyncio.timeout(10):
        await runner.flush()
    assert runner.stats.written == 2
    # The retained flag reached the broker: a late subscriber still gets the last count.
    async with AsyncMqttClient("127.0.0.1", mosquitto.port) as late:
        await late.subscribe("plant/#", qos=1)
        retained = await late.wait_for("plant/thermo-1/count")
        assert retained.retain
        assert late.drain("plant/thermo-1/temp") == []
    await hub.aclose()


async def test_broker_restart_is_survived(mosquitto: Mosquitto) -> None:
    device = device_with_push("m", {"temp": push(mosquitto.port, "m/temp", retained=True)})
    hub = SinkHub(settings=FAST, env={})
    hub.add_device(device)
    [runner] = hub.runners.values()
    hub.submit(report(device.ref, TS, temp="1"))
    async with asyncio.timeout(10):
        await runner.flush()
    mosquitto.stop()
    hub.submit(report(device.ref, TS + 1, temp="2"))  # offered while the broker is away
    await wait_until(lambda: runner.stats.failures > 0)
    assert not runner.stats.healthy
    mosquitto.start()
    async with asyncio.timeout(15):
        await runner.flush()
    assert runner.stats.healthy
    assert runner.stats.written == 2
    # The broker lost everything in the restart (no persistence): the retained value it holds
    # now was published by the sink's new session after the restart.
    async with AsyncMqttClient("127.0.0.1", mosquitto.port) as watcher:
        await watcher.subscribe("m/#", qos=1)
        retained = await watcher.wait_for("m/temp")
        assert orjson.loads(retained.payload)["value"] == "2"
        hub.submit(report(device.ref, TS + 2, temp="3"))
        live = await watcher.wait_for("m/temp")
        assert orjson.loads(live.payload)["value"] == "3"
    await hub.aclose()


async def test_unreachable_broker_is_a_retryable_error() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    settings, _route = MqttSinkSettings.from_crd(PushMethodMqtt(address=address, topic="t"))
    sink = settings.build()
    with pytest.raises(SinkError, match="cannot connect"):
        await sink.open()
    await sink.aclose()


def test_crd_checks() -> None:
    env = {"MAPPER_SINK_MQTT_USERNAME": "u", "MAPPER_SINK_MQTT_PASSWORD": "mqtt-pw-5"}
    settings, route = MqttSinkSettings.from_crd(
        PushMethodMqtt(address="ssl://broker", topic="a/b", qos=2, retained=True), env
    )
    assert route == MqttRoute("a/b", 2, True)
    assert "mqtt-pw-5" not in repr(settings)
    broker = settings.broker()
    assert (broker.host, broker.port, broker.tls, broker.username) == ("broker", 8883, True, "u")
    assert "mqtt-pw-5" not in repr(broker)
    for bad in (PushMethodMqtt(address="", topic="t"), PushMethodMqtt(address="tcp://b"),
                PushMethodMqtt(address="tcp://b", topic="a/#"),
                PushMethodMqtt(address="http://b", topic="t")):  # fmt: skip
        with pytest.raises(ConfigError):
            MqttSinkSettings.from_crd(bad)
