"""Fault tests with countable results: the broker killed (SIGKILL) during steady traffic.

Real mosquitto (persistence off, so a kill loses whatever it held) and the EdgeCore emulator
(tests/helpers/edgecore_emulator.py, which emulates EdgeCore's devicetwin per contract
§3.4/§3.5a). Reports are confirmed only by EdgeCore's twin/update/result, so the count at the
emulator is end to end. Each device has a counter that advances on every read: any lost report
is a gap in the sequence the emulator saw.

FAULT_SECONDS (default 60, as the issue asks) sets the length of the run.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.edgecore_emulator import EdgeCoreEmulator
from helpers.mosquitto import Mosquitto

from mapper_sdk._registry import Registry
from mapper_sdk.bus.mqtt import MqttEventBus
from mapper_sdk.bus.mqtt_settings import ConfirmMode, MqttSettings
from mapper_sdk.runtime import MapperRuntime
from mapper_sdk.testing import FAST_SETTINGS, bind_or_raise, make_device, make_model, model_property
from mapper_sdk.virtual import VirtualDriver

DEVICES = 20
PERIOD_MS = 100  # 20 devices x 10 reads/s = 200 updates/s
MODEL = make_model("counter", model_property("count", "INT", "ReadOnly"))
VISITORS = {"count": {"kind": "counter", "value": 0, "step": 1, "max": 1e12}}


@pytest.fixture(autouse=True)
def fresh_world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


@pytest.mark.slow
async def test_broker_sigkill_loses_no_report(mosquitto: Mosquitto, tmp_path: Path) -> None:
    seconds = float(os.environ.get("FAULT_SECONDS", "60"))
    seed = int(os.environ.get("FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"fault schedule seed: {seed}")
    names = [f"c{i}" for i in range(DEVICES)]
    settings = MqttSettings.from_url(
        f"tcp://127.0.0.1:{mosquitto.port}",
        node="edge-1",
        confirm=ConfirmMode.RESULT,
        result_timeout=5.0,
        backoff_base=0.1,
        backoff_cap=1.0,
        keepalive=5,
    )
    registry = Registry()
    registry.add(VirtualDriver)
    bus = MqttEventBus(settings, state_dir=tmp_path / "state")
    edgecore = EdgeCoreEmulator(
        "127.0.0.1", mosquitto.port, node="edge-1", devices=[f"default/{n}" for n in names]
    )
    await edgecore.start()
    runtime = MapperRuntime(bus, registry=registry, settings=FAST_SETTINGS)
    async with runtime:
        devices = [
            bind_or_raise(
                make_device(n, MODEL, {}, VISITORS, collect_cycle_ms=PERIOD_MS),
                MODEL,
                VirtualDriver,
            )
            for n in names
        ]
        await runtime.apply(devices)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        kills = 0
        while loop.time() < end - 3:
            await asyncio.sleep(rng.uniform(2.0, 5.0))  # the fault schedule, not synchronisation
            mosquitto.kill()
            kills += 1
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            mosquitto.start()
        await asyncio.sleep(max(0.0, end - loop.time()))
        for device in devices:
            await runtime.remove(device.ref)
        try:
            await bus.wait_for(lambda: bus.depth()[0] == 0, 60)
        except TimeoutError:
            raise AssertionError(
                f"outbox not drained: depth {bus.depth()}, {bus.stats} (seed {seed})"
            ) from None
    await edgecore.stop()

    per_device: dict[str, list[int]] = defaultdict(list)
    for report in edgecore.reports:
        if report.property == "count":
            per_device[report.device].append(int(report.value))
    produced = {n: int(VirtualDriver.world.device(f"default/{n}").values["count"]) for n in names}
    missing = {}
    duplicates = 0
    for name in names:
        seen = Counter(per_device[f"default/{name}"])
        duplicates += sum(c - 1 for c in seen.values())
        gaps = sorted(set(range(produced[name] + 1)) - set(seen))
        if gaps:
            missing[name] = gaps[:10]
    total = sum(produced[n] + 1 for n in names)
    print(f"{kills} kills, {total} updates, {duplicates} duplicates, stats {bus.stats}")
    assert kills >= 3
    assert total >= 150 * seconds  # ~200/s minus reconnect stalls of the devices' own cycles
    assert missing == {}, f"lost reports (seed {seed}): {missing}"
    assert duplicates <= 0.02 * total
    assert edgecore.errors == []
