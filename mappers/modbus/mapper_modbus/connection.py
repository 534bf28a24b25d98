"""Shared Modbus links: one connection and one bus scheduler per endpoint or serial port.

Devices that name the same TCP endpoint or the same serial port are different unit ids behind
one physical link, so they share one ``Link`` from the ``LinkPool`` (ref-counted, one pool per
event loop). The link's scheduler owns everything about the wire:

- a priority queue where writes jump ahead of polls (FIFO within each);
- at most ``maxInFlight`` requests outstanding (pymodbus keeps one transaction per client, so
  each slot is one client; 1 on a serial bus, which carries one transaction at a time);
- every request under ``asyncio.timeout``; a unit that times out is skipped (its requests fail
  at once) for a capped, jittered interval, and its timed-out request is retried at the back of
  the queue, so a dead slave costs each neighbour's request at most one timeout;
- on serial, a silent gap between frames (t3.5 of the baud rate unless configured);
- when every unit on the link has stopped answering, the link is presumed dead (a half-open
  TCP connection looks exactly like that) and closed; the supervisors then reconnect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import weakref
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import ClassVar

from mapper_modbus import transport
from mapper_modbus.config import ModbusProtocolConfig
from mapper_modbus.transport import BadReply, Client, ExceptionReply, LinkLost, Op
from mapper_sdk.errors import (
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    DriverError,
)

__all__ = ["Link", "LinkPool", "LinkStats", "ModbusExceptionError", "exception_name"]

WRITE, READ = 0, 1  # queue priorities: lower goes first

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


@dataclass(slots=True)
class _Job:
    priority: int
    seq: int
    op: Op
    timeout: float
    retries: int
    future: asyncio.Future[bytes]
    probe: bool = False  # a retry: passes its unit's backoff

    def entry(self) -> tuple[int, int, _Job]:
        """The queue entry: (priority, seq) compare as a C tuple; seq is unique."""
        return (self.priority, self.seq, self)


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
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Job]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._clients: list[Client] = []
        self._down: str | None = "not connected yet"
        self._connecting = asyncio.Lock()
        self._units: Counter[int] = Counter()
        self._gates: dict[int, _UnitGate] = {}
        self._silent_units: set[int] = set()
        self._timeouts_in_row = 0
        self._gap = inter_frame_gap(config)
        self._last_frame = 0.0
        self._rng = random.Random()
        slots = 1 if config.communicate_mode.is_serial else config.max_in_flight
        self._workers = [
            asyncio.create_task(self._work(slot), name=f"modbus {self.name} slot {slot}")
            for slot in range(slots)
        ]

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        if self._down is not None:
            return False
        for client in self._clients:  # noqa: SIM110 - no generator: asked on every read
            if not transport.is_connected(client):
                return False
        return True

    def attach(self, unit: int) -> None:
        self._units[unit] += 1

    def detach(self, unit: int) -> None:
        self._units[unit] -= 1
        if self._units[unit] <= 0:
            del self._units[unit]

    async def connect(self) -> None:
        """Open every slot's client unless the link is up; raises ``DeviceConnectError``."""
        async with self._connecting:  # devices reconnecting together open it once
            if self.connected:
                return
            self._close_clients()
            clients: list[Client] = []
            try:
                for _ in self._workers:
                    clients.append(await self._open_one())
            except BaseException:
                for client in clients:
                    transport.close_client(client)
                raise
            self._clients, self._down = clients, None
            self._timeouts_in_row = 0
            self._silent_units.clear()
            self._gates.clear()  # a new connection gives every unit a fresh chance

    async def _open_one(self) -> Client:
        timeout = self.config.timeout_s
        try:
            client = transport.open_client(self.config)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise DeviceConnectError(f"{self.name}: {exc}") from exc
        try:
            async with asyncio.timeout(timeout):
                opened = await transport.connect_client(client, self.config)
        except TimeoutError:
            opened = False
        except BaseException:
            transport.close_client(client)
            raise
        if not opened:
            transport.close_client(client)
            raise DeviceConnectError(f"cannot connect to {self.name} (within {timeout:g} s)")
        return client

    async def close(self) -> None:
        """Stop the workers, fail what is queued and close the connection."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._mark_down("link closed")
        while not self._queue.empty():
            _fail(self._queue.get_nowait()[2].future, DeviceConnectError(f"{self.name} closed"))

    def _mark_down(self, reason: str) -> None:
        self._down = reason
        self._close_clients()

    def _close_clients(self) -> None:
        for client in self._clients:
            transport.close_client(client)
        self._clients = []

    # -- requests -------------------------------------------------------------------------

    def submit(
        self, op: Op, *, timeout: float, retries: int = 0, write: bool = False
    ) -> asyncio.Future[bytes]:
        """Queue ``op``; the future gives its data or a ``DriverError``. Cancel it to drop it."""
        future: asyncio.Future[bytes] = self._loop.create_future()
        priority = WRITE if write else READ
        self._queue.put_nowait(
            _Job(priority, next(self._seq), op, timeout, retries, future).entry()
        )
        return future

    async def request(
        self,
        op: Op,
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline per attempt, applied by the worker
        retries: int = 0,
        write: bool = False,
    ) -> bytes:
        future = self.submit(op, timeout=timeout, retries=retries, write=write)
        try:
            return await future
        finally:
            future.cancel()  # no-op when done; drops the job if the caller was cancelled

    async def _work(self, slot: int) -> None:
        while True:
            job = (await self._queue.get())[2]
            if job.future.done():  # the caller gave up while it waited
                continue
            try:
                data = await self._run(slot, job)
            except asyncio.CancelledError:  # the link is closing
                _fail(job.future, DeviceConnectError(f"{self.name} closed"))
                raise
            except DriverError as exc:
                _fail(job.future, exc)
            except Exception as exc:  # a bug must fail one request, never stop the worker
                _fail(job.future, DriverError(f"{self.name}: unexpected {exc!r}"))
            else:
                if data is not None and not job.future.done():
                    job.future.set_result(data)

    async def _run(self, slot: int, job: _Job) -> bytes | None:
        """The job's data, ``None`` when it went back into the queue; raises ``DriverError``."""
        client = self._clients[slot] if slot < len(self._clients) else None
        if client is None or self._down is not None or not transport.is_connected(client):
            raise DeviceConnectError(f"{self.name}: {self._down or 'connection lost'}")
        unit = job.op.unit
        gate = self._gates.get(unit)
        if gate is not None and not job.probe and self._loop.time() < gate.until:
            self.stats.skipped += 1
            wait = gate.until - self._loop.time()
            raise DeviceTimeoutError(
                f"unit {unit} on {self.name} stopped answering; next try in {wait:.1f} s"
            )
        if self._gap:
            await self._quiet()
        self.stats.requests += 1
        try:
            async with asyncio.timeout(job.timeout):
                data = await transport.execute(client, job.op)
        except TimeoutError:
            if not transport.is_connected(client):
                raise self._lost(f"connection lost waiting for unit {unit}") from None
            self._timed_out(job)
            return None
        except LinkLost as exc:
            raise self._lost(str(exc)) from exc
        except ExceptionReply as exc:
            self._answered(unit)
            self.stats.exceptions += 1
            raise ModbusExceptionError.answering(exc.code, job.op) from None
        except BadReply as exc:
            raise DeviceProtocolError(f"unit {unit} on {self.name}: {exc}") from exc
        finally:
            if self._gap:  # only serial links keep a silent gap between frames
                self._last_frame = self._loop.time()
        self._answered(unit)
        return data

    async def _quiet(self) -> None:
        if self._gap:
            wait = self._last_frame + self._gap - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)

    def _lost(self, reason: str) -> DeviceConnectError:
        self._mark_down(reason)
        return DeviceConnectError(f"{self.name}: {reason}")

    def _answered(self, unit: int) -> None:
        self._timeouts_in_row = 0
        if self._silent_units:
            self._silent_units.clear()
        if self._gates:
            self._gates.pop(unit, None)

    def _timed_out(self, job: _Job) -> None:
        unit = job.op.unit
        self.stats.timeouts += 1
        self._timeouts_in_row += 1
        self._silent_units.add(unit)
        self._gates.setdefault(unit, _UnitGate()).trip(self._loop.time(), self._rng)
        if self._timeouts_in_row >= self.DEAD_AFTER and self._silent_units >= set(self._units):
            raise self._lost(f"{self._timeouts_in_row} requests in a row got no answer")
        if job.retries > 0:
            # At the back of its priority, so every request already waiting goes first.
            retry = replace(job, seq=next(self._seq), retries=job.retries - 1, probe=True)
            self._queue.put_nowait(retry.entry())
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
