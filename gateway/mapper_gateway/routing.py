"""``RoutingBus``: one ``EventBus`` in front of the MQTT bus and the DMI links.

Every device's reports go to the broadcast buses (the MQTT event bus: edge applications and
EdgeCore's event bus see every device), and also to the one link that owns the device, if
any: a device EdgeCore sent over DMI for protocol P is reported back over P's DMI link, and
only there, because EdgeCore answers NOT_FOUND for devices it does not know.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from mapper_sdk import BoundDevice, DeviceRef, DeviceState, EventBus, TwinReport
from mapper_sdk.bus import DesiredHandler

OwnerOf = Callable[[DeviceRef], "str | None"]
"""The name of the source that owns a device (see ``sources.DeviceSources.owner``)."""


class RoutingBus:
    def __init__(
        self,
        broadcast: Sequence[EventBus],
        owned: Mapping[str, EventBus],
        owner_of: OwnerOf,
    ) -> None:
        self.broadcast = list(broadcast)
        self.owned = dict(owned)
        self._owner_of = owner_of
        self._routes: dict[DeviceRef, EventBus] = {}

    @property
    def children(self) -> list[EventBus]:
        return [*self.broadcast, *self.owned.values()]

    async def start(self, on_desired: DesiredHandler) -> None:
        for bus in self.children:
            await bus.start(on_desired)

    def publish_twins(self, report: TwinReport) -> None:
        for bus in self.broadcast:
            bus.publish_twins(report)
        route = self._routes.get(report.ref)
        if route is not None:
            route.publish_twins(report)

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        for bus in self.broadcast:
            bus.publish_state(ref, state, timestamp_ms)
        route = self._routes.get(ref)
        if route is not None:
            route.publish_state(ref, state, timestamp_ms)

    def device_added(self, device: BoundDevice) -> None:
        for bus in self.broadcast:
            bus.device_added(device)
        owner = self._owner_of(device.ref)
        route = self.owned.get(owner) if owner is not None else None
        if route is not None:
            self._routes[device.ref] = route
            route.device_added(device)

    def device_removed(self, ref: DeviceRef) -> None:
        for bus in self.broadcast:
            bus.device_removed(ref)
        route = self._routes.pop(ref, None)
        if route is not None:
            route.device_removed(ref)

    async def aclose(self) -> None:
        # Links flush within their own deadlines; closing them together bounds the wait.
        await asyncio.gather(*(bus.aclose() for bus in self.children), return_exceptions=True)
