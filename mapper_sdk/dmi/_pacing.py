"""Pacing of DMI reports: a local token bucket and a coalescing, bounded report queue. No I/O.

EdgeCore rate-limits its whole DeviceManagerService with ONE token bucket (1 token/s sustained,
burst 100) shared by every mapper on the node, and answers "too many request" when it is empty
(contract §4.1). A mapper that reports whenever a value changes would exhaust it at once. So
reports wait here for a token of our own, smaller bucket, and while they wait they coalesce:
the queue holds at most one twin report and one state per device, merged (the newer value of
each property wins), so a slow link costs memory O(devices), never O(reports).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.driver import DeviceState


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, not {rate}/{burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def try_take(self) -> bool:
        """Take a token if one is available."""
        if self.wait_time() > 0:
            return False
        self._tokens -= 1
        return True


@dataclass(slots=True)
class TwinsEntry:
    """The twins of one device waiting to be sent, each with the time it was read."""

    ref: DeviceRef
    twins: dict[str, tuple[TwinValue, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, report: TwinReport) -> TwinsEntry:
        return cls(report.ref, {t.name: (t, report.timestamp_ms) for t in report.twins})


@dataclass(slots=True)
class StateEntry:
    """The latest state of one device waiting to be sent."""

    ref: DeviceRef
    state: DeviceState
    timestamp_ms: int


Entry = TwinsEntry | StateEntry
_Key = tuple[str, DeviceRef]


def _key(entry: Entry) -> _Key:
    return ("twins" if isinstance(entry, TwinsEntry) else "state", entry.ref)


def _merge(older: Entry, newer: Entry) -> None:
    """Fold ``newer`` into ``older`` (same device and kind): newer values win."""
    if isinstance(older, TwinsEntry) and isinstance(newer, TwinsEntry):
        older.twins.update(newer.twins)
    elif isinstance(older, StateEntry) and isinstance(newer, StateEntry):
        older.state, older.timestamp_ms = newer.state, newer.timestamp_ms


class ReportQueue:
    """Latest report per device and kind, served oldest-waiting first; at most ``max_entries``.

    ``coalesced`` counts reports merged into one already waiting; ``dropped`` counts reports
    refused because ``max_entries`` devices were already waiting.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[_Key, Entry] = OrderedDict()
        self.coalesced = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: Entry) -> None:
        """Queue ``entry``, merging it into the device's waiting entry of the same kind."""
        key = _key(entry)
        waiting = self._entries.get(key)
        if waiting is not None:
            _merge(waiting, entry)
            self.coalesced += 1
        elif len(self._entries) >= self.max_entries:
            self.dropped += 1
        else:
            self._entries[key] = entry  # keeps its place in line when merged into later

    def pop(self) -> Entry | None:
        """The entry that has waited longest, or ``None``."""
        if not self._entries:
            return None
        return self._entries.popitem(last=False)[1]

    def requeue(self, entry: Entry) -> None:
        """Put back an entry that could not be sent, first in line; newer values win."""
        key = _key(entry)
        newer = self._entries.pop(key, None)
        if newer is not None:
            _merge(entry, newer)
        self._entries[key] = entry
        self._entries.move_to_end(key, last=False)

    def discard(self, ref: DeviceRef, kind: str) -> None:
        """Forget ``ref``'s waiting entry of ``kind`` (``"twins"`` or ``"state"``)."""
        self._entries.pop((kind, ref), None)

    def discard_kind(self, kind: str) -> int:
        """Forget every waiting entry of ``kind``; returns how many."""
        keys = [k for k in self._entries if k[0] == kind]
        for k in keys:
            del self._entries[k]
        return len(keys)
