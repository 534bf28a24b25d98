"""When to read what: one schedule per device, properties grouped by ``collectCycle``.

No task or timer per property: the device's poll loop asks the schedule for the next deadline
and the groups due then, reads them in one ``Driver.read`` call, and comes back. Ticks sit on
the grid ``start + offset + k * period`` of the monotonic clock, so they do not drift; a tick
that is already late when the loop gets to it is skipped and counted, never run in a burst.
The offset spreads devices over their period so a thousand devices do not poll in lockstep.
"""

from __future__ import annotations

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
        return min((g.next_due for g in self.groups), default=math.inf)

    def take_due(self, now: float) -> list[BoundProperty]:
        """The points of every group due at ``now``; advances those groups past ``now``."""
        due: list[BoundProperty] = []
        for group in self.groups:
            if group.next_due > now:
                continue
            due.extend(group.points)
            # Jump to the first grid point after now; every grid point jumped over beyond the
            # one being served now is a missed cycle.
            behind = math.floor((now - group.next_due) / group.period)
            self.missed += behind
            group.next_due += (behind + 1) * group.period
        return due
