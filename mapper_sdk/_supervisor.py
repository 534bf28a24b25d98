"""One supervisor per device: its own failure domain.

The supervisor owns the device's connection: connect, poll on schedule, apply writes, follow
pushed values, and on failure close, back off (capped, full jitter) and reconnect. Nothing a
device does escapes its ``run`` coroutine, so a dead or slow device never stalls the others.
Failures are logged once on the way down and once on recovery.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mapper_sdk._backoff import Backoff
from mapper_sdk._scheduler import Schedule, Ticker, phase_offset
from mapper_sdk._twin import TwinEngine, WriteDecision
from mapper_sdk.binding import BoundDevice, BoundProperty
from mapper_sdk.bus import EventBus, TwinReport, WriteResult, WriteStatus
from mapper_sdk.driver import AnyDriver, DeviceState, DriverClass, Value
from mapper_sdk.errors import DeviceConnectError, DriverError

if TYPE_CHECKING:
    from mapper_sdk.sinks import SinkHub

log = logging.getLogger("mapper_sdk.device")


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """Timeouts and limits of a device supervisor (seconds unless named otherwise)."""

    connect_timeout: float = 10.0
    read_timeout: float = 5.0
    write_timeout: float = 5.0
    close_timeout: float = 2.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_read_failures: int = 3
    """Consecutive failed reads after which the connection is dropped and re-opened."""
    desired_ttl: float = 300.0
    """How long a desired value waits for an offline device before it expires."""
    phase_step: float = 0.01
    """Devices' poll phases are multiples of this (at most an eighth of the period), so the
    devices of one phase share a wake-up (``_scheduler.Ticker``); 0 spreads them freely."""


@dataclass(slots=True)
class _Pending:
    decision: WriteDecision
    future: asyncio.Future[WriteResult]
    expires_at: float


LATENESS_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, math.inf)
"""Upper bounds of the tick-lateness histogram buckets, in milliseconds."""

READ_RTT_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, math.inf)
"""Upper bounds of the read round-trip-time histogram buckets, in milliseconds."""


@dataclass(slots=True)
class DeviceStats:
    """Counters of one device, read by metrics and tests."""

    reads: int = 0
    read_errors: int = 0
    reports: int = 0
    writes_applied: int = 0
    writes_failed: int = 0
    writes_expired: int = 0
    connects: int = 0
    connect_failures: int = 0
    last_read_ms: float = 0.0
    lateness: list[int] = field(default_factory=lambda: [0] * len(LATENESS_BUCKETS_MS))
    """Tick starts per lateness bucket (see ``LATENESS_BUCKETS_MS``): the scheduler's jitter."""
    read_rtt: list[int] = field(default_factory=lambda: [0] * len(READ_RTT_BUCKETS_MS))
    """Successful driver reads per round-trip-time bucket (see ``READ_RTT_BUCKETS_MS``)."""
    read_rtt_sum_ms: float = 0.0

    def record_lateness(self, late_ms: float) -> None:
        self.lateness[bisect.bisect_left(LATENESS_BUCKETS_MS, late_ms)] += 1

    def record_read(self, rtt_ms: float) -> None:
        self.reads += 1
        self.last_read_ms = rtt_ms
        self.read_rtt_sum_ms += rtt_ms
        self.read_rtt[bisect.bisect_left(READ_RTT_BUCKETS_MS, rtt_ms)] += 1


class DeviceSupervisor:
    """Runs one device until cancelled. Create with the bound device and its driver class."""

    def __init__(
        self,
        device: BoundDevice,
        driver_cls: DriverClass,
        bus: EventBus,
        settings: SupervisorSettings,
        sinks: SinkHub | None = None,
        ticker: Ticker | None = None,
    ) -> None:
        self.device = device
        self.sinks = sinks
        self.driver_cls = driver_cls
        self.bus = bus
        self.settings = settings
        self.engine = TwinEngine(device)
        self.state = DeviceState.UNKNOWN
        self.last_error: str | None = None
        self.stats = DeviceStats()
        self.schedule = Schedule()
        self._driver: AnyDriver | None = None
        self._lock = asyncio.Lock()  # one driver call at a time; FIFO, so writes wait <= 1 read
        self._inbox: dict[str, _Pending] = {}  # latest desired value wins, per property
        # While connected: the session's task group, and the write task when values are
        # queued. The writer runs only while the inbox has values (a task per device in a
        # 10,000-device fleet costs ~1 KB each, for writes most devices never get).
        self._group: asyncio.TaskGroup | None = None
        self._writer: asyncio.Task[None] | None = None
        self._backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self._ticker = ticker if ticker is not None else Ticker()
        # The read timeout without a timer per read (see _read): the task reading now, when
        # its read times out, and the one timer that checks it.
        self._reader: asyncio.Task[object] | None = None
        self._read_deadline = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_timed_out = False
        self._reader_cancelling = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, work, and reconnect forever; returns only by cancellation."""
        while True:
            try:
                await self._session()
            except Exception as exc:  # the failure domain: nothing escapes a device
                self._went_down(exc)
            self._set_state(DeviceState.OFFLINE)
            delay = self._backoff.next()
            self._expire_pending(asyncio.get_running_loop().time() + delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        driver = self.driver_cls(self.device)
        try:
            await self._connect(driver)
            self._driver = driver
            self._came_up()
            for decision in self.engine.pending_desired():
                if decision.point.name not in self._inbox:  # a queued write keeps its caller
                    self._enqueue(decision, asyncio.get_running_loop().create_future())
            await self._work(driver)
        finally:
            self._driver = None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.close_timeout):
                    await driver.aclose()

    async def _connect(self, driver: AnyDriver) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await driver.connect()
        except TimeoutError as exc:
            self.stats.connect_failures += 1
            raise DeviceConnectError(
                f"no connection within {self.settings.connect_timeout} s"
            ) from exc
        except BaseException:
            self.stats.connect_failures += 1
            raise
        self.stats.connects += 1

    async def _work(self, driver: AnyDriver) -> None:
        pushed = [p for p in self.device.properties if driver.is_pushed(p)]
        polled = tuple(p for p in self.device.properties if p not in pushed)
        loop = asyncio.get_running_loop()
        period = min((p.collect_cycle_ms for p in polled), default=1000) / 1000
        start = loop.time()
        offset = phase_offset(start, period, self.settings.phase_step, random.random())
        self.schedule = Schedule.build(polled, start, offset)
        try:
            # The poll loop runs in this (the supervisor's) task: the group's other tasks exist
            # only when the device needs them, and a failure in any ends the session.
            async with asyncio.TaskGroup() as tg:
                self._group = tg
                if pushed:
                    tg.create_task(
                        driver.subscribe(pushed, self._on_push), name=f"push {self.device.ref}"
                    )
                if self.device.state_report_to_cloud:
                    tg.create_task(self._state_loop(), name=f"state {self.device.ref}")
                self._start_writer()
                await self._poll_loop(driver)
        except BaseExceptionGroup as group:
            # One loop failed and took its siblings down with it: surface the root cause.
            raise group.exceptions[0] from None
        finally:
            self._group = None

    def _came_up(self) -> None:
        self._set_state(DeviceState.ONLINE)

    def _recovered(self) -> None:
        # Recovery means a good read, not just a connect: a device that accepts connections
        # but fails every read must not log "back online" on every reconnect.
        if self.last_error is not None:
            log.info("device %s is back online", self.device.ref)
            self.last_error = None
        self._backoff.reset()

    def _went_down(self, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        if self.last_error is None:
            if isinstance(exc, DriverError):
                log.warning("device %s went offline: %s", self.device.ref, message)
            else:
                log.exception("device %s failed unexpectedly", self.device.ref, exc_info=exc)
        self.last_error = message

    def _set_state(self, state: DeviceState) -> None:
        if state is not self.state:
            self.state = state
            self.bus.publish_state(self.device.ref, state, wall_ms())

    # -- polling ----------------------------------------------------------------------------

    async def _poll_loop(self, driver: AnyDriver) -> None:
        loop = asyncio.get_running_loop()
        schedule, stats, wait_until = self.schedule, self.stats, self._ticker.wait_until
        failures = 0
        while True:
            deadline = schedule.next_deadline()
            await wait_until(deadline)
            now = loop.time()
            points = schedule.take_due(now)
            if not points:
                continue  # woken a hair early (float rounding): wait again
            stats.record_lateness((now - deadline) * 1000)
            try:
                results = await self._read(driver, points)
            except DeviceConnectError:
                raise
            except DriverError as exc:
                failures += 1
                self.stats.read_errors += 1
                self.last_error = str(exc) or type(exc).__name__
                self._set_state(DeviceState.UNHEALTHY)
                if failures >= self.settings.max_read_failures:
                    raise DeviceConnectError(f"{failures} reads failed in a row: {exc}") from exc
                continue
            failures = 0
            for result in results:
                if not isinstance(result, DriverError):
                    self._recovered()
                    if self.state is not DeviceState.ONLINE:
                        self._set_state(DeviceState.ONLINE)
                    break
            else:
                self._set_state(DeviceState.UNHEALTHY)
            self._publish(self.engine.on_readings(points, results, loop.time(), wall_ms()))

    async def _read(
        self, driver: AnyDriver, points: Sequence[BoundProperty]
    ) -> list[Value | DriverError]:
        # The read timeout is a deadline checked by one timer per device that is re-armed
        # only when it fires during a later read: asyncio.timeout would create and cancel a
        # timer handle per read and leave the cancelled handles in the loop's heap.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        async with self._lock:
            started = loop.time()
            self._reader, self._read_deadline = task, started + self.settings.read_timeout
            if self._read_timer is None:
                self._read_timer = loop.call_at(self._read_deadline, self._check_read)
            try:
                results = await driver.read(points)
            except asyncio.CancelledError:
                if self._read_timed_out:
                    self._read_timed_out = False
                    # Ours alone (not also a shutdown's): the same rule as asyncio.timeout.
                    if task.uncancel() <= self._reader_cancelling:
                        raise DriverError(
                            f"read timed out after {self.settings.read_timeout} s"
                        ) from None
                raise
            finally:
                self._reader = None
                if self._read_timed_out:  # the driver swallowed our cancellation: undo it
                    self._read_timed_out = False
                    task.uncancel()
        self.stats.record_read((loop.time() - started) * 1000)
        if len(results) != len(points):
            raise DriverError(f"driver returned {len(results)} values for {len(points)} points")
        return results

    def _check_read(self) -> None:
        self._read_timer = None
        task = self._reader
        if task is None:
            return  # no read in flight: the next read arms the timer again
        loop = asyncio.get_running_loop()
        if self._read_deadline > loop.time():  # a later read than the one that armed it
            self._read_timer = loop.call_at(self._read_deadline, self._check_read)
            return
        self._read_timed_out = True
        self._reader_cancelling = task.cancelling()
        task.cancel()

    def _on_push(self, point: BoundProperty, value: Value | DriverError) -> None:
        if not isinstance(value, DriverError):
            self._recovered()  # push-only devices never poll: a pushed value is the proof
        now = asyncio.get_running_loop().time()
        self._publish(self.engine.on_readings([point], [value], now, wall_ms()))

    def _publish(self, report: TwinReport | None) -> None:
        if report is None:
            return
        if report.twins:
            self.stats.reports += 1
            self.bus.publish_twins(report)
        if self.sinks is not None:
            self.sinks.submit(report)

    async def _state_loop(self) -> None:
        period = self.device.state_report_cycle_ms / 1000
        while True:
            await asyncio.sleep(period)
            self.bus.publish_state(self.device.ref, self.state, wall_ms())

    # -- writes -----------------------------------------------------------------------------

    def submit(self, decision: WriteDecision) -> asyncio.Future[WriteResult]:
        """Queue a checked desired value; the future resolves when it is applied or given up."""
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._enqueue(decision, future)
        return future

    def _enqueue(self, decision: WriteDecision, future: asyncio.Future[WriteResult]) -> None:
        name = decision.point.name
        previous = self._inbox.pop(name, None)
        if previous is not None and not previous.future.done():
            previous.future.set_result(
                WriteResult(WriteStatus.SUPERSEDED, f"replaced by {decision.text!r}", "superseded")
            )
        expires = asyncio.get_running_loop().time() + self.settings.desired_ttl
        self._inbox[name] = _Pending(decision, future, expires)
        self._start_writer()

    def _start_writer(self) -> None:
        """Start the write task if values wait, the device is connected and none runs."""
        group, driver = self._group, self._driver
        if self._writer is not None or group is None or driver is None or not self._inbox:
            return
        writes = self._write_loop(driver)
        try:
            self._writer = group.create_task(writes, name=f"write {self.device.ref}")
        except RuntimeError:  # the session is ending: the inbox is applied after the reconnect
            writes.close()

    def _expire_pending(self, now: float) -> None:
        for name, pending in list(self._inbox.items()):
            if pending.expires_at <= now:
                del self._inbox[name]
                self.stats.writes_expired += 1
                if not pending.future.done():
                    pending.future.set_result(
                        WriteResult(
                            WriteStatus.EXPIRED,
                            f"device {self.device.ref} stayed offline for "
                            f"{self.settings.desired_ttl} s",
                            "expired",
                        )
                    )

    async def _write_loop(self, driver: AnyDriver) -> None:
        """Apply the inbox until it is empty, then end (``_enqueue`` starts a new one)."""
        try:
            while self._inbox:
                batch = list(self._inbox.values())
                self._inbox.clear()
                if len(batch) > 1 and await self._apply_many(driver, batch):
                    continue
                for pending in batch:  # one at a time, so each gets its own answer
                    result = await self._apply(driver, pending)
                    if not pending.future.done():
                        pending.future.set_result(result)
        finally:
            self._writer = None

    async def _apply_many(self, driver: AnyDriver, batch: list[_Pending]) -> bool:
        """Write several desired values in one driver call (a protocol may merge them, e.g.
        Modbus FC16); False if the batch failed and must be retried value by value."""
        writes = [(p.decision.point, p.decision.value) for p in batch]
        try:
            async with self._lock, asyncio.timeout(self.settings.write_timeout):
                await driver.write_many(writes)
        except DeviceConnectError:
            for pending in batch:  # keep them for after the reconnect unless newer ones came
                self._inbox.setdefault(pending.decision.point.name, pending)
            raise
        except (DriverError, TimeoutError):
            return False
        self.stats.writes_applied += len(batch)
        points = [p.decision.point for p in batch]
        with contextlib.suppress(DriverError):  # read-back is best effort; the writes landed
            results = await self._read(driver, points)
            loop = asyncio.get_running_loop()
            self._publish(self.engine.on_readings(points, results, loop.time(), wall_ms()))
        for pending in batch:
            decision = pending.decision
            if not pending.future.done():
                pending.future.set_result(
                    WriteResult(WriteStatus.APPLIED, f"{decision.point.name} = {decision.text}")
                )
        return True

    async def _apply(self, driver: AnyDriver, pending: _Pending) -> WriteResult:
        decision = pending.decision
        point = decision.point
        try:
            async with self._lock, asyncio.timeout(self.settings.write_timeout):
                await driver.write(point, decision.value)
        except DeviceConnectError:
            # Keep the value for after the reconnect unless something newer arrived meanwhile.
            self._inbox.setdefault(point.name, pending)
            raise
        except (DriverError, TimeoutError) as exc:
            self.stats.writes_failed += 1
            return WriteResult(WriteStatus.FAILED, str(exc) or type(exc).__name__, "device_error")
        self.stats.writes_applied += 1
        with contextlib.suppress(DriverError):  # read-back is best effort; the write landed
            results = await self._read(driver, [point])
            loop = asyncio.get_running_loop()
            self._publish(self.engine.on_readings([point], results, loop.time(), wall_ms()))
        return WriteResult(WriteStatus.APPLIED, f"{point.name} = {decision.text}")

    async def read_now(self, name: str) -> Value | DriverError:
        """Read one property immediately (REST ``?live=true``)."""
        point = self.device.property(name)
        driver = self._driver
        if point is None:
            return DriverError(f"no property {name!r}")
        if driver is None:
            return DeviceConnectError(f"device {self.device.ref} is {self.state}")
        results = await self._read(driver, [point])
        loop = asyncio.get_running_loop()
        self._publish(self.engine.on_readings([point], results, loop.time(), wall_ms()))
        return results[0]

    def close_pending(self, reason: str) -> None:
        """Answer every queued desired value; called when the device is removed."""
        for pending in self._inbox.values():
            if not pending.future.done():
                pending.future.set_result(WriteResult(WriteStatus.FAILED, reason, "removed"))
        self._inbox.clear()
