"""``SinkRunner``: one sink behind a bounded queue, so a slow or dead destination never
slows polling.

The runner owns everything between ``offer`` and ``Sink.write``:

- a bounded FIFO per sink; when it is full the *oldest* sample is dropped and counted
  (``dropped["queue_full"]``), because a time series wants the newest values;
- batching: a batch is written when it reaches ``max_batch`` samples or when its first sample
  has waited ``max_delay`` seconds;
- retries: a failed batch goes back to the front of the queue (still bounded, still
  drop-oldest) and is retried after a capped, full-jitter backoff (``mapper_sdk._backoff``);
- stats for metrics: queued, written, dropped by reason, failures, last error.

``offer`` is synchronous and O(1): a deque append and at most one ``Event.set``. It must be
called on the event loop's thread, like everything the device supervisors do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from mapper_sdk._backoff import Backoff
from mapper_sdk.sinks._base import Sample, Sink, SinkError, SinkRejected

log = logging.getLogger("mapper_sdk.sinks")

QUEUE_FULL = "queue_full"
"""Drop reason: the queue was full, the oldest sample made room for a new one."""
REJECTED = "rejected"
"""Drop reason: the destination refused the batch for good (``SinkRejected``)."""
CLOSED = "closed"
"""Drop reason: still queued (or offered) when the runner closed."""


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Queue bound, batching and retry policy of one sink (seconds unless named otherwise)."""

    max_queue: int = 10_000
    max_batch: int = 500
    max_delay: float = 1.0
    """How long the first sample of a batch waits for the batch to fill."""
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    close_timeout: float = 5.0
    """How long ``aclose`` tries to flush before it drops what is left."""

    def __post_init__(self) -> None:
        if self.max_queue < 1 or self.max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")


@dataclass(slots=True)
class SinkStats:
    """Counters of one runner, read by metrics and tests. ``queued`` is the current depth."""

    queued: int = 0
    in_flight: int = 0
    offered: int = 0
    written: int = 0
    batches: int = 0
    failures: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    healthy: bool = True

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class SinkRunner:
    """Feeds one ``Sink`` from a bounded queue. ``start()`` on the loop, ``aclose()`` to stop."""

    def __init__(self, sink: Sink, settings: RunnerSettings | None = None) -> None:
        self.sink = sink
        self.settings = settings or RunnerSettings()
        self.stats = SinkStats()
        self._queue: deque[Sample] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set after every batch leaves the queue for good
        self._hurry = False  # a flush() is waiting: write partial batches at once
        self._closing = asyncio.Event()
        self._accepting = True
        self._in_flight: Sequence[Sample] = ()
        self._backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.sink.name

    # -- the caller's side ------------------------------------------------------------------

    def offer(self, sample: Sample) -> None:
        """Queue one sample; never blocks, never raises. Drops the oldest when full."""
        stats = self.stats
        stats.offered += 1
        if not self._accepting:
            self._drop(CLOSED, 1)
            return
        queue = self._queue
        if len(queue) >= self.settings.max_queue:
            queue.popleft()
            self._drop(QUEUE_FULL, 1)
        queue.append(sample)
        depth = len(queue)
        stats.queued = depth
        # Wake the writer for the first sample of a batch and when a batch is full; in
        # between it is asleep on its max_delay timer and needs no wake-up per sample.
        if depth == 1 or depth >= self.settings.max_batch:
            self._wake.set()

    def _drop(self, reason: str, count: int) -> None:
        if count:
            dropped = self.stats.dropped
            dropped[reason] = dropped.get(reason, 0) + count

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"sink {self.sink.name}"
            )

    async def flush(self) -> None:
        """Wait until everything offered so far has left the queue (written or dropped).

        Waits as long as the sink is down: bound it with ``asyncio.timeout``."""
        while (self._queue or self._in_flight) and self._task is not None:
            self._progress.clear()
            self._hurry = True  # no need to sit out max_delay: someone is waiting
            self._wake.set()
            await self._progress.wait()

    async def aclose(self, flush_within: float | None = None) -> None:
        """Flush for at most ``flush_within`` seconds (default ``settings.close_timeout``),
        drop the rest, close the sink."""
        self._accepting = False
        self._closing.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            wait = self.settings.close_timeout if flush_within is None else flush_within
            _, pending = await asyncio.wait({task}, timeout=wait)
            if pending:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._drop(CLOSED, len(self._queue) + len(self._in_flight))
        self._queue.clear()
        self._in_flight = ()
        self.stats.queued = self.stats.in_flight = 0
        self._progress.set()  # release flush() callers: nothing is left to wait for
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(1.0, self.settings.close_timeout)):
                await self.sink.aclose()

    # -- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        if not await self._open():
            return
        while True:
            batch = await self._next_batch()
            if not batch:
                return
            if not await self._deliver(batch):
                return

    async def _open(self) -> bool:
        while True:
            try:
                await self.sink.open()
            except Exception as exc:
                self._failed(exc)
                if not await self._pause():
                    return False
                continue
            self._succeeded()
            return True

    async def _next_batch(self) -> list[Sample]:
        """Wait for a full batch, ``max_delay`` after the first sample, or close."""
        loop = asyncio.get_running_loop()
        queue, settings = self._queue, self.settings
        while not queue:
            if self._closing.is_set():
                return []
            self._wake.clear()
            await self._wake.wait()
        deadline = loop.time() + settings.max_delay
        while len(queue) < settings.max_batch and not (self._closing.is_set() or self._hurry):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
        count = min(len(queue), settings.max_batch)
        batch = [queue.popleft() for _ in range(count)]
        self.stats.queued = len(queue)
        if not queue:
            self._hurry = False
        return batch

    async def _deliver(self, batch: list[Sample]) -> bool:
        """Write ``batch``; on failure put it back and back off. ``False`` ends the runner."""
        # Not reset in a ``finally``: if close cancels the write, aclose counts these samples
        # as dropped, so they must still be visible here.
        self._in_flight = batch
        self.stats.in_flight = len(batch)
        try:
            await self.sink.write(batch)
        except SinkRejected as exc:
            self._clear_in_flight()
            self._drop(REJECTED, len(batch))
            self.stats.last_error = _describe(exc)
            log.warning("sink %s refused %d samples: %s", self.sink.name, len(batch), exc)
            return True
        except Exception as exc:
            self._clear_in_flight()
            self._failed(exc)
            done = min(exc.written, len(batch)) if isinstance(exc, SinkError) else 0
            self.stats.written += done
            self._put_back(batch[done:])
            return await self._pause()
        self._clear_in_flight()
        self.stats.written += len(batch)
        self.stats.batches += 1
        self._succeeded()
        return True

    def _clear_in_flight(self) -> None:
        self._in_flight = ()
        self.stats.in_flight = 0
        self._progress.set()

    def _put_back(self, batch: list[Sample]) -> None:
        # The batch is older than anything queued, so it goes back in front; if new samples
        # filled the queue meanwhile, the oldest part of the batch is what gets dropped.
        queue = self._queue
        room = self.settings.max_queue - len(queue)
        keep = batch[len(batch) - room :] if room < len(batch) else batch
        self._drop(QUEUE_FULL, len(batch) - len(keep))
        queue.extendleft(reversed(keep))
        self.stats.queued = len(queue)

    async def _pause(self) -> bool:
        """Back off before the next attempt; ``False`` when closing (no point retrying)."""
        if self._closing.is_set():
            return False
        delay = self._backoff.next()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closing.wait()
        # Closing during the backoff still earns one last attempt to flush.
        return True

    def _failed(self, exc: BaseException) -> None:
        stats = self.stats
        stats.failures += 1
        stats.last_error = _describe(exc)
        if stats.healthy:
            stats.healthy = False
            # Logged once per outage, not once per retry.
            if isinstance(exc, SinkError):
                log.warning("sink %s is failing: %s", self.sink.name, stats.last_error)
            else:
                log.error("sink %s failed unexpectedly", self.sink.name, exc_info=exc)

    def _succeeded(self) -> None:
        self._backoff.reset()
        if not self.stats.healthy:
            self.stats.healthy = True
            log.info("sink %s is writing again", self.sink.name)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
