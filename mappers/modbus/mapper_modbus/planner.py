"""Turn the properties due in a tick into few Modbus requests, and learn what the device accepts.

Reads are grouped by (unit id, table), sorted and merged greedily: a property joins the open
block when the hole before it is at most ``max_gap`` registers (``max_gap_bits`` bits) and the
block stays within the PDU limit (125 registers / 2,000 bits), every member's ``max_block`` and
the limit learned for that device. A property is never split across requests.

Exceptions 02/03 on a merged block are fed back through ``ReadPlanner.record_failure``, which
returns the block's halves to retry at once and remembers the failure:

- a block with holes: its holes are no longer filled (the device may not map them);
- a block without holes: the device may refuse the size, so blocks are capped at half of it;
- a single property (or several reading the same range): that range is bad. It is read alone
  from then on, never inside another block, and every failure it explains is forgotten, so one
  misconfigured register does not shrink its neighbours' blocks.

Writes of contiguous registers (coils) merge into FC16 (FC15) requests of at most 123 registers
(1,968 coils); a lone register or coil uses FC6 (FC5) unless told to always write multiple.
Plans serialise to JSON so that a benchmark can replay them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from mapper_modbus.tables import (
    MAX_WRITE_BITS,
    MAX_WRITE_REGISTERS,
    REGISTER_BY_READ_FUNCTION,
    FunctionCode,
    Register,
)

__all__ = [
    "ReadItem",
    "ReadPlan",
    "ReadPlanner",
    "ReadRequest",
    "WriteItem",
    "WriteRequest",
    "plan_writes",
]

ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
_MAX_FAILURES = 256  # per (unit, table): bounds memory against a device that fails everything


@dataclass(frozen=True, slots=True)
class ReadItem:
    """One property to read: ``count`` registers (or bits) from ``offset`` of ``table``."""

    key: Hashable
    unit: int
    table: Register
    offset: int
    count: int = 1
    max_block: int | None = None

    @property
    def end(self) -> int:
        return self.offset + self.count


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read request and the properties it serves."""

    unit: int
    table: Register
    address: int
    count: int
    items: tuple[ReadItem, ...] = ()

    @property
    def function(self) -> int:
        return self.table.read_function

    @property
    def end(self) -> int:
        return self.address + self.count

    def to_json(self) -> dict[str, int]:
        return {
            "unit": self.unit,
            "function": self.function,
            "address": self.address,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReadRequest:
        table = REGISTER_BY_READ_FUNCTION[int(data["function"])]
        return cls(int(data["unit"]), table, int(data["address"]), int(data["count"]))

    @classmethod
    def covering(cls, items: Sequence[ReadItem]) -> ReadRequest:
        """The smallest request reading all ``items`` (same unit and table)."""
        start = min(item.offset for item in items)
        count = max(item.end for item in items) - start
        return cls(items[0].unit, items[0].table, start, count, tuple(items))


@dataclass(frozen=True, slots=True)
class ReadPlan:
    requests: tuple[ReadRequest, ...]

    def __len__(self) -> int:
        return len(self.requests)

    def to_json(self) -> list[dict[str, int]]:
        return [request.to_json() for request in self.requests]

    @classmethod
    def from_json(cls, data: Iterable[Mapping[str, Any]]) -> ReadPlan:
        """A plan to replay: the requests without their items."""
        return cls(tuple(ReadRequest.from_json(entry) for entry in data))


@dataclass(slots=True)
class _Failure:
    """One refused block: what it taught us, until a bad range inside it explains it."""

    start: int
    end: int
    holes: list[tuple[int, int]]
    size_limit: int | None


@dataclass(slots=True)
class _Learned:
    """What one (unit, table) accepts."""

    bad: list[tuple[int, int]] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    limit: int | None = None
    holes: list[tuple[int, int]] = field(default_factory=list)

    def touches_bad(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self.bad)

    def covers_hole(self, start: int, end: int) -> bool:
        return any(start <= s and e <= end for s, e in self.holes)

    def add_failure(self, failure: _Failure) -> None:
        self.failures = [*self.failures[-(_MAX_FAILURES - 1) :], failure]
        self._derive()

    def add_bad(self, start: int, end: int) -> None:
        if (start, end) not in self.bad:
            self.bad.append((start, end))
        # Failures of blocks holding this range are explained by it: drop what they taught.
        self.failures = [f for f in self.failures if not (f.start <= start and end <= f.end)]
        self._derive()

    def _derive(self) -> None:
        limits = [f.size_limit for f in self.failures if f.size_limit is not None]
        self.limit = min(limits, default=None)
        self.holes = [hole for f in self.failures for hole in f.holes]


@dataclass(slots=True)
class _Block:
    """The open block while planning: its items, span and the smallest cap of its members."""

    items: list[ReadItem]
    start: int
    end: int
    cap: int

    def add(self, item: ReadItem, gap: int, learned: _Learned) -> bool:
        """Take ``item`` if the block stays legal; False leaves the block unchanged."""
        if item.offset - self.end > gap:
            return False
        end = max(self.end, item.end)
        cap = min(self.cap, item.max_block or self.cap)
        if end - self.start > cap:
            return False
        # The block already avoids bad ranges; only the newly covered addresses need a check.
        if learned.touches_bad(self.end, end) or learned.covers_hole(self.start, end):
            return False
        self.items.append(item)
        self.end, self.cap = end, cap
        return True


class ReadPlanner:
    """Plans read requests for one connection and keeps what it learned between ticks."""

    def __init__(self, *, max_gap: int = 10, max_gap_bits: int = 64) -> None:
        self.max_gap = max_gap
        self.max_gap_bits = max_gap_bits
        self._learned: defaultdict[tuple[int, Register], _Learned] = defaultdict(_Learned)

    def plan(self, items: Iterable[ReadItem]) -> ReadPlan:
        """The fewest requests (greedy per unit and table) that read every item."""
        groups: defaultdict[tuple[int, Register], list[ReadItem]] = defaultdict(list)
        for item in items:
            groups[(item.unit, item.table)].append(item)
        requests: list[ReadRequest] = []
        for key in sorted(groups, key=lambda k: (k[0], k[1].read_function)):
            requests += self._plan_group(key, sorted(groups[key], key=_span))
        return ReadPlan(tuple(requests))

    def _plan_group(self, key: tuple[int, Register], items: list[ReadItem]) -> list[ReadRequest]:
        learned = self._learned.get(key) or _Learned()
        table = key[1]
        gap = self.max_gap_bits if table.is_bit else self.max_gap
        cap = min(table.max_read, learned.limit or table.max_read)
        requests: list[ReadRequest] = []
        block: _Block | None = None
        for item in items:
            if learned.touches_bad(item.offset, item.end):
                requests.append(ReadRequest.covering([item]))  # read alone: fails alone
            elif block is None or not block.add(item, gap, learned):
                if block is not None:
                    requests.append(ReadRequest.covering(block.items))
                block = _Block([item], item.offset, item.end, min(cap, item.max_block or cap))
        if block is not None:
            requests.append(ReadRequest.covering(block.items))
        return sorted(requests, key=lambda r: r.address)

    def record_failure(self, request: ReadRequest, exception_code: int) -> list[ReadRequest]:
        """Learn from exception 02/03 on ``request``; returns the smaller requests to retry now.

        Other exception codes (device busy, device failure) say nothing about the register map
        and are not learned from. An empty list means the request held one range, now marked
        bad: its properties get the error.
        """
        if exception_code not in (ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE) or not request.items:
            return []
        learned = self._learned[(request.unit, request.table)]
        ranges = sorted({_span(item) for item in request.items})
        if len(ranges) == 1:
            learned.add_bad(*ranges[0])
            return []
        halves = _halves(request)
        holes = _holes(ranges)
        # Without holes only the size (or a bad property, found later) explains the refusal.
        size_limit = None if holes else max(half.count for half in halves)
        learned.add_failure(_Failure(request.address, request.end, holes, size_limit))
        return halves

    def learned_limit(self, unit: int, table: Register) -> int | None:
        """The largest block this device is believed to accept, if one was learned."""
        learned = self._learned.get((unit, table))
        return learned.limit if learned else None

    def bad_ranges(self, unit: int, table: Register) -> list[tuple[int, int]]:
        """Address ranges ``[start, end)`` the device refused even when read alone."""
        learned = self._learned.get((unit, table))
        return list(learned.bad) if learned else []

    def forget(self, unit: int | None = None) -> None:
        """Drop what was learned (for one unit, or all), e.g. after the device was reconfigured."""
        for key in [k for k in self._learned if unit is None or k[0] == unit]:
            del self._learned[key]


def _span(item: ReadItem) -> tuple[int, int]:
    return item.offset, item.end


def _holes(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Addresses between sorted ranges that no range covers."""
    holes, end = [], ranges[0][1]
    for start, stop in ranges[1:]:
        if start > end:
            holes.append((end, start))
        end = max(end, stop)
    return holes


def _halves(request: ReadRequest) -> list[ReadRequest]:
    """Split at the range boundary nearest the middle, keeping same-range items together."""
    by_range = [list(g) for _, g in groupby(sorted(request.items, key=_span), key=_span)]
    middle = request.address + request.count / 2
    cut = next((n for n, g in enumerate(by_range) if g[0].offset >= middle), len(by_range))
    cut = min(max(cut, 1), len(by_range) - 1)
    first = [item for group in by_range[:cut] for item in group]
    second = [item for group in by_range[cut:] for item in group]
    return [ReadRequest.covering(first), ReadRequest.covering(second)]


# -- writes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteItem:
    """One property's encoded write: registers (or 0/1 coil values) from ``offset``."""

    key: Hashable
    unit: int
    table: Register
    offset: int
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WriteRequest:
    unit: int
    function: int
    address: int
    values: tuple[int, ...]
    keys: tuple[Hashable, ...] = ()

    @property
    def count(self) -> int:
        return len(self.values)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "function": self.function,
            "address": self.address,
            "count": self.count,
            "values": list(self.values),
        }


def plan_writes(
    items: Iterable[WriteItem], *, always_multiple: bool = False, merge: bool = True
) -> list[WriteRequest]:
    """Requests that leave the device as writing ``items`` in order would.

    Contiguous writes of one unit and table merge (``merge=False`` gives one request per item,
    to retry a merged write that failed). Where items overlap the later one wins, as it
    would when written in order. Raises ``ValueError`` for a read-only table.
    """
    groups: dict[tuple[int, Register], list[WriteItem]] = {}
    for item in items:
        if not item.table.writable:
            raise ValueError(f"{item.table} is read-only")
        groups.setdefault((item.unit, item.table), []).append(item)
    batches = groups.values() if merge else [[item] for g in groups.values() for item in g]
    return [request for batch in batches for request in _write_group(batch, always_multiple)]


# Indexed by "a single register or coil?"
_BIT_WRITES = (FunctionCode.WRITE_MULTIPLE_COILS, FunctionCode.WRITE_SINGLE_COIL)
_REGISTER_WRITES = (FunctionCode.WRITE_MULTIPLE_REGISTERS, FunctionCode.WRITE_SINGLE_REGISTER)


def _write_group(items: list[WriteItem], always_multiple: bool) -> list[WriteRequest]:
    image: dict[int, int] = {}
    owners: defaultdict[int, list[Hashable]] = defaultdict(list)
    for item in items:
        for n, value in enumerate(item.values):
            image[item.offset + n] = value
            owners[item.offset + n].append(item.key)
    bits = items[0].table.is_bit
    limit = MAX_WRITE_BITS if bits else MAX_WRITE_REGISTERS
    runs: list[list[int]] = []
    for address in sorted(image):
        if not runs or address != runs[-1][-1] + 1 or len(runs[-1]) == limit:
            runs.append([])
        runs[-1].append(address)
    functions = _BIT_WRITES if bits else _REGISTER_WRITES
    return [
        WriteRequest(
            unit=items[0].unit,
            function=functions[len(run) == 1 and not always_multiple],
            address=run[0],
            values=tuple(image[a] for a in run),
            keys=tuple(dict.fromkeys(key for a in run for key in owners[a])),
        )
        for run in runs
    ]
