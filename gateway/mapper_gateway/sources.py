"""``DeviceSources``: several sources of devices feeding one ``MapperRuntime``.

The gateway runs devices from a YAML directory and from EdgeCore (one DMI link per protocol)
in one runtime. ``MapperRuntime.apply`` makes the running set equal to what it is given, so a
source must never call it with only its own devices: it would stop everybody else's. Each
source instead replaces *its* set here, and the union is applied (a diff by fingerprint, so
unchanged devices are untouched). When two sources name the same device, the source
registered first keeps it and the conflict is reported once.

``SourceView`` is what a ``DmiLink`` is attached to instead of the runtime: it offers the few
runtime members the link uses, scoped to that link's devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from mapper_sdk import ApplyResult, BoundDevice, DeviceRef, MapperRuntime, Registry
from mapper_sdk._supervisor import DeviceSupervisor

log = logging.getLogger("mapper_gateway")


class DeviceSources:
    """Built before the runtime (the runtime's bus routes by ``owner``); ``attach`` it after."""

    def __init__(self) -> None:
        self._runtime: MapperRuntime | None = None
        self._sets: dict[str, dict[DeviceRef, BoundDevice]] = {}
        self.owner: dict[DeviceRef, str] = {}
        self.conflicts: dict[DeviceRef, tuple[str, str]] = {}
        self.last_apply: ApplyResult | None = None
        self._lock = asyncio.Lock()

    def attach(self, runtime: MapperRuntime) -> None:
        self._runtime = runtime

    @property
    def runtime(self) -> MapperRuntime:
        if self._runtime is None:
            raise RuntimeError("DeviceSources.attach(runtime) was not called")
        return self._runtime

    def register(self, source: str) -> None:
        """Declare a source; earlier sources win conflicts."""
        self._sets.setdefault(source, {})

    async def replace(self, source: str, devices: Iterable[BoundDevice]) -> ApplyResult:
        """Make ``source``'s devices equal to ``devices`` and apply the union."""
        async with self._lock:
            self._sets.setdefault(source, {})
            self._sets[source] = {device.ref: device for device in devices}
            merged = self._merge()
            self.last_apply = await self.runtime.apply(merged)
            return self.last_apply

    def _merge(self) -> list[BoundDevice]:
        merged: dict[DeviceRef, BoundDevice] = {}
        owner: dict[DeviceRef, str] = {}
        conflicts: dict[DeviceRef, tuple[str, str]] = {}
        for source, devices in self._sets.items():
            for ref, device in devices.items():
                if ref in merged:
                    conflicts[ref] = (owner[ref], source)
                    continue
                merged[ref] = device
                owner[ref] = source
        for ref, (kept, ignored) in conflicts.items():
            if self.conflicts.get(ref) != (kept, ignored):
                log.error(
                    "device %s comes from %s and from %s; %s is ignored",
                    ref,
                    kept,
                    ignored,
                    ignored,
                )
        self.owner, self.conflicts = owner, conflicts
        return list(merged.values())

    def devices_of(self, source: str) -> list[DeviceRef]:
        return [ref for ref, owner in self.owner.items() if owner == source]

    def view(self, source: str) -> SourceView:
        self.register(source)
        return SourceView(self, source)


class SourceView:
    """The slice of the runtime that one source (a ``DmiLink``) sees and changes."""

    def __init__(self, sources: DeviceSources, source: str) -> None:
        self._sources = sources
        self.source = source

    @property
    def registry(self) -> Registry:
        return self._sources.runtime.registry

    @property
    def devices(self) -> dict[DeviceRef, DeviceSupervisor]:
        running = self._sources.runtime.devices
        return {
            ref: running[ref] for ref in self._sources.devices_of(self.source) if ref in running
        }

    def supervisor(self, ref: DeviceRef) -> DeviceSupervisor | None:
        if self._sources.owner.get(ref) != self.source:
            return None
        return self._sources.runtime.supervisor(ref)

    async def apply(self, devices: Iterable[BoundDevice]) -> ApplyResult:
        return await self._sources.replace(self.source, devices)

    async def remove(self, ref: DeviceRef) -> bool:
        if self._sources.owner.get(ref) != self.source:
            return False
        return await self._sources.runtime.remove(ref)
