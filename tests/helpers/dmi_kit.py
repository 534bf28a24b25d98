"""What the DMI tests share: a virtual-protocol mapper on DmiLink, fast settings, a sample model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from mapper_sdk._registry import Registry
from mapper_sdk.binding import DeviceRef
from mapper_sdk.dmi.link import DmiLink, DmiSettings
from mapper_sdk.runtime import MapperRuntime
from mapper_sdk.testing import FAST_SETTINGS, make_model, model_property
from mapper_sdk.virtual import VirtualDriver

FAST_DMI = DmiSettings(
    backoff_base=0.05, backoff_cap=0.3, register_timeout=2.0, call_timeout=2.0, close_timeout=1.0
)
MODEL = make_model(
    "thermo-model",
    model_property("temp", "FLOAT", "ReadOnly"),
    model_property("setpoint", "INT", "ReadWrite", minimum="0", maximum="100"),
)


def edgecore_socket(tmp_path: Path) -> Path:
    return tmp_path / "edgecore" / "dmi.sock"


@asynccontextmanager
async def mapper(
    tmp_path: Path, settings: DmiSettings = FAST_DMI, state_dir: Path | None = None
) -> AsyncIterator[tuple[DmiLink, MapperRuntime]]:
    """A running virtual-protocol mapper registering with ``edgecore_socket(tmp_path)``."""
    registry = Registry()
    registry.add(VirtualDriver)
    link = DmiLink(
        "virtual",
        registry=registry,
        mapper_socket=tmp_path / "mapper" / "virtual.sock",
        edgecore_socket=edgecore_socket(tmp_path),
        settings=settings,
        state_dir=state_dir,
    )
    runtime = MapperRuntime(link, registry=registry, settings=FAST_SETTINGS, write_wait=2.0)
    link.attach(runtime)
    async with runtime:
        yield link, runtime


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll a condition that no event signals (runtime and driver state) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the condition
            await asyncio.sleep(0.01)


def connects(runtime: MapperRuntime, ref: DeviceRef) -> int:
    supervisor = runtime.supervisor(ref)
    assert supervisor is not None
    return supervisor.stats.connects
