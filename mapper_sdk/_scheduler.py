"""When to read what: one schedule per device, properties grouped by ``collectCycle``.

No task or timer per property: the device's poll loop asks the schedule for the next deadline
and the groups due then, reads them in one ``Driver.read`` call, and comes back. Ticks sit on
the grid ``start + offset + k * period`` of the monotonic clock, so they do not drift; a tick
that is already late when the loop gets to it is skipped and counted, never run in a burst.
The offset spreads devices over their period so a thousand devices do not poll in lockstep;
it is a multiple of a small phase step (``phase_offset``), so the devices that share a phase
wake together on one timer of a ``Ticker`` instead of one timer and one event-loop turn each.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from mapper_sdk.binding import BoundProperty


@dataclass(slots=True)
class _Group:
    period: float  # seconds
    points: tuple[BoundProperty, ...]
    next_due: float


@dataclass(slots=True)
class Schedule:
    """The poll plan of one device; pure: time comes in as arguments."""

    groups: list[_Group] = field(default_factory=list)
    missed: int = 0
    """Ticks skipped because the loop was later than a whole period."""

    @classmethod
    def build(cls, points: tuple[BoundProperty, ...], start: float, offset: float) -> Schedule:
        """Group ``points`` by collect cycle; the first tick of each group is at start+offset."""
        by_period: dict[int, list[BoundProperty]] = {}
        for point in points:
            by_period.setdefault(point.collect_cycle_ms, []).append(point)
        groups = [
            _Group(period_ms / 1000, tuple(group), start + offset % (period_ms / 1000))
            for period_ms, group in sorted(by_period.items())
        ]
        return cls(groups)

    def next_deadline(self) -> float:
        """The monotonic time of the next tick (``inf`` when there is nothing to poll)."""
        groups = self.groups
        if len(groups) == 1:  # one collect cycle per device: the common case, every tick
            return groups[0].next_due
        return min((g.next_due for g in groups), default=math.inf)

    def take_due(self, now: float) -> tuple[BoundProperty, ...]:
        """The points of every group due at ``now``; advances those groups past ``now``."""
        due: tuple[BoundProperty, ...] = ()
        for group in self.groups:
            if group.next_due > now:
                continue
            # The group's own tuple when it is the only one due: nothing built per tick.
            due = due + group.points if due else group.points
            # Jump to the first grid point after now; every grid point jumped over beyond the
            # one being served now is a missed cycle.
            behind = math.floor((now - group.next_due) / group.period)
            self.missed += behind
            group.next_due += (behind + 1) * group.period
        return due


def phase_offset(start: float, period: float, step: float, draw: float) -> float:
    """The offset to give ``Schedule.build`` so the first tick lands on the process-wide grid
    of ``step`` seconds of the loop clock, at phase ``draw`` (in [0, 1)) of the period.

    Devices whose periods are multiples of ``step`` then stay on that grid and share wake-ups
    (``Ticker``); ``step`` is at most an eighth of the period, so fast devices still get eight
    phases to spread over. ``step <= 0`` keeps the raw phase.
    """
    step = min(step, period / 8)
    if step <= 0 or period <= 0:
        return draw * period
    first = math.ceil((start + draw * period) / step) * step
    return first - start


_US = 1_000_000


class Ticker:
    """Wakes poll loops at their deadlines with one timer per distinct deadline (to the
    microsecond), not one per loop.

    Per device, ``asyncio.sleep`` costs a timer handle, a heap push and pop, and usually an
    event-loop turn with its own ``epoll`` call, since devices spread over the period rarely
    share one: about 30 µs per wake-up with 1,000 devices at 1 Hz, the largest single cost of
    a device's tick. Devices on the same phase (``phase_offset``) wait on one timer and are
    all woken in one turn. A wake-up comes at most 2 µs after the deadline and never before
    it (to float rounding: the poll loop checks the clock and waits again if early).
    """

    __slots__ = ("_loop", "_slots")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, list[asyncio.Future[None]]] = {}

    def wait_until(self, deadline: float) -> asyncio.Future[None]:
        """A future that resolves at the loop time ``deadline`` (never, for ``inf``)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if deadline == math.inf:
            return future
        # Rounded, not truncated: deadlines on one grid point may differ by a float ulp.
        key = round(deadline * _US)
        waiters = self._slots.get(key)
        if waiters is None:
            waiters = self._slots[key] = []
            # Past every deadline rounded to this key, so they have all passed when it fires.
            loop.call_at((key + 1) / _US, self._fire, key)
        waiters.append(future)
        return future

    def _fire(self, key: int) -> None:
        for future in self._slots.pop(key):
            if not future.done():  # a cancelled waiter (its device stopped) is skipped
                future.set_result(None)
