"""The runtime's side of the link to EdgeCore: what it sends and what it receives.

The runtime hands finished reports to an ``EventBus`` and receives desired values through the
``DesiredHandler`` it gives the bus. Implementations: ``MemoryBus`` (tests and embedding),
``ConsoleBus`` (``mapper-sdk run`` without a broker); the MQTT event bus and DMI gRPC links
implement the same protocol.

Publishing must never block polling: an implementation queues (bounded, counting drops) and
returns at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mapper_sdk.binding import BoundDevice, DeviceRef
from mapper_sdk.driver import DeviceState


@dataclass(frozen=True, slots=True)
class TwinValue:
    """One property in a report: its twin string, twin type and the desired value, if any."""

    name: str
    value: str
    type: str
    desired: str | None = None


@dataclass(frozen=True, slots=True)
class TwinReport:
    """Every property of one device reported in one cycle: one message on the wire.

    ``twins`` go to EdgeCore; ``local`` holds values of properties with ``reportToCloud:
    false`` that still have a ``pushMethod``: sinks get both, buses only ``twins``.
    """

    ref: DeviceRef
    timestamp_ms: int
    twins: tuple[TwinValue, ...]
    local: tuple[TwinValue, ...] = ()


class WriteStatus(StrEnum):
    """How a desired value ended."""

    APPLIED = "applied"
    PENDING = "pending"
    REFUSED = "refused"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DesiredChange:
    """A desired value for one property, from any source (twin delta, DMI, REST, spec)."""

    ref: DeviceRef
    property: str
    value: str
    source: str = "api"
    version: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The answer to a ``DesiredChange``; ``reason`` is a short code when not applied."""

    status: WriteStatus
    message: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.APPLIED


DesiredHandler = Callable[[DesiredChange], Awaitable[WriteResult]]
"""The runtime's single write path, given to the bus so desired values flow back into it."""


class EventBus(Protocol):
    """A link that carries reports to EdgeCore (or elsewhere) and desired values back."""

    async def start(self, on_desired: DesiredHandler) -> None:
        """Connect (or start connecting in the background) and begin delivering desired values."""

    def publish_twins(self, report: TwinReport) -> None:
        """Queue one device's report; never blocks."""

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        """Queue a device state change or heartbeat; never blocks."""

    def device_added(self, device: BoundDevice) -> None:
        """A device started: subscribe to its topics, ask for its twin."""

    def device_removed(self, ref: DeviceRef) -> None:
        """A device stopped: drop its subscriptions."""

    async def aclose(self) -> None:
        """Flush what can be flushed within a short deadline and disconnect."""


__all__ = [
    "DesiredChange",
    "DesiredHandler",
    "EventBus",
    "TwinReport",
    "TwinValue",
    "WriteResult",
    "WriteStatus",
]
