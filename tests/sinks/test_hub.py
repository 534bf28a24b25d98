"""SinkHub: sinks built from a device's pushMethod, shared per target, reports routed."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.bus.memory import MemoryBus
from mapper_sdk.errors import ConfigError
from mapper_sdk.models import Device
from mapper_sdk.sinks import RunnerSettings, Sample, SinkHub, SqliteSettings, _hub, targets_of
from mapper_sdk.sinks.http import HttpSettings
from mapper_sdk.sinks.influxdb2 import InfluxRoute, InfluxSettings
from mapper_sdk.sinks.mqtt import MqttRoute, MqttSinkSettings
from mapper_sdk.sinks.mysql import MysqlSettings
from mapper_sdk.sinks.otel import OtelSettings
from mapper_sdk.sinks.redis import RedisSettings
from mapper_sdk.sinks.sqlite import SqliteSink
from mapper_sdk.sinks.tdengine import TdengineSettings
from mapper_sdk.testing import bind_or_raise, run_devices

from .conftest import MODEL, RecordingSink, device_with_push

FAST = RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.05, close_timeout=2.0)
HTTP = {"http": {"hostName": "http://127.0.0.1", "port": 8080, "requestPath": "/push"}}
MQTT = {"mqtt": {"address": "tcp://127.0.0.1:1883", "topic": "t/temp", "qos": 1}}


class Factory:
    """Builds a ``RecordingSink`` per settings object and remembers it."""

    def __init__(self) -> None:
        self.sinks: dict[Any, RecordingSink] = {}

    def __call__(self, settings: Any) -> RecordingSink:
        assert settings not in self.sinks, "one sink per distinct target"
        sink = self.sinks[settings] = RecordingSink(repr(settings))
        return sink


def report(ref: DeviceRef, ts: int, **twins: str) -> TwinReport:
    types = {"temp": "float", "count": "int", "label": "string"}
    return TwinReport(ref, ts, tuple(TwinValue(k, v, types[k]) for k, v in twins.items()))


async def test_every_push_method_of_a_property_gets_its_samples() -> None:
    push = {
        "temp": {
            **HTTP,
            **MQTT,
            "otel": {"endpointURL": "http://127.0.0.1:4318/v1/metrics"},
            "dbMethod": {
                "redis": {"redisClientConfig": {"addr": "127.0.0.1:6379", "db": 2}},
                "influxdb2": {
                    "influxdb2ClientConfig": {"url": "http://127.0.0.1:8086", "org": "o",
                                              "bucket": "b"},
                    "influxdb2DataConfig": {"measurement": "m", "tag": {"site": "a"},
                                            "fieldKey": "temp"},
                },
                "TDEngine": {"TDEngineClientConfig": {"addr": "127.0.0.1:6041", "dbName": "db"}},
                "mysql": {"mysqlClientConfig": {"addr": "127.0.0.1:3306", "database": "d",
                                                "userName": "u"}},
            },
        },
    }  # fmt: skip
    device = device_with_push("thermo-1", push)
    factory = Factory()
    hub = SinkHub(settings=FAST, factory=factory, env={})
    assert hub.add_device(device) == []
    kinds = {type(settings) for settings in factory.sinks}
    assert kinds == {HttpSettings, MqttSinkSettings, OtelSettings, RedisSettings,
                     InfluxSettings, TdengineSettings, MysqlSettings}  # fmt: skip
    hub.submit(report(device.ref, 1_700_000_000_123, temp="21.5", count="3"))
    for settings, sink in factory.sinks.items():
        await sink.wait_for(lambda sink=sink: sink.samples)
        [sample] = sink.samples  # only "temp" has a pushMethod
        assert (sample.namespace, sample.name, sample.property) == ("default", "thermo-1", "temp")
        assert (sample.value, sample.type, sample.timestamp_ms) == ("21.5", "float",
                                                                    1_700_000_000_123)  # fmt: skip
        if isinstance(settings, MqttSinkSettings):
            assert sample.route == MqttRoute("t/temp", 1, False)
        elif isinstance(settings, InfluxSettings):
            assert sample.route == InfluxRoute("m", (("site", "a"),), "temp")
        else:
            assert sample.route is None
    await hub.aclose()
    assert all(sink.closed for sink in factory.sinks.values())


async def test_one_sink_per_target_shared_by_properties_and_devices() -> None:
    mqtt_count = {"mqtt": {**MQTT["mqtt"], "topic": "t/count", "qos": 0, "retained": True}}
    first = device_with_push("a", {"temp": {**HTTP, **MQTT}, "count": {**HTTP, **mqtt_count}})
    second = device_with_push("b", {"temp": HTTP}, namespace="plant")
    other_url = device_with_push("c", {"temp": {"http": {**HTTP["http"], "requestPath": "/x"}}})
    factory = Factory()
    hub = SinkHub(settings=FAST, factory=factory, env={})
    for device in (first, second, other_url):
        hub.add_device(device)
    # Same URL -> one HTTP sink; same broker -> one MQTT sink; another path -> its own sink.
    assert sorted(type(s).__name__ + getattr(s, "url", "") for s in factory.sinks) == [
        "HttpSettingshttp://127.0.0.1:8080/push",
        "HttpSettingshttp://127.0.0.1:8080/x",
        "MqttSinkSettings",
    ]
    hub.submit(report(first.ref, 1, temp="1.5", count="7", label="x"))
    hub.submit(report(second.ref, 2, temp="2.5"))
    http = factory.sinks[HttpSettings("http://127.0.0.1:8080/push")]
    mqtt = next(s for k, s in factory.sinks.items() if isinstance(k, MqttSinkSettings))
    await http.wait_for(lambda: len(http.samples) == 3)
    await mqtt.wait_for(lambda: len(mqtt.samples) == 2)
    assert sorted((s.device_id, s.property, s.value) for s in http.samples) == [
        ("default/a", "count", "7"),
        ("default/a", "temp", "1.5"),
        ("plant/b", "temp", "2.5"),
    ]
    assert sorted((s.property, s.route) for s in mqtt.samples) == [  # type: ignore[type-var]
        ("count", MqttRoute("t/count", 0, True)),
        ("temp", MqttRoute("t/temp", 1, False)),
    ]
    assert len(hub.runners) == 3
    await hub.aclose()


async def test_removed_devices_release_their_sinks_after_a_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_hub, "IDLE_GRACE", 0.05)
    a = device_with_push("a", {"temp": HTTP})
    b = device_with_push("b", {"temp": HTTP})
    factory = Factory()
    hub = SinkHub(settings=FAST, factory=factory, env={})
    hub.add_device(a)
    hub.add_device(b)
    [sink] = factory.sinks.values()
    hub.remove_device(a.ref)
    hub.submit(report(a.ref, 1, temp="1"))  # no longer routed
    hub.submit(report(b.ref, 2, temp="2"))
    await sink.wait_for(lambda: sink.samples)
    assert [s.name for s in sink.samples] == ["b"]
    # A restart (remove, then add at once) keeps the sink and its queue.
    hub.remove_device(b.ref)
    hub.add_device(b)
    await asyncio.sleep(0)  # let any (wrongly) scheduled close start
    assert not sink.closed
    hub.remove_device(b.ref)
    await sink.wait_for(lambda: sink.closed)
    assert hub.runners == {}
    await hub.aclose()


async def test_add_device_again_replaces_its_routes() -> None:
    factory = Factory()
    hub = SinkHub(settings=FAST, factory=factory, env={})
    hub.add_device(device_with_push("a", {"temp": HTTP}))
    hub.add_device(device_with_push("a", {"count": HTTP}))
    [sink] = factory.sinks.values()
    hub.submit(report(DeviceRef("default", "a"), 1, temp="1.5", count="4"))
    await sink.wait_for(lambda: sink.samples)
    assert [(s.property, s.value) for s in sink.samples] == [("count", "4")]
    await hub.aclose()


async def test_bad_push_methods_are_reported_and_the_rest_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "mapper_sdk.sinks")
    push = {"temp": {"http": {"hostName": "", "port": 80}, **MQTT},
            "count": {"dbMethod": {"redis": {}}, "anomalyDetection": {"model": "x"}}}  # fmt: skip
    factory = Factory()

    def flaky(settings: Any) -> RecordingSink:
        if isinstance(settings, MqttSinkSettings):
            raise ConfigError("this sink needs the Python package 'paho': pip install x[mqtt]")
        return factory(settings)

    hub = SinkHub(settings=FAST, factory=flaky, env={})
    device = device_with_push("a", push)
    problems = hub.add_device(device)
    assert problems == [
        "property 'temp' pushMethod.http: pushMethod.http.hostName is empty",
        "property 'temp' pushMethod: this sink needs the Python package 'paho': "
        "pip install x[mqtt]",
        "property 'count' pushMethod.dbMethod.redis: redisClientConfig is missing",
    ]
    assert hub.problems[device.ref] == problems
    assert "pip install x[mqtt]" in caplog.text
    assert "anomalyDetection is not supported" in caplog.text
    assert factory.sinks == {}
    hub.remove_device(device.ref)
    assert hub.problems == {}
    await hub.aclose()


async def test_local_store_keeps_every_reported_value(sqlite_path: Path) -> None:
    hub = SinkHub(settings=FAST, local_store=SqliteSettings(sqlite_path))
    device = device_with_push("a", {})
    hub.add_device(device)
    now = time.time_ns() // 1_000_000  # recent: older rows fall to the default max_age
    hub.submit(report(device.ref, now, temp="1.5", count="2"))
    hub.submit(report(DeviceRef("other", "unknown"), now + 1, label="not added"))
    [runner] = hub.runners.values()
    async with asyncio.timeout(10):
        await runner.flush()
    assert runner.stats.written == 3
    sink = runner.sink
    assert isinstance(sink, SqliteSink)
    assert await sink.history("default", "a", "temp") == [
        Sample("default", "a", "temp", "1.5", "float", now)
    ]
    assert await sink.history("other", "unknown", "label") == [
        Sample("other", "unknown", "label", "not added", "string", now + 1)
    ]
    await hub.aclose()


def test_targets_from_device_yaml() -> None:
    text = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: thermo-9, namespace: plant}
spec:
  deviceModelRef: {name: thermo-model}
  protocol: {protocolName: virtual}
  properties:
    - name: temp
      pushMethod:
        http: {hostName: "http://collector", port: 9000, requestPath: "/in?pushFormat=form&k=v",
               timeout: 1500}
        dbMethod:
          TDEngine:
            TDEngineClientConfig: {addr: "td:6041", dbName: metrics}
"""
    device = Device.model_validate(yaml.safe_load(text))
    bound = bind_or_raise(device, MODEL.model_copy(update={}), None)
    env = {"USERNAME": "writer", "PASSWORD": "pw"}
    targets, problems = targets_of(bound.properties[0], env=env)
    assert problems == []
    assert targets == [
        (HttpSettings("http://collector:9000/in?k=v", "form", 1.5), None),
        (TdengineSettings("td", 6041, "metrics", "writer", "pw"), None),
    ]


async def test_hub_attached_beside_the_bus_sees_every_report() -> None:
    """How a runtime attaches the hub: next to ``bus.publish_twins`` (here through a bus that
    forwards, since wiring the runtime itself is not this package's job)."""
    factory = Factory()
    hub = SinkHub(settings=FAST, factory=factory, env={})

    class TeeBus(MemoryBus):
        def publish_twins(self, report: TwinReport) -> None:
            super().publish_twins(report)
            hub.submit(report)

    device = device_with_push("live", {"temp": HTTP})
    hub.add_device(device)
    bus = TeeBus()
    async with run_devices([(device.device, MODEL)], bus=bus) as (_runtime, bus):
        [sink] = factory.sinks.values()
        await sink.wait_for(lambda: len(sink.samples) >= 3)
    reported = [t.value for r in bus.reports for t in r.twins if t.name == "temp"]
    assert [s.value for s in sink.samples] == reported[: len(sink.samples)]
    await hub.aclose()


@pytest.mark.parametrize(
    ("module", "extra", "push"),
    [
        ("httpx", "http", HTTP),
        ("redis", "redis", {"dbMethod": {"redis": {"redisClientConfig": {"addr": "r"}}}}),
        ("aiomysql", "mysql",
         {"dbMethod": {"mysql": {"mysqlClientConfig": {"addr": "m", "database": "d"}}}}),
        ("paho", "mqtt", MQTT),
    ],
)  # fmt: skip
async def test_a_missing_optional_library_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, extra: str, push: dict[str, Any]
) -> None:
    for name in list(sys.modules):
        if name == module or name.startswith(f"{module}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # makes "import <module>" fail
    hub = SinkHub(settings=FAST, env={})
    problems = hub.add_device(device_with_push("a", {"temp": push}))
    assert len(problems) == 1
    assert f"pip install 'mapper-sdk[{extra}]'" in problems[0]
    assert ("'paho-mqtt'" if module == "paho" else f"'{module}'") in problems[0]
    assert hub.runners == {}
    await hub.aclose()


def test_importing_the_package_loads_no_optional_library() -> None:
    code = (
        "import sys, mapper_sdk.sinks, mapper_sdk.sinks.http, mapper_sdk.sinks.redis, "
        "mapper_sdk.sinks.mysql, mapper_sdk.sinks.mqtt, mapper_sdk.sinks.otel, "
        "mapper_sdk.sinks.influxdb2, mapper_sdk.sinks.tdengine\n"
        "print(sorted(m for m in ('httpx', 'redis', 'aiomysql', 'pymysql', 'paho') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "[]"
