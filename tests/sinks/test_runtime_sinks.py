"""Sinks wired into the runtime: every reported value, also of reportToCloud: false ones."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from mapper_sdk.models import Device
from mapper_sdk.sinks import Sample, SinkHub
from mapper_sdk.testing import make_device, make_model, model_property, ref_of, run_devices
from mapper_sdk.virtual import VirtualDriver


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.samples: list[Sample] = []

    async def open(self) -> None:
        return None

    async def write(self, batch: Sequence[Sample]) -> None:
        self.samples.extend(batch)

    async def aclose(self) -> None:
        return None


@pytest.fixture(autouse=True)
def fresh_world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


async def test_push_method_values_reach_the_sink_even_when_not_reported_to_cloud() -> None:
    model = make_model(
        "m", model_property("cloud", "INT", "ReadOnly"), model_property("local", "INT", "ReadOnly")
    )
    device = make_device(
        "d1",
        model,
        {},
        {"cloud": {"kind": "counter", "max": 1e9}, "local": {"kind": "counter", "max": 1e9}},
    )
    raw: dict[str, Any] = device.model_dump(by_alias=True, exclude_none=True)
    for prop in raw["spec"]["properties"]:
        prop["pushMethod"] = {
            "http": {"hostName": "http://127.0.0.1", "port": 9, "requestPath": "/x"}
        }
    raw["spec"]["properties"][1]["reportToCloud"] = False
    device = Device.model_validate(raw)
    sink = RecordingSink()
    hub = SinkHub(factory=lambda settings: sink)
    async with run_devices([(device, model)], sinks=hub) as (_, bus):
        ref = ref_of(device)
        await bus.wait_for(lambda: bus.latest(ref, "cloud") is not None)
        await bus.wait_for(lambda: {"cloud", "local"} <= {s.property for s in sink.samples}, 5)
    assert all(twin.name != "local" for report in bus.reports for twin in report.twins)
