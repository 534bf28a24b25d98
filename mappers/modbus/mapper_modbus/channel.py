"""What a link's scheduler and the connections it drives agree on: requests, jobs, outcomes.

A ``Channel`` is one connection carrying one request at a time. Two kinds exist: the lean
Modbus/TCP channel (``tcp``), whose deadlines the link keeps with one timer for all of them,
and the pymodbus channel (``stock``) for every other transport, which times its own requests.
A channel reports each outcome to its ``Owner`` (the link): the response's data bytes, or an
exception instance (``ExceptionReply``, ``BadReply``, ``LinkLost``, ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BadReply", "Channel", "ExceptionReply", "Job", "LinkLost", "Op", "Owner"]


@dataclass(frozen=True, slots=True)
class Op:
    """One Modbus request: a read (``count`` items) or a write (``values``)."""

    function: int
    unit: int
    address: int
    count: int
    values: tuple[int, ...] = ()


class ExceptionReply(Exception):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception {code:02d}")
        self.code = code


class LinkLost(Exception):
    """The connection is closed or broke while the request was under way."""


class BadReply(Exception):
    """A response arrived but does not fit the request (short, undecodable)."""


@dataclass(slots=True, eq=False)
class Job:
    """One queued request and the future its caller waits on."""

    op: Op
    timeout: float  # seconds per attempt, from the moment it is sent
    retries: int  # further attempts after a timeout
    future: asyncio.Future[bytes]
    write: bool  # writes go ahead of polls
    probe: bool = False  # a retry: passes its unit's backoff
    deadline: float = 0.0  # loop time by which the answer must be in (link-timed channels)


class Owner(Protocol):
    """The link a channel reports to."""

    def settle(self, channel: Channel, job: Job, outcome: bytes | BaseException) -> None:
        """The job's answer (data bytes) or failure."""

    def channel_lost(self, channel: Channel, job: Job | None, reason: str) -> None:
        """The connection closed; ``job`` was in flight on it (if any)."""


class Channel(Protocol):
    """One connection with at most one request in flight (``job``)."""

    job: Job | None
    link_timed: bool
    """True when the link enforces ``job.deadline`` (and calls ``abandon``)."""

    @property
    def connected(self) -> bool: ...

    def start(self, job: Job) -> None:
        """Send ``job``; its outcome comes later through ``Owner.settle``, never from here."""

    def abandon(self) -> None:
        """Forget the job in flight (it timed out); a late answer to it is dropped."""

    def close(self) -> None:
        """Close without reporting anything more to the owner."""

    async def wait_closed(self) -> None:
        """Until nothing started by the channel runs any more (after ``close``)."""
