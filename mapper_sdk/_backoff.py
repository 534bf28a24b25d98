"""Capped exponential backoff with full jitter (AWS architecture blog's "full jitter").

Every reconnect loop in the library uses this one policy: the n-th wait is uniform in
``[0, min(cap, base * 2**n)]``. The randomness desynchronises many clients that lost the same
server at the same instant, so they do not all come back in the same millisecond.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SHARED_RNG = random.Random()
"""One generator for every loop: a ``Random`` per device supervisor would cost 2.5 KB each."""


@dataclass(slots=True)
class Backoff:
    """Successive waits for one reconnect loop; ``reset`` after a success."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=lambda: _SHARED_RNG)
    attempt: int = 0

    def next(self) -> float:
        """The next wait in seconds."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
