"""/metrics content, the embedded broker with real MQTT clients, and the source composition."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from mapper_gateway.events import Event, EventHub
from mapper_gateway.gateway import Gateway
from mapper_gateway.sources import DeviceSources
from mapper_sdk import DeviceRef, MapperRuntime
from mapper_sdk.bus.memory import MemoryBus
from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property
from mapper_sdk.virtual import VirtualDriver

from .kit import asgi_client, make_settings, wait_until

ONE = DeviceRef("default", "thermo-1")


async def test_metrics_cover_devices_properties_and_the_process(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    supervisor = gateway.require_runtime().devices[ONE]
    await wait_until(lambda: supervisor.stats.reads >= 2)
    text = (await client.get("/metrics")).text
    device = 'device="default/thermo-1"'
    for needle in (
        f"mapper_device_reads_total{{{device}}}",
        f"mapper_device_read_errors_total{{{device}}}",
        f"mapper_device_reports_total{{{device}}}",
        f'mapper_device_read_rtt_seconds_bucket{{{device},le="0.001"}}',
        f"mapper_device_read_rtt_seconds_count{{{device}}}",
        f'mapper_device_state{{{device},state="online"}} 1.0',
        f'mapper_property_last_seen_age_seconds{{{device},property="temperature"}}',
        f'mapper_property_errors_total{{{device},property="mode"}} 0.0',
        "mapper_gateway_auth_failures_total",
        "mapper_gateway_sse_dropped_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert needle in text, needle


class Subscriber:
    """A paho client in its own thread, collecting messages of one filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(topic, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()  # before loop_stop: the loop closes the socket on it
        self.client.loop_stop()


async def test_the_embedded_broker_carries_kubeedge_topics(
    tmp_path: Path, devices_dir: Path
) -> None:
    pytest.importorskip("amqtt")
    settings = make_settings(tmp_path, devices_dir, mqtt_url=None, broker_port=0)
    async with Gateway(settings) as gw:
        assert gw.broker is not None
        assert gw.mqtt is not None
        await gw.wait_loaded(10)
        await gw.mqtt.wait_connected(10)
        watcher = Subscriber(gw.broker.port, "$hw/events/device/#")
        try:
            await asyncio.to_thread(watcher.subscribed.wait, 10)
            topic = "$hw/events/device/default/thermo-1/twin/update"
            await wait_until(lambda: any(t == topic for t, _ in watcher.messages))
            payload = next(p for t, p in watcher.messages if t == topic)
            report = json.loads(payload)
            assert set(report) == {"event_id", "timestamp", "twin"}
            twin = next(iter(report["twin"].values()))
            assert set(twin) == {"actual", "metadata"}
            # A client publishing under $hw/ reaches the gateway too: an edge app's delta.
            delta = {
                "event_id": "app-1",
                "timestamp": 1,
                "twin": {"mode": {"expected": {"value": "heat", "metadata": {"timestamp": 5}}}},
                "delta": {"mode": "heat"},
            }
            info = watcher.client.publish(
                "$hw/events/device/default/thermo-1/twin/update/delta", json.dumps(delta), 1
            )
            await asyncio.to_thread(info.wait_for_publish, 10)
            sim = VirtualDriver.world.device(ONE.id)
            await wait_until(lambda: ("mode", "heat") in sim.writes)
        finally:
            watcher.close()
        assert (await readyz(gw)).status_code == 200


async def readyz(gw: Gateway) -> httpx.Response:
    async with asgi_client(gw) as http:
        return await http.get("/readyz")


async def test_sources_only_touch_their_own_devices() -> None:
    model = make_model("m", model_property("x", "INT"))
    devices = [
        bind_or_raise(
            make_device(name, model, visitors={"x": {"kind": "counter"}}), model, VirtualDriver
        )
        for name in ("a", "b", "c")
    ]
    a, b, c = devices
    sources = DeviceSources()
    sources.register("files")
    async with MapperRuntime(MemoryBus()) as runtime:
        sources.attach(runtime)
        dmi = sources.view("dmi:virtual")
        await sources.replace("files", [a, b])
        await dmi.apply([b, c])  # b is also in the files: the files keep it
        assert set(runtime.devices) == {a.ref, b.ref, c.ref}
        assert sources.owner[b.ref] == "files"
        assert sources.conflicts == {b.ref: ("files", "dmi:virtual")}
        assert set(dmi.devices) == {c.ref}
        assert dmi.supervisor(a.ref) is None
        await dmi.apply([])  # EdgeCore removed everything: only its own device stops
        assert set(runtime.devices) == {a.ref, b.ref}
        assert not await dmi.remove(a.ref)


def test_a_slow_event_client_loses_its_oldest_events_counted() -> None:
    hub = EventHub(queue_size=3)
    slow, other = hub.subscribe(), hub.subscribe("default/b")
    for n in range(5):
        hub.publish("default/a", lambda n=n: Event("twins", {"n": n}))
    assert [slow.queue.get_nowait().data["n"] for _ in range(3)] == [2, 3, 4]
    assert (slow.dropped, hub.dropped_total) == (2, 2)
    assert other.queue.empty()  # filtered to another device: nothing queued, nothing dropped
    hub.unsubscribe(slow)
    hub.unsubscribe(other)
    built = []
    hub.publish("default/a", lambda: built.append(1) or Event("twins", {}))
    assert built == []  # nobody listens: the event is not even built
