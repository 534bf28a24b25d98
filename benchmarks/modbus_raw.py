"""Library-only baselines for ``bench_modbus.py``: pymodbus + orjson + paho, no project code.

Modes (``--mode``), all driven by the same spec file as the system under test:

- ``same-plan``: replays the planner's requests (the spec's ``requests`` per device, dumped
  from ``ReadPlan.to_json()``); per device and cycle it sends those requests, decodes the
  float32 values with one ``struct`` per request and publishes one ``twin/update`` (QoS as in
  the spec) shaped like the mapper's. One client per endpoint, shared by its devices.
- ``naive``: the peers' design: one task and one timer per property, one request and one MQTT
  message per property.
- either can also take desired values: ``paho on_message -> orjson -> write_register(s)``.

``--spec`` keys: mqtt_port, qos, mode (saturate | periodic), period_s, warmup_s, measure_s,
devices, write_device, b4. Output: JSON lines on stdout (``ready``, ``start``, ``end``,
``writes``, ``hold``), like the mapper child of ``bench_modbus.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pymodbus.client import AsyncModbusTcpClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, rss_mb

HOST = "127.0.0.1"


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


class LoopMqtt:
    """A paho client driven by the asyncio loop (add_reader/add_writer), no network thread."""

    def __init__(
        self,
        client_id: str,
        on_message: Callable[[mqtt.MQTTMessage], None] | None,
        max_inflight: int = 100,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.connected = asyncio.Event()
        c = self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311
        )
        c.max_inflight_messages_set(max_inflight)  # the mapper's MqttSettings.max_inflight
        c.on_socket_open = lambda cl, ud, sock: self.loop.add_reader(sock, cl.loop_read)
        c.on_socket_close = self._closed
        c.on_socket_register_write = lambda cl, ud, sock: self.loop.add_writer(sock, cl.loop_write)
        c.on_socket_unregister_write = self._unregister_write
        c.on_connect = lambda *a: self.connected.set()
        if on_message is not None:
            c.on_message = lambda cl, ud, msg: on_message(msg)
        self._misc: asyncio.TimerHandle | None = None

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    async def connect(self, port: int) -> None:
        self.client.connect(HOST, port, 30)
        self._tick()
        await asyncio.wait_for(self.connected.wait(), 10)

    def _tick(self) -> None:
        self.client.loop_misc()
        self._misc = self.loop.call_later(1.0, self._tick)

    def close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
        self.client.disconnect()


class Device:
    """One device of the spec with its replayed requests and decoders."""

    def __init__(self, spec: dict[str, Any], namespace: str = "default") -> None:
        self.name: str = spec["name"]
        self.port: int = spec["port"]
        self.unit: int = spec["unit"]
        self.names = [f"p{i}" for i in range(spec["props"])]
        self.topic = f"$hw/events/device/{namespace}/{self.name}/twin/update"
        self.decoders = []  # (function, address, count, registers packer, decoder, indexes)
        for request in spec["requests"]:
            address, count = request["address"], request["count"]
            inside = [i for i in range(spec["props"]) if address <= 2 * i < address + count]
            fmt, at = ">", address
            for i in inside:
                fmt += "xx" * (2 * i - at) + "f"
                at = 2 * i + 2
            fmt += "xx" * (address + count - at)
            packer, decoder = struct.Struct(f">{count}H"), struct.Struct(fmt)
            self.decoders.append((request["function"], address, count, packer, decoder, inside))


class Raw:
    def __init__(self, spec: dict[str, Any], mode: str) -> None:
        self.spec = spec
        self.mode = mode
        self.devices = [Device(d) for d in spec["devices"]]
        self.clients: dict[int, AsyncModbusTcpClient] = {}
        self.mqtt: LoopMqtt | None = None
        self.cycles = 0
        self.published = 0
        self.seq = 0
        self.prefix = f"raw-{int(time.time()):x}-"
        self.qos = int(spec.get("qos", 1))
        self.running = True
        self.written: list[list[int]] = []

    async def connect(self) -> None:
        ports = {d.port for d in self.devices}
        wd = self.spec.get("write_device")
        if wd:
            ports.add(wd["port"])
        for port in sorted(ports):
            client = AsyncModbusTcpClient(HOST, port=port)
            if not await client.connect():
                raise SystemExit(f"cannot connect to the simulator on port {port}")
            self.clients[port] = client
        on_message = self.on_delta if wd else None
        client_id = f"raw-{self.mode}-{random.randrange(1 << 30)}"
        self.mqtt = LoopMqtt(client_id, on_message, int(self.spec.get("max_inflight", 100)))
        await self.mqtt.connect(self.spec["mqtt_port"])
        if wd:
            topic = f"$hw/events/device/default/{wd['name']}/twin/update/delta"
            self.mqtt.client.subscribe(topic, qos=1)

    def publish(self, topic: str, twins: dict[str, Any], ts: int) -> None:
        assert self.mqtt is not None
        self.seq += 1
        body = {"event_id": f"{self.prefix}{self.seq}", "timestamp": ts, "twin": twins}
        self.mqtt.client.publish(topic, orjson.dumps(body), qos=self.qos)
        self.published += 1

    # -- same plan ------------------------------------------------------------------------

    async def device_loop(self, dev: Device, period: float) -> None:
        client = self.clients[dev.port]
        loop = asyncio.get_running_loop()
        tick = loop.time() + random.uniform(0, period)
        while self.running:
            if period:
                await asyncio.sleep(max(0.0, tick - loop.time()))
                tick += period
            values: list[float] = [0.0] * len(dev.names)
            for fc, address, count, packer, decoder, inside in dev.decoders:
                if fc == 3:
                    rr = await client.read_holding_registers(
                        address, count=count, device_id=dev.unit
                    )
                else:
                    rr = await client.read_input_registers(address, count=count, device_id=dev.unit)
                for i, v in zip(inside, decoder.unpack(packer.pack(*rr.registers)), strict=True):
                    values[i] = v
            ts = time.time_ns() // 1_000_000
            twins = {
                name: {
                    "actual": {"value": f"{v:.7g}", "metadata": {"timestamp": ts}},
                    "metadata": {"type": "float"},
                }
                for name, v in zip(dev.names, values, strict=True)
            }
            self.publish(dev.topic, twins, ts)
            self.cycles += 1
            if not period:
                await asyncio.sleep(0)

    # -- naive ----------------------------------------------------------------------------

    async def property_loop(self, dev: Device, i: int, period: float) -> None:
        client = self.clients[dev.port]
        name, unpack = dev.names[i], struct.Struct(">f").unpack
        pack = struct.Struct(">2H").pack
        loop = asyncio.get_running_loop()
        tick = loop.time() + random.uniform(0, period)
        while self.running:
            if period:
                await asyncio.sleep(max(0.0, tick - loop.time()))
                tick += period
            rr = await client.read_holding_registers(2 * i, count=2, device_id=dev.unit)
            (v,) = unpack(pack(*rr.registers))
            ts = time.time_ns() // 1_000_000
            twin = {
                name: {
                    "actual": {"value": f"{v:.7g}", "metadata": {"timestamp": ts}},
                    "metadata": {"type": "float"},
                }
            }
            self.publish(dev.topic, twin, ts)
            self.cycles += 1
            if not period:
                await asyncio.sleep(0)

    # -- desired values -------------------------------------------------------------------

    def on_delta(self, message: mqtt.MQTTMessage) -> None:
        delta = orjson.loads(message.payload)["delta"]
        writes = sorted((int(name[1:]), int(value)) for name, value in delta.items())
        asyncio.get_running_loop().create_task(self.write(writes))

    async def write(self, writes: list[tuple[int, int]]) -> None:
        wd = self.spec["write_device"]
        client = self.clients[wd["port"]]
        runs: list[list[tuple[int, int]]] = []
        for address, value in writes:  # contiguous registers: one FC16 request
            if runs and address == runs[-1][-1][0] + 1:
                runs[-1].append((address, value))
            else:
                runs.append([(address, value)])
        for run in runs:
            if len(run) == 1:
                await client.write_register(run[0][0], run[0][1], device_id=wd["unit"])
            else:
                values = [v for _, v in run]
                await client.write_registers(run[0][0], values, device_id=wd["unit"])

    async def direct_writes(self, b4: dict[str, Any]) -> dict[str, Any]:
        """The library floor: write_register(s) called straight, timed before the call."""
        singles, bursts = [], []
        base = int(b4["base"])
        for n in range(int(b4["singles"])):
            value = base + n
            t = time.monotonic_ns()
            await self.write([(0, value)])
            singles.append([t, 0, value])
            await asyncio.sleep(random.uniform(*b4["gap_s"]))
        width = int(self.spec["write_device"]["registers"])
        for n in range(int(b4["bursts"])):
            first = base + 1000 + n * width
            t = time.monotonic_ns()
            await self.write([(k, first + k) for k in range(width)])
            bursts.append([t, first])
            await asyncio.sleep(random.uniform(*b4["gap_s"]))
        return {"singles": singles, "bursts": bursts}

    # -- run ------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.connect()
        spec = self.spec
        period = float(spec["period_s"]) if spec["mode"] == "periodic" else 0.0
        tasks = []
        for dev in self.devices:
            if self.mode == "naive":
                for i in range(len(dev.names)):
                    tasks.append(asyncio.create_task(self.property_loop(dev, i, period)))
            else:
                tasks.append(asyncio.create_task(self.device_loop(dev, period)))
        emit("ready")
        await asyncio.sleep(float(spec["warmup_s"]))
        c0, p0, cpu0, t0 = self.cycles, self.published, cpu_seconds(), time.monotonic()
        emit("start", t=t0)
        await asyncio.sleep(float(spec["measure_s"]))
        t1, cpu1 = time.monotonic(), cpu_seconds()
        emit(
            "end",
            t=t1,
            cpu_s=cpu1 - cpu0,
            rss_mb=rss_mb(),
            cycles=self.cycles - c0,
            published=self.published - p0,
        )
        b4 = spec.get("b4")
        if b4 and b4.get("direct"):
            emit("writes", **await self.direct_writes(b4))
        if spec.get("hold"):
            emit("hold")
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        self.running = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.mqtt is not None:
            self.mqtt.close()
        for client in self.clients.values():
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--mode", choices=["same-plan", "naive"], default="same-plan")
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    asyncio.run(Raw(spec, args.mode).run())


if __name__ == "__main__":
    main()
