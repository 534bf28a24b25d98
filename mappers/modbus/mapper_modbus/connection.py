"""Shared Modbus links: one connection and one bus scheduler per endpoint or serial port.

Devices that name the same TCP endpoint or the same serial port are different unit ids behind
one physical link, so they share one ``Link`` from the ``LinkPool`` (ref-counted, one pool per
event loop). The link's scheduler owns everything about the wire:

- two queues, writes ahead of polls (FIFO within each);
- at most ``maxInFlight`` requests outstanding, one per connection (``Channel``); 1 on a
  serial bus, which carries one transaction at a time. Many devices handle one request per
  connection at a time (pymodbus's own server among them), so requests are never pipelined;
- driven by events, not tasks: ``submit`` sends at once when a connection is idle, and each
  answer sends the next queued request from the callback that delivered it;
- every request has a deadline. Lean TCP channels (``tcp``) share one timer per link, set for
  the earliest deadline and re-armed only when it fires; pymodbus channels (``stock``: serial,
  RTU over TCP, UDP, TLS) time their own. A unit that times out is skipped (its requests fail
  at once) for a capped, jittered interval, and its timed-out request is retried at the back of
  the queue, so a dead slave costs each neighbour's request at most one timeout;
- on serial, a silent gap between frames (t3.5 of the baud rate unless configured);
- when every unit on the link has stopped answering, the link is presumed dead (a half-open
  TCP connection looks exactly like that) and closed; the supervisors then reconnect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import weakref
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar

from mapper_modbus import stock, tcp, transport
from mapper_modbus.channel import BadReply, Channel, ExceptionReply, Job, LinkLost, Op
from mapper_modbus.config import CommunicateMode, ModbusProtocolConfig
from mapper_sdk.errors import (
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    DriverError,
)

__all__ = ["Link", "LinkPool", "LinkStats", "ModbusExceptionError", "exception_name"]

_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ModbusExceptionError(DeviceProtocolError):
    """The device answered with Modbus exception ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def answering(cls, code: int, op: Op) -> ModbusExceptionError:
        return cls(
            code,
            f"unit {op.unit} answered FC{op.function} at address {op.address} "
            f"(count {op.count}) with exception {code:02d} ({exception_name(code)})",
        )


def exception_name(code: int) -> str:
    return _EXCEPTION_NAMES.get(code, "unknown exception")


@dataclass(slots=True)
class LinkStats:
    """Counters of one link, for tests and metrics."""

    requests: int = 0
    timeouts: int = 0
    skipped: int = 0
    exceptions: int = 0


class _UnitGate:
    """Backoff of one unit that stopped answering: equal jitter, so never ~0 s."""

    BASE = 1.0
    CAP = 30.0
    __slots__ = ("failures", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.until = 0.0

    def trip(self, now: float, rng: random.Random) -> None:
        ceiling = min(self.CAP, self.BASE * 2 ** min(self.failures, 16))
        self.failures += 1
        self.until = now + ceiling / 2 + rng.uniform(0, ceiling / 2)


def inter_frame_gap(config: ModbusProtocolConfig) -> float:
    """Seconds of silence between serial frames: configured, else 3.5 characters (spec §2.5.1.1).

    Above 19,200 baud the serial line guide fixes t3.5 at 1.75 ms. TCP needs no gap.
    """
    if not config.communicate_mode.is_serial:
        return 0.0
    if config.inter_frame_delay is not None:
        return config.inter_frame_delay / 1000
    if config.baud_rate > 19_200:
        return 0.00175
    return 3.5 * 11 / config.baud_rate


class Link:
    """One physical link shared by every device behind it; see the module docstring."""

    DEAD_AFTER = 3
    """Timeouts in a row, from every attached unit, after which the link is presumed dead."""

    def __init__(self, key: Hashable, config: ModbusProtocolConfig) -> None:
        self.key = key
        self.config = config
        self.name = transport.describe(config)
        self.refs = 0
        self.stats = LinkStats()
        self.lean = config.communicate_mode is CommunicateMode.TCP
        """Carried by the lean Modbus/TCP client (``tcp``) rather than pymodbus."""
        self._loop = asyncio.get_running_loop()
        self._slots = 1 if config.communicate_mode.is_serial else config.max_in_flight
        self._writes: deque[Job] = deque()
        self._reads: deque[Job] = deque()
        self._channels: list[Channel] = []
        self._idle: list[Channel] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._down: str | None = "not connected yet"
        self._connecting = asyncio.Lock()
        self._units: Counter[int] = Counter()
        self._gates: dict[int, _UnitGate] = {}
        self._silent_units: set[int] = set()
        self._timeouts_in_row = 0
        self._rng = random.Random()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        if self._down is not None:
            return False
        for channel in self._channels:  # noqa: SIM110 - no generator: asked on every read
            if not channel.connected:
                return False
        return True

    def attach(self, unit: int) -> None:
        self._units[unit] += 1

    def detach(self, unit: int) -> None:
        self._units[unit] -= 1
        if self._units[unit] <= 0:
            del self._units[unit]

    async def connect(self) -> None:
        """Open every slot's connection unless the link is up; raises ``DeviceConnectError``."""
        async with self._connecting:  # devices reconnecting together open it once
            if self.connected:
                return
            if self._channels:  # a connection dropped without telling: fail what it carried
                self._lost("reconnecting")
            channels: list[Channel] = []
            try:
                for _ in range(self._slots):
                    channels.append(await self._open_one())
            except BaseException:
                for channel in channels:
                    channel.close()
                raise
            self._channels, self._idle, self._down = channels, list(channels), None
            self._timeouts_in_row = 0
            self._silent_units.clear()
            self._gates.clear()  # a new connection gives every unit a fresh chance

    async def _open_one(self) -> Channel:
        config = self.config
        try:
            if not self.lean:
                return await stock.open_channel(self, config, inter_frame_gap(config))
            async with asyncio.timeout(config.timeout_s):
                return await tcp.open_channel(self, config.ip or "", config.resolved_port)
        except TimeoutError:
            message = f"cannot connect to {self.name} (within {config.timeout_s:g} s)"
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            message = f"cannot connect to {self.name}: {exc}"
        raise DeviceConnectError(message)

    async def close(self) -> None:
        """Fail what is queued or in flight and close the connections."""
        channels = self._channels
        self._mark_down("link closed", DeviceConnectError(f"{self.name} closed"))
        await asyncio.gather(*(channel.wait_closed() for channel in channels))

    def _mark_down(self, reason: str, error: DriverError) -> None:
        """Close the connections; every request queued or in flight fails with ``error``."""
        self._down = reason
        in_flight = [channel.job for channel in self._channels if channel.job is not None]
        self._close_channels()
        for job in in_flight:
            _fail(job.future, error)
        for queue in (self._writes, self._reads):
            while queue:
                _fail(queue.popleft().future, error)

    def _close_channels(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        for channel in self._channels:
            channel.close()
        self._channels, self._idle = [], []

    # -- requests -------------------------------------------------------------------------

    def submit(
        self, op: Op, *, timeout: float, retries: int = 0, write: bool = False
    ) -> asyncio.Future[bytes]:
        """Queue ``op``; the future gives its data or a ``DriverError``. Cancel it to drop it."""
        future: asyncio.Future[bytes] = self._loop.create_future()
        if self._down is not None:
            _fail(future, DeviceConnectError(f"{self.name}: {self._down}"))
            return future
        (self._writes if write else self._reads).append(Job(op, timeout, retries, future, write))
        if self._idle:
            self._pump()
        return future

    async def request(
        self,
        op: Op,
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline per attempt, applied by the scheduler
        retries: int = 0,
        write: bool = False,
    ) -> bytes:
        future = self.submit(op, timeout=timeout, retries=retries, write=write)
        try:
            return await future
        finally:
            future.cancel()  # no-op when done; drops the job if the caller was cancelled

    def _pump(self) -> None:
        """Start queued jobs on idle connections, writes first."""
        idle, writes, reads = self._idle, self._writes, self._reads
        now = -1.0
        while idle and (writes or reads):
            job = writes.popleft() if writes else reads.popleft()
            if job.future.done():  # the caller gave up while it waited
                continue
            if now < 0:
                now = self._loop.time()
            if self._gates and not job.probe:
                gate = self._gates.get(job.op.unit)
                if gate is not None and now < gate.until:
                    self.stats.skipped += 1
                    _fail(job.future, self._skipped(job.op.unit, gate.until - now))
                    continue
            channel = idle.pop()
            self.stats.requests += 1
            if channel.link_timed:
                deadline = job.deadline = now + job.timeout
                if deadline < self._timer_at:
                    self._arm(deadline)
            channel.start(job)

    def _skipped(self, unit: int, wait: float) -> DeviceTimeoutError:
        return DeviceTimeoutError(
            f"unit {unit} on {self.name} stopped answering; next try in {wait:.1f} s"
        )

    # -- outcomes (called by the channels) ------------------------------------------------

    def settle(self, channel: Channel, job: Job, outcome: bytes | BaseException) -> None:
        """A channel's answer or failure for ``job``; the channel is free again."""
        if self._down is not None:  # the link went down meanwhile
            _fail(job.future, DeviceConnectError(f"{self.name}: {self._down}"))
            return
        self._idle.append(channel)
        if type(outcome) is bytes:
            self._answered(job.op.unit)
            if not job.future.done():
                job.future.set_result(outcome)
        else:
            try:
                self._failed(channel, job, outcome)
            except DriverError as exc:
                _fail(job.future, exc)
        if self._writes or self._reads:
            self._pump()

    def channel_lost(self, channel: Channel, job: Job | None, reason: str) -> None:
        if channel not in self._channels:
            return  # closed by us: nothing to report
        error = self._lost(reason)
        if job is not None:
            _fail(job.future, error)

    def _failed(self, channel: Channel, job: Job, outcome: bytes | BaseException) -> None:
        """Raise the ``DriverError`` that fails ``job``; return when it went back in the queue."""
        unit = job.op.unit
        if isinstance(outcome, TimeoutError):
            if not channel.connected:
                raise self._lost(f"connection lost waiting for unit {unit}")
            self._timed_out(job)
            return
        if isinstance(outcome, ExceptionReply):
            self._answered(unit)
            self.stats.exceptions += 1
            raise ModbusExceptionError.answering(outcome.code, job.op)
        if isinstance(outcome, LinkLost):
            raise self._lost(str(outcome))
        if isinstance(outcome, BadReply):
            raise DeviceProtocolError(f"unit {unit} on {self.name}: {outcome}")
        if isinstance(outcome, ValueError):  # a request Modbus cannot carry
            raise DriverError(f"{self.name}: request not sent: {outcome}")
        # a bug must fail one request, never the link
        raise DriverError(f"{self.name}: unexpected {outcome!r}")

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._expire)
        self._timer_at = deadline

    def _expire(self) -> None:
        """The link timer: time out the requests past their deadline, re-arm for the next."""
        self._timer, self._timer_at = None, math.inf
        now, nearest = self._loop.time(), math.inf
        for channel in list(self._channels):
            job = channel.job
            if job is None or not channel.link_timed or self._down is not None:
                continue
            if job.deadline <= now:
                channel.abandon()  # its answer, should it come, is late and dropped
                self.settle(channel, job, TimeoutError())
            else:
                nearest = min(nearest, job.deadline)
        if nearest < self._timer_at and self._down is None:
            self._arm(nearest)

    def _lost(self, reason: str) -> DeviceConnectError:
        error = DeviceConnectError(f"{self.name}: {reason}")
        self._mark_down(reason, error)
        return error

    def _answered(self, unit: int) -> None:
        self._timeouts_in_row = 0
        if self._silent_units:
            self._silent_units.clear()
        if self._gates:
            self._gates.pop(unit, None)

    def _timed_out(self, job: Job) -> None:
        unit = job.op.unit
        self.stats.timeouts += 1
        self._timeouts_in_row += 1
        self._silent_units.add(unit)
        self._gates.setdefault(unit, _UnitGate()).trip(self._loop.time(), self._rng)
        if self._timeouts_in_row >= self.DEAD_AFTER and self._silent_units >= set(self._units):
            raise self._lost(f"{self._timeouts_in_row} requests in a row got no answer")
        if job.retries > 0:
            # At the back of its queue, so every request already waiting goes first.
            job.retries -= 1
            job.probe = True
            (self._writes if job.write else self._reads).append(job)
            return
        raise DeviceTimeoutError(
            f"unit {unit} on {self.name} did not answer within {job.timeout:g} s"
        )


def _fail(future: asyncio.Future[bytes], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        # The caller may have stopped listening; an unread exception is not an error here.
        with contextlib.suppress(BaseException):
            future.exception()


_LinksByLoop = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Link]]


class LinkPool:
    """The process's links, per event loop, by ``transport.link_key``; ref-counted."""

    _links: ClassVar[_LinksByLoop] = weakref.WeakKeyDictionary()

    @classmethod
    async def acquire(cls, config: ModbusProtocolConfig) -> Link:
        """The link for ``config``, connected; raises ``DeviceConnectError``."""
        links = cls._links.setdefault(asyncio.get_running_loop(), {})
        key = transport.link_key(config)
        link = links.get(key)
        if link is None:
            link = links[key] = Link(key, config)
        elif config.communicate_mode.is_serial:
            _check_same_serial(link.config, config)
        link.refs += 1
        try:
            await link.connect()
        except BaseException:
            await cls.release(link)
            raise
        return link

    @classmethod
    async def release(cls, link: Link) -> None:
        link.refs -= 1
        if link.refs > 0:
            return
        links = cls._links.get(asyncio.get_running_loop(), {})
        if links.get(link.key) is link:
            del links[link.key]
        await link.close()

    @classmethod
    def links(cls) -> list[Link]:
        """The open links of the running loop (for tests and diagnostics)."""
        return list(cls._links.get(asyncio.get_running_loop(), {}).values())


def _check_same_serial(open_config: ModbusProtocolConfig, config: ModbusProtocolConfig) -> None:
    if transport.serial_settings(open_config) != transport.serial_settings(config):
        raise DeviceConnectError(
            f"{config.serial_name} is already open with other settings "
            f"({transport.describe(open_config)}, {open_config.baud_rate} baud, "
            f"{open_config.data_bits}{open_config.parity}{open_config.stop_bits:g}); "
            "every device on one serial bus must use the same settings"
        )
