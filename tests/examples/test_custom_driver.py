"""The example third-party mapper (examples/custom_driver) against a simulator, using only the
public API and mapper_sdk.testing, as a third-party author would."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mapper_sdk import WriteStatus
from mapper_sdk.loader import load_text
from mapper_sdk.testing import ref_of, run_devices

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_driver"
sys.path.insert(0, str(EXAMPLE))
from mapper_linesensor import LineSensorDriver  # noqa: E402


class Sensor:
    """A line-protocol sensor: ``GET name`` / ``SET name value``."""

    def __init__(self) -> None:
        self.values = {"temp": "21.5", "thr": "30"}
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := (await reader.readline()).decode().split():
            self.requests += 1
            if line[0] == "GET" and line[1] in self.values:
                writer.write(f"{self.values[line[1]]}\n".encode())
            elif line[0] == "SET" and line[1] == "thr":
                self.values["thr"] = line[2]
                writer.write(b"OK\n")
            else:
                writer.write(b"ERR unknown\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def sensor() -> AsyncIterator[tuple[Sensor, int]]:
    sim = Sensor()
    server = await asyncio.start_server(sim.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield sim, port


async def test_example_driver_reads_and_writes(sensor: tuple[Sensor, int]) -> None:
    sim, port = sensor
    text = (EXAMPLE / "devices.yaml").read_text().replace('port: "7000"', f'port: "{port}"')
    text = text.replace("collectCycle: 1000", "collectCycle: 100")
    loaded = load_text(text, "devices.yaml")
    assert loaded.ok, loaded.problems
    (model,), (device,) = [m.obj for m in loaded.models], [d.obj for d in loaded.devices]
    async with run_devices([(device, model)], drivers=[LineSensorDriver]) as (_, bus):
        ref = ref_of(device)
        await bus.wait_for(lambda: bus.latest(ref, "temperature") == "21.5")
        result = await bus.send_desired(ref, "threshold", "42")
        assert result.status is WriteStatus.APPLIED
        assert float(sim.values["thr"]) == 42.0
        refused = await bus.send_desired(ref, "threshold", "99")  # maximum is 50
        assert refused.reason == "out_of_range"
        assert float(sim.values["thr"]) == 42.0
