"""One device's read cycle: cached plans, one decoder call per block, the 02/03 fallback.

``BlockReader.read`` turns the properties due in a tick into the planner's requests (the plan is
compiled once per set of due properties and cached), sends them all to the device's ``Link``
(whose scheduler decides the order), and decodes each response with its block's precompiled
``BlockDecoder``. A response whose bytes equal the block's previous response is not decoded
again: its previous values are reused.

Exception 02/03 on a block goes to ``ReadPlanner.record_failure``; the smaller requests it
returns are sent in the same tick. A range the device refuses even alone gives an error in its
properties' slots only, and is re-tried once a minute rather than every tick.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from mapper_modbus.codec import BlockDecoder, CodecError, PointCodec, Value
from mapper_modbus.connection import Link, ModbusExceptionError, exception_name
from mapper_modbus.planner import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ReadItem,
    ReadPlanner,
    ReadRequest,
)
from mapper_modbus.transport import Op
from mapper_sdk.binding import BoundProperty
from mapper_sdk.errors import (
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    DriverError,
)

__all__ = ["BlockReader", "Health", "PointSpec"]

RECHECK_REFUSED_S = 60.0
"""How long a range the device refused when read alone is answered from the last error."""

_MAX_CACHED_PLANS = 64  # distinct sets of due properties; more means cycles that rarely align


@dataclass(frozen=True, slots=True)
class PointSpec:
    """What the reader needs of one property: its codec (or why it cannot be read)."""

    codec: PointCodec | DriverError
    max_block: int | None = None


class Health:
    """Outcomes of the last ``size`` requests; failing when all of them failed."""

    def __init__(self, size: int = 3) -> None:
        self._last: deque[bool] = deque(maxlen=size)

    def record(self, ok: bool) -> None:
        self._last.append(ok)

    @property
    def failing(self) -> bool:
        return len(self._last) == self._last.maxlen and not any(self._last)


@dataclass(slots=True, eq=False)
class _Block:
    """One read request with its decoder and the result slots of its properties."""

    request: ReadRequest
    decoder: BlockDecoder
    slots: tuple[int, ...]
    op: Op  # the request as sent, built once per plan
    key: tuple[int, int, int]  # ``_range_key(request)``
    raw: bytes | None = None
    values: list[Value] = field(default_factory=list)


@dataclass(slots=True)
class _Plan:
    blocks: list[_Block]
    errors: list[tuple[int, DriverError]]  # slots that cannot be read at all
    only: _Block | None = None  # the single block, when it holds every slot in order

    def __post_init__(self) -> None:
        if len(self.blocks) == 1 and not self.errors:
            block = self.blocks[0]
            if block.slots == tuple(range(len(block.slots))):
                self.only = block


Results = list[Value | DriverError | None]


class BlockReader:
    """Reads one device (one unit id) through its link; keeps plans and what it learned."""

    def __init__(
        self,
        link: Link,
        unit: int,
        specs: Sequence[PointSpec],
        planner: ReadPlanner,
        *,
        timeout: float,
        retries: int,
        health: Health,
    ) -> None:
        """``specs`` is indexed by ``BoundProperty.index``."""
        self.link, self.unit, self.planner = link, unit, planner
        self._specs = list(specs)
        self._timeout, self._retries, self._health = timeout, retries, health
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._refused: dict[tuple[int, int, int], tuple[float, DriverError]] = {}

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        """One value or error per point; raises when the link is down or nothing answered."""
        link = self.link
        if not link.connected:
            raise DeviceConnectError(f"{link.name} is not connected")
        plan = self._plan(points)
        only = plan.only
        if only is None or self._refused:
            return await self._read_plan(points, plan)
        # The common case: one block holding every point in order. No gather, no result slots.
        future = link.submit(only.op, timeout=self._timeout, retries=self._retries)
        try:
            data = await future
        except Exception as exc:  # the general path sorts errors out
            return await self._read_plan(points, plan, first=self._failure(exc))
        finally:
            future.cancel()
        self._health.record(True)
        if data != only.raw:  # unchanged bytes keep their values: nothing to decode
            try:
                only.values = only.decoder.decode(data)
            except CodecError as exc:
                only.raw = None
                return [DeviceProtocolError(str(exc))] * len(points)
            only.raw = data
        return list(only.values)

    async def _read_plan(
        self,
        points: Sequence[BoundProperty],
        plan: _Plan,
        *,
        first: DriverError | None = None,
    ) -> list[Value | DriverError]:
        """Every block of ``plan``; ``first`` is the failure of its only block, already sent."""
        results: Results = [None] * len(points)
        for slot, error in plan.errors:
            results[slot] = error
        wave, answered, timeout = plan.blocks, 0, None
        while wave:
            if first is not None:
                replies: list[bytes | DriverError] = [first]
                first = None
            else:
                replies = await self._fetch(wave)
            retry: list[_Block] = []
            for block, reply in zip(wave, replies, strict=True):
                if isinstance(reply, bytes):
                    answered += 1
                    self._decode(block, reply, results)
                else:
                    if isinstance(reply, DeviceTimeoutError):
                        timeout = timeout or reply
                    retry += self._failed(block, reply, points, results)
            wave = retry
        if timeout and not answered and all(isinstance(r, DriverError) for r in results):
            raise DeviceTimeoutError(str(timeout))  # the device is silent: the batch failed
        return [r if r is not None else DriverError("not read") for r in results]

    # -- planning -------------------------------------------------------------------------

    def _plan(self, points: Sequence[BoundProperty]) -> _Plan:
        key = tuple([point.index for point in points])
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        specs = [self._specs[point.index] for point in points]
        items, errors = [], []
        for slot, spec in enumerate(specs):
            codec = spec.codec
            if isinstance(codec, DriverError):
                errors.append((slot, codec))
                continue
            table, offset, count = codec.table, codec.offset, codec.count
            items.append(ReadItem(slot, self.unit, table, offset, count, spec.max_block))
        blocks = [self._compile(r, specs) for r in self.planner.plan(items).requests]
        if len(self._plans) >= _MAX_CACHED_PLANS:
            self._plans.clear()
        plan = self._plans[key] = _Plan(blocks, errors)
        return plan

    @staticmethod
    def _compile(request: ReadRequest, specs: Sequence[PointSpec]) -> _Block:
        slots = tuple(cast(int, item.key) for item in request.items)
        codecs = [c for slot in slots if isinstance(c := specs[slot].codec, PointCodec)]
        assert len(codecs) == len(slots), "the planner only gets readable properties"
        r = request
        op = Op(r.function, r.unit, r.address, r.count)
        decoder = BlockDecoder(r.address, r.count, codecs)
        return _Block(request, decoder, slots, op, _range_key(r))

    # -- requests -------------------------------------------------------------------------

    async def _fetch(self, wave: list[_Block]) -> list[bytes | DriverError]:
        """Send every block at once (the link orders them); one reply or error per block."""
        refused = self._refused
        if len(wave) == 1 and not refused:  # the common case: no gather, no bookkeeping
            future = self.link.submit(wave[0].op, timeout=self._timeout, retries=self._retries)
            try:
                outcome: bytes | BaseException = await future
            except Exception as exc:  # as gather(return_exceptions=True) would give it
                outcome = exc
            finally:
                future.cancel()
            return [self._outcome(outcome)]
        now = asyncio.get_running_loop().time()
        replies: list[bytes | DriverError | None] = [None] * len(wave)
        futures: dict[int, asyncio.Future[bytes]] = {}
        for n, block in enumerate(wave):
            known = refused.get(block.key) if refused else None
            if known is not None and known[0] > now:
                replies[n] = known[1]
                continue
            futures[n] = self.link.submit(block.op, timeout=self._timeout, retries=self._retries)
        try:
            outcomes = await asyncio.gather(*futures.values(), return_exceptions=True)
        finally:
            for future in futures.values():
                future.cancel()
        for n, outcome in zip(futures, outcomes, strict=True):
            replies[n] = self._outcome(outcome)
        return [r if r is not None else DriverError("no reply") for r in replies]

    def _outcome(self, outcome: bytes | BaseException) -> bytes | DriverError:
        if isinstance(outcome, bytes):
            self._health.record(True)
            return outcome
        return self._failure(outcome)

    def _failure(self, outcome: BaseException) -> DriverError:
        self._health.record(False)
        if isinstance(outcome, DeviceConnectError):
            raise outcome  # the link is down: the whole batch failed
        if isinstance(outcome, DriverError):
            return outcome
        if isinstance(outcome, Exception):
            return DriverError(f"unexpected {outcome!r}")
        raise outcome  # CancelledError and friends are not results

    def _decode(self, block: _Block, data: bytes, results: Results) -> None:
        if data != block.raw:  # unchanged bytes keep their values: nothing to decode
            try:
                block.values = block.decoder.decode(data)
            except CodecError as exc:
                block.raw = None
                _fill(results, block.slots, DeviceProtocolError(str(exc)))
                return
            block.raw = data
        for slot, value in zip(block.slots, block.values, strict=True):
            results[slot] = value

    def _failed(
        self,
        block: _Block,
        error: DriverError,
        points: Sequence[BoundProperty],
        results: Results,
    ) -> list[_Block]:
        """Fill the block's slots with ``error``, or return the smaller blocks to try now."""
        if isinstance(error, ModbusExceptionError) and error.code in _LEARNABLE:
            smaller = self.planner.record_failure(block.request, error.code)
            self._plans.clear()  # every cached plan predates what was just learned
            if smaller:
                specs = [self._specs[point.index] for point in points]
                return [self._compile(request, specs) for request in smaller]
            error = _refused_error(block.request, error.code)
            until = asyncio.get_running_loop().time() + RECHECK_REFUSED_S
            self._refused[block.key] = (until, error)
        _fill(results, block.slots, error)
        return []


_LEARNABLE = (ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE)


def _range_key(request: ReadRequest) -> tuple[int, int, int]:
    return (request.function, request.address, request.count)


def _refused_error(request: ReadRequest, code: int) -> DriverError:
    end = request.address + request.count - 1
    return ModbusExceptionError(
        code,
        f"unit {request.unit} refuses {request.table} {request.address}..{end} even when read "
        f"alone (exception {code:02d}, {exception_name(code)}): check the property's offset "
        f"and limit; re-tried every {RECHECK_REFUSED_S:g} s",
    )


def _fill(results: Results, slots: Sequence[int], value: DriverError) -> None:
    for slot in slots:
        results[slot] = value
