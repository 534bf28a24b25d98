"""The built-in ``virtual`` driver: simulated devices for the demo, tests and experiments.

It registers through the ``mapper_sdk.drivers`` entry point like any third-party driver.
Each property's visitor ``configData`` picks a behaviour:

- ``constant``: always ``value``;
- ``counter``: ``value``, then ``+step`` per read, wrapping from ``max`` to ``min``;
- ``sine``: between ``min`` and ``max`` with period ``period_ms``;
- ``random_walk``: ``±step`` per read, kept inside ``[min, max]`` (seeded, reproducible);
- ``writable``: holds what was last written; with ``lag_ms`` a written value shows up only
  after that delay, like an actuator that takes time to move.

Device state lives in a process-wide ``SimulatedWorld`` keyed by device id, so it survives a
reconnect the way a real device's registers do, and tests can change a value or take the whole
device offline (``VirtualDriver.world``).
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import AliasChoices, Field

from mapper_sdk.binding import BoundDevice, BoundProperty
from mapper_sdk.driver import Driver, DriverConfig, Value
from mapper_sdk.errors import DeviceConnectError, DeviceTimeoutError, DriverError
from mapper_sdk.models import PropertyType


class VirtualProtocolConfig(DriverConfig):
    """``spec.protocol.configData`` of a virtual device."""

    seed: int = 0
    fail_every: int = Field(
        default=0, ge=0, validation_alias=AliasChoices("failEvery", "fail_every")
    )
    """Every n-th read fails with a timeout (0: never), to exercise error handling."""
    latency_ms: float = Field(
        default=0, ge=0, validation_alias=AliasChoices("latencyMs", "latency_ms")
    )
    """Simulated time the device takes to answer a request."""


class VirtualVisitorConfig(DriverConfig):
    """``visitors.configData`` of a virtual property."""

    kind: Literal["constant", "counter", "sine", "random_walk", "writable"] = "writable"
    value: float | bool | str | None = None
    min: float = 0.0
    max: float = 100.0
    period_ms: float = Field(
        default=60_000, gt=0, validation_alias=AliasChoices("period_ms", "periodMs")
    )
    step: float = 1.0
    lag_ms: float = Field(default=0, ge=0, validation_alias=AliasChoices("lag_ms", "lagMs"))


@dataclass(slots=True)
class SimulatedDevice:
    """The simulated registers of one device; tests may set ``values`` and ``online``."""

    values: dict[str, Value] = field(default_factory=dict)
    online: bool = True
    pending: dict[str, tuple[Value, float]] = field(default_factory=dict)
    writes: list[tuple[str, Value]] = field(default_factory=list)
    reads: int = 0


class SimulatedWorld:
    """Every simulated device of the process, by device id (``namespace/name``)."""

    def __init__(self) -> None:
        self.devices: dict[str, SimulatedDevice] = {}

    def device(self, device_id: str) -> SimulatedDevice:
        return self.devices.setdefault(device_id, SimulatedDevice())

    def reset(self) -> None:
        self.devices.clear()


def _typed(raw: float | bool | str, ptype: PropertyType) -> Value:
    if ptype is PropertyType.INT:
        return round(float(raw))
    if ptype is PropertyType.BOOLEAN:
        return raw if isinstance(raw, bool) else str(raw).lower() in {"1", "true", "on"}
    if ptype in (PropertyType.STRING, PropertyType.BYTES):
        return str(raw)
    return float(raw)


class _Rng:
    """A seeded 64-bit LCG (Knuth's MMIX constants): reproducible walks in 8 bytes of state.

    ``random.Random`` keeps 2.5 KB of Mersenne-Twister state, which is a third of a simulated
    device's memory in a 10,000-device run; a simulation does not need its quality.
    """

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK64

    def uniform(self, low: float, high: float) -> float:
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & _MASK64
        return low + (high - low) * ((self.state >> 11) / 9007199254740992.0)  # 53 bits


_MASK64 = (1 << 64) - 1
_FLOATS = (PropertyType.FLOAT, PropertyType.DOUBLE)


class VirtualDriver(Driver[VirtualProtocolConfig, VirtualVisitorConfig]):
    """Simulates devices; no I/O."""

    protocol = "virtual"
    protocol_config_model = VirtualProtocolConfig
    visitor_config_model = VirtualVisitorConfig

    world = SimulatedWorld()

    def __init__(self, device: BoundDevice) -> None:
        super().__init__(device)
        self._sim = self.world.device(device.ref.id)
        # A stable per-device seed: hash() of a str changes between processes.
        self._rng = _Rng(self.config.seed or zlib.crc32(device.ref.id.encode()))
        self._epoch = time.monotonic()
        self._latency_s = self.config.latency_ms / 1000
        self._fail_every = self.config.fail_every

    async def connect(self) -> None:
        await self._latency()
        if not self._sim.online:
            raise DeviceConnectError(f"simulated device {self.device.ref} is offline")

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        sim = self._sim
        if not sim.online:
            raise DeviceConnectError(f"simulated device {self.device.ref} went offline")
        sim.reads += 1
        every = self._fail_every
        if every and sim.reads % every == 0:
            raise DeviceTimeoutError(f"simulated timeout (read {sim.reads})")
        next_value = self._next
        return [next_value(point) for point in points]

    async def write(self, point: BoundProperty, value: Value) -> None:
        await self._latency()
        if not self._sim.online:
            raise DeviceConnectError(f"simulated device {self.device.ref} went offline")
        lag = self.visitor(point).lag_ms / 1000
        self._sim.writes.append((point.name, value))
        if lag:
            self._sim.pending[point.name] = (value, time.monotonic() + lag)
        else:
            self._sim.values[point.name] = value

    def _next(self, point: BoundProperty) -> Value:
        visitor: VirtualVisitorConfig = point.visitor  # type: ignore[assignment]
        name = point.name
        sim = self._sim
        if sim.pending:  # written values still on their way (lag_ms)
            pending = sim.pending.get(name)
            if pending is not None and time.monotonic() >= pending[1]:
                sim.values[name] = pending[0]
                del sim.pending[name]
        current = sim.values.get(name)
        kind = visitor.kind
        if current is None:
            current = _typed(
                visitor.value if visitor.value is not None else visitor.min, point.type
            )
        elif kind == "random_walk" and point.type in _FLOATS:  # the benchmarks' hot path
            nxt = float(current) + self._rng.uniform(-visitor.step, visitor.step)
            current = float(round(min(visitor.max, max(visitor.min, nxt)), 3))
        elif kind == "counter":
            nxt = float(current) + visitor.step
            current = _typed(visitor.min if nxt > visitor.max else nxt, point.type)
        elif kind == "random_walk":
            nxt = float(current) + self._rng.uniform(-visitor.step, visitor.step)
            current = _typed(round(min(visitor.max, max(visitor.min, nxt)), 3), point.type)
        elif kind == "sine":
            phase = 2 * math.pi * (time.monotonic() - self._epoch) * 1000 / visitor.period_ms
            mid, amp = (visitor.max + visitor.min) / 2, (visitor.max - visitor.min) / 2
            current = _typed(round(mid + amp * math.sin(phase), 3), point.type)
        sim.values[name] = current
        return current

    async def _latency(self) -> None:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
