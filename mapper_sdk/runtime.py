"""``MapperRuntime``: runs a set of devices and connects them to an event bus.

The runtime is an async context manager. Inside it, ``apply(devices)`` reconciles the running
set with a new list as a diff: new devices start, removed ones stop, a device whose connection
or property spec changed restarts, and a device whose only change is a desired value keeps
running and gets the write. Every desired value, from any source, goes through
``submit_desired``: the single write path with the model checks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self

from mapper_sdk._registry import Registry
from mapper_sdk._scheduler import Ticker
from mapper_sdk._supervisor import DeviceSupervisor, SupervisorSettings, wall_ms
from mapper_sdk.binding import BoundDevice, DeviceRef
from mapper_sdk.bus import DesiredChange, EventBus, WriteResult, WriteStatus
from mapper_sdk.driver import DeviceState, Value
from mapper_sdk.errors import DesiredValueError, DriverError, MapperError, ValueConversionError

if TYPE_CHECKING:
    from mapper_sdk.sinks import SinkHub

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ApplyResult:
    """What ``MapperRuntime.apply`` did, by device."""

    started: list[DeviceRef] = field(default_factory=list)
    restarted: list[DeviceRef] = field(default_factory=list)
    updated: list[DeviceRef] = field(default_factory=list)
    unchanged: list[DeviceRef] = field(default_factory=list)
    stopped: list[DeviceRef] = field(default_factory=list)
    failed: dict[DeviceRef, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Running:
    supervisor: DeviceSupervisor
    task: asyncio.Task[None]
    fingerprint: str


class MapperRuntime:
    """Run devices with their drivers; report through ``bus``; take desired values back.

    Args:
        bus: where reports go and desired values come from.
        registry: the drivers to use; defaults to the installed entry points.
        settings: timeouts and backoff of every device supervisor.
        write_wait: how long ``submit_desired`` waits for the device before answering
            ``pending`` (the value stays queued until it is applied or expires).
        sinks: where ``pushMethod``/``dbMethod`` values go (``mapper_sdk.sinks.SinkHub``).
        freeze_after: seconds after an ``apply`` that started devices (they have connected
            and read by then) to ``gc.freeze()`` the heap, so the cyclic collector's full
            passes stop walking the long-lived objects of every device: with 1,000 devices
            those passes took 60-165 ms each and set the tick lateness p99 (50 ms; 5 ms
            frozen). ``None``: freeze at the end of ``apply``; a negative value: never.
            Stopping a device thaws the heap first (its objects must be collectable), and the
            next freeze runs a full collection before. An application that froze objects
            itself is left alone.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        registry: Registry | None = None,
        settings: SupervisorSettings | None = None,
        write_wait: float = 10.0,
        sinks: SinkHub | None = None,
        freeze_after: float | None = 5.0,
    ) -> None:
        self.bus = bus
        self.freeze_after = freeze_after
        self._frozen = False  # we froze the heap (and will thaw it)
        self._thawed = False  # thawed since: the next freeze collects fully first
        self._freeze_timer: asyncio.TimerHandle | None = None
        self.sinks = sinks
        self.registry = registry if registry is not None else Registry.from_entry_points()
        self.settings = settings or SupervisorSettings()
        self.write_wait = write_wait
        self._running: dict[DeviceRef, _Running] = {}
        self._ticker = Ticker()  # shared: devices on the same poll phase wake together
        self._tasks: asyncio.TaskGroup | None = None
        # apply(), remove() and shutdown never interleave: a device started by a late apply
        # could otherwise outlive the shutdown that already stopped the others.
        self._lock = asyncio.Lock()
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        await self.bus.start(self.submit_desired)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._lock:
            self._closing = True
            self._thaw()
            await self._remove_many(list(self._running))
        await self.bus.aclose()
        if self.sinks is not None:
            await self.sinks.aclose()
        assert self._tasks is not None
        await self._tasks.__aexit__(exc_type, exc, tb)
        self._tasks = None

    # -- devices ----------------------------------------------------------------------------

    @property
    def devices(self) -> dict[DeviceRef, DeviceSupervisor]:
        """The running devices' supervisors (state, stats, twin engine)."""
        return {ref: running.supervisor for ref, running in self._running.items()}

    def supervisor(self, ref: DeviceRef) -> DeviceSupervisor | None:
        running = self._running.get(ref)
        return running.supervisor if running else None

    async def apply(self, devices: Iterable[BoundDevice]) -> ApplyResult:
        """Make the running set equal to ``devices``, touching only what changed."""
        result = ApplyResult()
        wanted = {device.ref: device for device in devices}
        async with self._lock:
            gone = [r for r in self._running if r not in wanted]
            await self._remove_many(gone)
            result.stopped.extend(gone)
            prints = {ref: device.fingerprint() for ref, device in wanted.items()}
            # Devices to restart are stopped together too, before anything starts.
            restart = [
                ref
                for ref, running in self._running.items()
                if ref in wanted and running.fingerprint != prints[ref]
            ]
            await self._remove_many(restart)
            restarting = set(restart)
            for ref, device in wanted.items():
                await self._apply_one(device, prints[ref], result, ref in restarting)
            if result.started or result.restarted:
                self._schedule_freeze()
        return result

    # -- the heap ---------------------------------------------------------------------------

    def _schedule_freeze(self) -> None:
        if self.freeze_after is not None and self.freeze_after < 0:
            return
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        if self.freeze_after is None:
            self._freeze()
        else:
            loop = asyncio.get_running_loop()
            self._freeze_timer = loop.call_later(self.freeze_after, self._freeze)

    def _freeze(self) -> None:
        self._freeze_timer = None
        if self._closing or (gc.get_freeze_count() and not self._frozen):
            return  # stopping, or the application froze objects itself
        # Garbage frozen now would never be collected: young garbage always goes first, and
        # after a thaw (devices were stopped) everything, the stopped devices' cycles too.
        gc.collect(2 if self._thawed else 1)
        gc.freeze()
        self._frozen = True

    def _thaw(self) -> None:
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        if self._frozen:
            gc.unfreeze()
            self._frozen, self._thawed = False, True

    async def _apply_one(
        self, device: BoundDevice, fingerprint: str, result: ApplyResult, restarting: bool
    ) -> None:
        running = self._running.get(device.ref)
        if running is None:
            if self._start(device, fingerprint, result):
                (result.restarted if restarting else result.started).append(device.ref)
        elif self._desired_changed(running.supervisor.device, device):
            running.supervisor.device = device
            for point in device.properties:
                if point.desired is not None and point.desired.value != "":
                    await self._submit(
                        DesiredChange(device.ref, point.name, point.desired.value, "spec"),
                        wait=False,
                    )
            result.updated.append(device.ref)
        else:
            result.unchanged.append(device.ref)

    @staticmethod
    def _desired_changed(old: BoundDevice, new: BoundDevice) -> bool:
        def desired(device: BoundDevice) -> list[str | None]:
            return [p.desired.value if p.desired else None for p in device.properties]

        return desired(old) != desired(new)

    def add(self, device: BoundDevice) -> bool:
        """Start one device; ``False`` (and logged) if its protocol has no usable driver."""
        return self._start(device, device.fingerprint(), ApplyResult())

    def _start(self, device: BoundDevice, fingerprint: str, result: ApplyResult) -> bool:
        if self._tasks is None or self._closing:
            raise MapperError("MapperRuntime is not running: use 'async with MapperRuntime(...)'")
        driver_cls = self.registry.get(device.protocol)
        if driver_cls is None:
            reason = self.registry.why_unavailable(device.protocol)
            log.error("device %s not started: %s", device.ref, reason)
            result.failed[device.ref] = reason
            return False
        supervisor = DeviceSupervisor(
            device, driver_cls, self.bus, self.settings, self.sinks, self._ticker
        )
        task = self._tasks.create_task(supervisor.run(), name=f"device {device.ref}")
        self._running[device.ref] = _Running(supervisor, task, fingerprint)
        self.bus.device_added(device)
        if self.sinks is not None:
            self.sinks.add_device(device)
        return True

    async def remove(self, ref: DeviceRef) -> bool:
        """Stop one device, close its driver and report it offline."""
        async with self._lock:
            return await self._remove(ref)

    async def _remove(self, ref: DeviceRef) -> bool:
        return await self._remove_many([ref]) == 1

    async def _remove_many(self, refs: Iterable[DeviceRef]) -> int:
        """Stop devices together: all cancelled first, then awaited at once. One by one,
        each await would wait a loop turn shared with every device still polling, and
        stopping 10,000 devices took over a minute."""
        stopping = [(ref, r) for ref in refs if (r := self._running.pop(ref, None)) is not None]
        if stopping:
            self._thaw()
        for _, running in stopping:
            running.task.cancel()
        await asyncio.gather(*(running.task for _, running in stopping), return_exceptions=True)
        for ref, running in stopping:
            running.supervisor.close_pending(f"device {ref} was removed")
            self.bus.publish_state(ref, DeviceState.OFFLINE, wall_ms())
            self.bus.device_removed(ref)
            if self.sinks is not None:
                self.sinks.remove_device(ref)
        if stopping and self._running and not self._closing:
            self._schedule_freeze()  # the devices left: frozen again, after a full collection
        return len(stopping)

    # -- the single write path ------------------------------------------------------------

    async def submit_desired(self, change: DesiredChange) -> WriteResult:
        """Check a desired value against the model and apply it; answer how it ended."""
        return await self._submit(change, wait=True)

    async def _submit(self, change: DesiredChange, *, wait: bool) -> WriteResult:
        supervisor = self.supervisor(change.ref)
        if supervisor is None:
            return WriteResult(WriteStatus.REFUSED, f"no device {change.ref}", "unknown_device")
        try:
            decision = supervisor.engine.check_desired(
                change.property, change.value, change.version
            )
        except DesiredValueError as exc:
            return WriteResult(WriteStatus.REFUSED, str(exc), exc.reason)
        except ValueConversionError as exc:
            return WriteResult(WriteStatus.REFUSED, str(exc), "bad_type")
        future = supervisor.submit(decision)
        if not wait:
            return WriteResult(WriteStatus.PENDING, "queued", "pending")
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.write_wait)
        except TimeoutError:
            return WriteResult(
                WriteStatus.PENDING,
                f"device {change.ref} is {supervisor.state}; the value is queued and is written "
                "when the device answers",
                "pending",
            )

    async def read_live(self, ref: DeviceRef, name: str) -> Value | DriverError:
        """Read a property from the device now."""
        supervisor = self.supervisor(ref)
        if supervisor is None:
            return DriverError(f"no device {ref}")
        return await supervisor.read_now(name)
