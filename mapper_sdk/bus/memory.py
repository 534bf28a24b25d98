"""An in-memory event bus: records what the runtime publishes; tests send desired values."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from mapper_sdk.binding import BoundDevice, DeviceRef
from mapper_sdk.bus import DesiredChange, DesiredHandler, TwinReport, WriteResult, WriteStatus
from mapper_sdk.driver import DeviceState


class MemoryBus:
    """An ``EventBus`` that keeps the last ``max_records`` reports and states in memory.

    ``dropped`` counts records that fell off the bounded history.
    """

    def __init__(self, max_records: int = 100_000) -> None:
        self.reports: deque[TwinReport] = deque(maxlen=max_records)
        self.states: deque[tuple[DeviceRef, DeviceState, int]] = deque(maxlen=max_records)
        self.devices: set[DeviceRef] = set()
        self.dropped = 0
        self._on_desired: DesiredHandler | None = None
        self._changed = asyncio.Event()
        self.closed = False

    async def start(self, on_desired: DesiredHandler) -> None:
        self._on_desired = on_desired

    def publish_twins(self, report: TwinReport) -> None:
        self.dropped += len(self.reports) == self.reports.maxlen
        self.reports.append(report)
        self._changed.set()

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        self.dropped += len(self.states) == self.states.maxlen
        self.states.append((ref, state, timestamp_ms))
        self._changed.set()

    def device_added(self, device: BoundDevice) -> None:
        self.devices.add(device.ref)

    def device_removed(self, ref: DeviceRef) -> None:
        self.devices.discard(ref)

    async def aclose(self) -> None:
        self.closed = True

    # -- for tests ----------------------------------------------------------------------

    async def send_desired(
        self,
        ref: DeviceRef,
        prop: str,
        value: str,
        *,
        source: str = "test",
        version: int | None = None,
    ) -> WriteResult:
        """Deliver a desired value the way a link would (EdgeCore delta, DMI update)."""
        if self._on_desired is None:
            return WriteResult(WriteStatus.REFUSED, "bus not started", "not_started")
        return await self._on_desired(DesiredChange(ref, prop, value, source, version))

    def latest(self, ref: DeviceRef, prop: str) -> str | None:
        """The last reported twin value of ``prop``, or ``None``."""
        for report in reversed(self.reports):
            if report.ref == ref:
                for twin in report.twins:
                    if twin.name == prop:
                        return twin.value
        return None

    def state_of(self, ref: DeviceRef) -> DeviceState | None:
        for state_ref, state, _ in reversed(self.states):
            if state_ref == ref:
                return state
        return None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` is true, re-checking after every publish."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
