"""A bus that prints what would go to EdgeCore: ``topic payload``, one line per message.

Used by ``mapper-sdk run`` when no broker is configured, so the output shows the exact MQTT
topics and JSON a real EdgeCore would receive. Desired values never arrive on it.
"""

from __future__ import annotations

import sys
from typing import TextIO

from mapper_sdk.binding import BoundDevice, DeviceRef
from mapper_sdk.bus import DesiredHandler, TwinReport, messages, topics
from mapper_sdk.driver import DeviceState


class ConsoleBus:
    """An ``EventBus`` writing each message to ``stream`` instead of a broker."""

    def __init__(
        self, stream: TextIO | None = None, style: topics.IdStyle = topics.IdStyle.NAMESPACED
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.style = style
        self.printed = 0

    async def start(self, on_desired: DesiredHandler) -> None:
        return None

    def publish_twins(self, report: TwinReport) -> None:
        ref = report.ref
        payload = messages.build_twin_report(
            {t.name: (t.value, t.type) for t in report.twins}, timestamp=report.timestamp_ms
        )
        self._print(topics.twin_update(ref.namespace, ref.name, self.style), payload)

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        payload = messages.build_state_update(state.value, timestamp=timestamp_ms)
        self._print(topics.state_update(ref.namespace, ref.name, self.style), payload)

    def device_added(self, device: BoundDevice) -> None:
        return None

    def device_removed(self, ref: DeviceRef) -> None:
        return None

    async def aclose(self) -> None:
        self.stream.flush()

    def _print(self, topic: str, payload: bytes) -> None:
        self.stream.write(f"{topic} {payload.decode()}\n")
        self.stream.flush()
        self.printed += 1
