"""``EventHub``: fans device updates out to server-sent-events clients, and ``TapBus`` feeds it.

``TapBus`` wraps the runtime's real bus: every report and state goes to the real bus first,
then to the hub. The hub does nothing at all while nobody listens, so 10,000 devices cost one
attribute check per report. Each client has its own bounded queue: a slow client loses its
oldest events (counted per client and in total), never slows the devices or other clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mapper_sdk import BoundDevice, DeviceRef, DeviceState, EventBus, TwinReport
from mapper_sdk.bus import DesiredHandler


@dataclass(slots=True)
class Event:
    """One update: ``kind`` is ``twins``, ``state`` or ``devices`` (the set changed)."""

    kind: str
    data: dict[str, Any]


@dataclass(eq=False, slots=True)
class Subscriber:
    """One client's queue; ``device`` limits it to one device id."""

    queue: asyncio.Queue[Event]
    device: str | None = None
    dropped: int = 0


class EventHub:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.dropped_total = 0
        self.published_total = 0

    def subscribe(self, device: str | None = None) -> Subscriber:
        subscriber = Subscriber(asyncio.Queue(self.queue_size), device)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def publish(self, device: str | None, make: Callable[[], Event]) -> None:
        """Queue the event built by ``make`` (built only if someone listens) for each client."""
        if not self.subscribers:
            return
        event = make()
        self.published_total += 1
        for subscriber in self.subscribers:
            if subscriber.device is not None and device is not None and subscriber.device != device:
                continue
            queue = subscriber.queue
            if queue.full():
                queue.get_nowait()  # drop the oldest: the newest value is what a dashboard needs
                subscriber.dropped += 1
                self.dropped_total += 1
            queue.put_nowait(event)


def twins_event(report: TwinReport) -> Event:
    return Event(
        "twins",
        {
            "device": report.ref.id,
            "timestamp": report.timestamp_ms,
            "values": {twin.name: twin.value for twin in report.twins},
        },
    )


class TapBus:
    """An ``EventBus`` that forwards everything to ``inner`` and copies updates to ``hub``."""

    def __init__(self, inner: EventBus, hub: EventHub) -> None:
        self.inner = inner
        self.hub = hub

    async def start(self, on_desired: DesiredHandler) -> None:
        await self.inner.start(on_desired)

    def publish_twins(self, report: TwinReport) -> None:
        self.inner.publish_twins(report)
        if self.hub.subscribers:
            self.hub.publish(report.ref.id, lambda: twins_event(report))

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        self.inner.publish_state(ref, state, timestamp_ms)
        if self.hub.subscribers:
            data = {"device": ref.id, "state": state.value, "timestamp": timestamp_ms}
            self.hub.publish(ref.id, lambda: Event("state", data))

    def device_added(self, device: BoundDevice) -> None:
        self.inner.device_added(device)
        if self.hub.subscribers:
            data = {"device": device.ref.id, "change": "added"}
            self.hub.publish(None, lambda: Event("devices", data))

    def device_removed(self, ref: DeviceRef) -> None:
        self.inner.device_removed(ref)
        if self.hub.subscribers:
            data = {"device": ref.id, "change": "removed"}
            self.hub.publish(None, lambda: Event("devices", data))

    async def aclose(self) -> None:
        await self.inner.aclose()
