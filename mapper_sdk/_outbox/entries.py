"""What goes into the outbox and what comes out: entries, parked entries, statistics, errors,
and the twin/update merger used for compaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from mapper_sdk.errors import EventBusError

Clock = Callable[[], float]
"""Seconds on a monotonic clock."""
Merger = Callable[[Sequence[bytes]], bytes]
"""Merges payloads (oldest first) into one payload carrying the newest value of everything."""
Synchronous = Literal["NORMAL", "FULL"]


class OutboxError(EventBusError):
    """The outbox could not be opened or written; nothing of the failed call was stored."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One encoded report and what the outbox needs to order, bound and compact it.

    ``id`` and ``attempts`` are set by the outbox (0 on an entry not yet appended);
    ``event_id`` is the caller's correlation id for an application-level answer, if any.
    """

    device_id: str
    kind: str
    key: str | None
    topic: str
    payload: bytes
    event_id: str = ""
    id: int = 0
    attempts: int = 0

    @classmethod
    def new(
        cls,
        device_id: str,
        kind: str,
        key: str | None,
        topic: str,
        payload: bytes | bytearray | memoryview,
        event_id: str = "",
    ) -> Entry:
        """An entry to append."""
        return cls(device_id, kind, key, topic, bytes(payload), event_id)

    @property
    def size(self) -> int:
        """Bytes counted against ``max_bytes``: the payload and every text field, UTF-8."""
        return len(self.payload) + _text_size(self)


@dataclass(frozen=True, slots=True)
class ParkedEntry:
    """An entry taken out of delivery, and why."""

    entry: Entry
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot for metrics. Counters count since this process opened the outbox."""

    rows: int
    bytes: int
    inflight: int
    parked: int
    parked_evicted: int
    appended: int
    handed_out: int
    confirmed: int
    drops: dict[str, int]
    merge_failures: int
    quarantined: int
    durable: bool
    alarm: str | None


def merge_twin_updates(payloads: Sequence[bytes]) -> bytes:
    """A :data:`Merger` for ``twin/update`` payloads: the newest message's envelope
    (``event_id``, ``timestamp``) with the newest twin of every property found in any of them."""
    twins: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    for payload in payloads:
        doc = orjson.loads(payload)
        twins.update(doc["twin"])
    return orjson.dumps({**doc, "twin": twins})


def _text_size(entry: Entry) -> int:
    device_id, kind, key, event_id, topic = (
        entry.device_id, entry.kind, entry.key or "", entry.event_id, entry.topic
    )  # fmt: skip
    if (
        device_id.isascii()
        and kind.isascii()
        and key.isascii()
        and event_id.isascii()
        and topic.isascii()
    ):  # O(1) each: then characters are bytes
        return len(device_id) + len(kind) + len(key) + len(event_id) + len(topic)
    return sum(len(t.encode()) for t in (device_id, kind, key, event_id, topic))


def entry_from_row(row: Sequence[Any]) -> Entry:
    ident, attempts, device_id, kind, key, event_id, topic, payload = row
    return Entry(device_id, kind, key, topic, payload, event_id, ident, attempts)
