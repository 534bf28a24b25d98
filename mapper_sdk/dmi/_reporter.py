"""Reports to EdgeCore: ``ReportDeviceStatus`` and ``ReportDeviceStates``, paced and retried.

EdgeCore's ``DeviceManagerService`` shares one token bucket among every mapper of the node
(§4.1), so reports wait in a coalescing queue for a token of our own, smaller bucket
(``_pacing``); a report EdgeCore refused for the rate, or that failed in transit, goes back to
the queue (merged with anything newer) and the sender backs off. A report EdgeCore calls
invalid or unimplemented is dropped and counted, since it would be refused again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import grpc.aio

from mapper_sdk._backoff import Backoff
from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinReport
from mapper_sdk.dmi import convert
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.dmi._grpc import unary
from mapper_sdk.dmi._pacing import Entry, ReportQueue, StateEntry, TokenBucket, TwinsEntry
from mapper_sdk.dmi.settings import MANAGER_SERVICE, RATE_LIMITED, DmiSettings, DmiStats
from mapper_sdk.driver import DeviceState

log = logging.getLogger("mapper_sdk.dmi")


class Reporter:
    """The report queue and the task that drains it into EdgeCore's socket."""

    def __init__(self, settings: DmiSettings, stats: DmiStats) -> None:
        self._settings = settings
        self._stats = stats
        self.queue = ReportQueue(settings.max_queued)
        self._queued = asyncio.Event()
        self._bucket = TokenBucket(settings.report_rate, settings.report_burst)
        self._states_supported = True
        self._channel: grpc.aio.Channel | None = None

    # -- the queue ----------------------------------------------------------------------------

    def put_twins(self, report: TwinReport) -> None:
        if report.twins:
            self.queue.put(TwinsEntry.of(report))
            self._queued.set()

    def put_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        if self._states_supported:
            self.queue.put(StateEntry(ref, state, timestamp_ms))
            self._queued.set()

    def discard_twins(self, ref: DeviceRef) -> None:
        self.queue.discard(ref, "twins")

    # -- the channel and the sender -----------------------------------------------------------

    def open(self, edgecore_socket: str) -> None:
        """Make the channel to EdgeCore; it connects (and reconnects) on its own."""
        self._channel = grpc.aio.insecure_channel(
            f"unix:{edgecore_socket}", options=self._channel_options()
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _channel_options(self) -> list[tuple[str, Any]]:
        # gRPC's own reconnect backoff grows to 120 s by default: EdgeCore coming back would
        # then wait minutes for our reports. Cap it like every other retry of the link.
        cap_ms = int(self._settings.backoff_cap * 1000)
        initial_ms = max(100, min(cap_ms, int(self._settings.backoff_base * 1000)))
        return [
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", max(initial_ms, cap_ms)),
        ]

    async def flush(self, deadline: float) -> None:
        """Let the sender drain the queue until it is empty or the loop time is ``deadline``."""
        loop = asyncio.get_running_loop()
        while len(self.queue) and loop.time() < deadline:
            self._queued.set()
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    async def run(self) -> None:
        """Send queued reports as tokens allow; back off after a failure."""
        backoff = Backoff(self._settings.backoff_base, self._settings.backoff_cap)
        failing = False
        while True:
            if not self.queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            # The token comes first and the entry after it, so what waited for the token is
            # the newest merged value, not one popped before newer readings arrived.
            wait = self._bucket.wait_time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            entry = self.queue.pop()
            assert entry is not None
            self._bucket.try_take()
            ok = await self._send(entry, failing)
            if ok:
                if failing:
                    log.info("reports to EdgeCore are flowing again")
                failing = False
                backoff.reset()
            else:
                failing = True
                await asyncio.sleep(backoff.next())

    async def _send(self, entry: Entry, failing: bool) -> bool:
        """Send one entry; ``False`` when it was requeued and the sender should back off."""
        try:
            if isinstance(entry, TwinsEntry):
                await self._send_twins(entry)
            else:
                await self._send_state(entry)
        except grpc.aio.AioRpcError as exc:
            return self._send_failed(entry, exc, failing)
        return True

    async def _send_twins(self, entry: TwinsEntry) -> None:
        assert self._channel is not None
        request = pb.ReportDeviceStatusRequest(
            deviceName=entry.ref.name, deviceNamespace=entry.ref.namespace
        )
        convert.twins_to_dmi(entry.twins.values(), request.reportedDevice)
        call = unary(
            self._channel, MANAGER_SERVICE, "ReportDeviceStatus", pb.ReportDeviceStatusResponse
        )
        await call(request, timeout=self._settings.call_timeout)
        self._stats.twin_reports_sent += 1

    async def _send_state(self, entry: StateEntry) -> None:
        assert self._channel is not None
        call = unary(
            self._channel, MANAGER_SERVICE, "ReportDeviceStates", pb.ReportDeviceStatesResponse
        )
        await call(
            convert.state_to_dmi(entry.ref, entry.state), timeout=self._settings.call_timeout
        )
        self._stats.state_reports_sent += 1

    def _send_failed(self, entry: Entry, exc: grpc.aio.AioRpcError, failing: bool) -> bool:
        code, details = exc.code(), exc.details() or ""
        what = "twins" if isinstance(entry, TwinsEntry) else "state"
        if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
            self._stats.dropped_unsendable += 1
            if isinstance(entry, StateEntry) and code is grpc.StatusCode.UNIMPLEMENTED:
                # EdgeCore < 1.18 has no ReportDeviceStates: stop queueing states for good.
                self._states_supported = False
                self.queue.discard_kind("state")
                log.warning("EdgeCore does not implement ReportDeviceStates; states not sent")
            else:
                log.error("EdgeCore refused the %s report of %s: %s", what, entry.ref, details)
            return True  # not retried: the same report would be refused again
        self.queue.requeue(entry)
        self._queued.set()
        if RATE_LIMITED in details:
            self._stats.rate_limited += 1
        else:
            self._stats.send_errors += 1
        log.log(
            logging.DEBUG if failing else logging.WARNING,
            "reporting %s of %s to EdgeCore failed (%s: %s); backing off",
            what,
            entry.ref,
            code.name,
            details,
        )
        return False
