"""The EdgeCore MQTT event bus (contract §3): reports out, desired values in, nothing lost.

Reports go through the durable outbox: ``publish_twins`` stages the encoded ``twin/update``;
a *turn* (on the next loop iteration, or ``batch_delay`` later so reports arriving close
together share it) commits staged entries, the confirmations received since the last turn and
the hand-out of the next pending entries in one SQLite transaction (that commit is when a report
counts as accepted; nothing is published before it), publishes them in sequence order with QoS
1 inside a bounded window, and removes an entry only when delivery is confirmed: by EdgeCore's
``twin/update/result`` for its ``event_id`` once EdgeCore has shown it answers on this bus,
otherwise by the broker's PUBACK (``ConfirmMode``). After a reconnect everything unconfirmed is
sent again in order (at least once; EdgeCore treats a repeat as one more report).

Desired values arrive as ``twin/update/delta`` (and as ``expected`` values in
``twin/get/result`` after every (re)connect). Each is persisted, then acknowledged to the
broker, then handed to the runtime's single write path; the outcome is published on
``{prefix}/events/device/{id}/desired/result``. EdgeCore repeats a delta after every report
while expected != actual; the delta's expected timestamp is the version, so a repeat is
applied at most once.

Malformed messages are rejected, counted by reason and logged once per reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import paho.mqtt.client as paho

from mapper_sdk._backoff import Backoff
from mapper_sdk._desired_store import DesiredStore
from mapper_sdk._outbox import Entry, Outbox, OutboxError, OutboxStats
from mapper_sdk.binding import BoundDevice, DeviceRef
from mapper_sdk.bus import DesiredChange, DesiredHandler, TwinReport, WriteResult, topics
from mapper_sdk.bus import messages as msg
from mapper_sdk.bus._paho import PahoConnection
from mapper_sdk.bus.mqtt_settings import ConfirmMode, MqttSettings
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import EventBusError

log = logging.getLogger("mapper_sdk.mqtt")

MembershipHandler = Callable[[list[str], list[str]], None]
"""Called with (added ids, removed ids) when EdgeCore's device list for this node changes."""


@dataclass(slots=True)
class MqttStats:
    """Counters the tests and /metrics read (reliability §2.7)."""

    produced: int = 0
    persisted: int = 0
    published: int = 0
    broker_acked: int = 0
    confirmed: int = 0
    resent: int = 0
    connects: int = 0
    disconnects: int = 0
    desired_received: int = 0
    desired_applied: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    """Messages refused: ours by EdgeCore (``edgecore_400``...) or incoming ones by us."""
    desired_refused: Counter[str] = field(default_factory=Counter)


class MqttEventBus:
    """``EventBus`` over MQTT with a durable outbox. Use inside ``MapperRuntime``."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        state_dir: str | Path | None = None,
        outbox: Outbox | None = None,
        on_membership: MembershipHandler | None = None,
    ) -> None:
        self.settings = settings
        self.stats = MqttStats()
        self.membership: set[str] = set()
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._outbox = outbox
        self._desired: DesiredStore | None = None
        self._marks: list[tuple[str, str, int, str]] = []  # outcomes to record this turn
        self._on_membership = on_membership
        self._on_desired: DesiredHandler | None = None
        self._devices: dict[DeviceRef, BoundDevice] = {}
        self._by_name: dict[str, DeviceRef] = {}
        self._twin_topics: dict[DeviceRef, str] = {}
        self._staged: list[Entry] = []
        self._staged_bytes = 0
        self._confirmed: list[int] = []
        self._sent_ids: set[int] = set()  # sent and not yet confirmed, to count resends
        self._inflight: dict[int, Entry] = {}  # MQTT mid -> entry awaiting PUBACK
        self._awaiting: dict[str, tuple[Entry, float]] = {}  # event_id -> (entry, deadline)
        self._edgecore_answers = False
        self._last_result = -math.inf  # monotonic time of EdgeCore's last result
        self._conn: PahoConnection | None = None
        self._turn_handle: asyncio.Handle | None = None
        self._turn_soon = False  # the scheduled turn runs on the next loop iteration
        self._progress = asyncio.Event()  # set on every state change, for wait_for
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._logged: set[str] = set()
        self._event_ids = itertools.count(1)
        self._event_prefix = f"{os.getpid():x}-{int(time.time()):x}-"

    # -- EventBus -------------------------------------------------------------------------

    async def start(self, on_desired: DesiredHandler) -> None:
        self._on_desired = on_desired
        if self._state_dir is not None:
            self._state_dir.mkdir(parents=True, exist_ok=True)
        if self._outbox is None:
            path = self._state_dir / "outbox.sqlite3" if self._state_dir else ":memory:"
            self._outbox = Outbox.open(path)
        self._desired = DesiredStore(
            self._state_dir / "desired.sqlite3" if self._state_dir else ":memory:"
        )
        self._task = asyncio.create_task(self._run(), name="mqtt event bus")
        if self._staged:
            self._kick(soon=False)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds; re-checked whenever the bus makes progress."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._progress.clear()
                await self._progress.wait()

    def publish_twins(self, report: TwinReport) -> None:
        ref = report.ref
        event_id = f"{self._event_prefix}{next(self._event_ids)}"
        payload = msg.build_checked_twin_report_of(  # names checked at bind, values by values.py
            report.twins, event_id=event_id, timestamp=report.timestamp_ms
        )
        topic = self._twin_topics.get(ref)
        if topic is None:
            if len(self._twin_topics) >= 100_000:  # bounded: refs of devices long removed
                self._twin_topics.clear()
            topic = topics.twin_update(self._ns(ref), ref.name, self.settings.id_style)
            self._twin_topics[ref] = topic
        self._stage(Entry(ref.id, "twin", None, topic, payload, event_id))
        if self.settings.data_topic:
            self._publish_data(report)

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        payload = msg.build_state_update(state.value, timestamp=timestamp_ms)
        topic = topics.state_update(self._ns(ref), ref.name, self.settings.id_style)
        self._stage(Entry.new(ref.id, "state", "state", topic, payload, ""))

    def device_added(self, device: BoundDevice) -> None:
        self._devices[device.ref] = device
        self._by_name[device.ref.name] = device.ref
        self._restore_desired(device.ref)
        if self._conn is not None:
            self._request_twin(self._conn, device.ref)

    def device_removed(self, ref: DeviceRef) -> None:
        self._devices.pop(ref, None)
        if self._by_name.get(ref.name) == ref:
            del self._by_name[ref.name]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)
        if self._turn_handle is not None:
            self._turn_handle.cancel()
            self._turn_handle = None
        self._flush()
        if self._outbox is not None:
            self._outbox.close()
        if self._desired is not None:
            self._flush_marks()
            self._desired.close()

    def depth(self) -> tuple[int, int]:
        """Reports not yet confirmed (rows, bytes): in the outbox or staged for it."""
        rows, size = self._outbox.depth() if self._outbox is not None else (0, 0)
        return rows + len(self._staged), size + self._staged_bytes

    def outbox_stats(self) -> OutboxStats | None:
        """The outbox's counters (depth, drops by reason), once the bus has started."""
        return self._outbox.stats() if self._outbox is not None else None

    # -- connection loop ------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        down_logged = False
        while True:
            conn = PahoConnection(
                self.settings,
                on_message=self._on_message,
                on_published=self._on_published,
                will=(self._status_topic(), b"offline"),
            )
            try:
                await conn.connect()
            except EventBusError as exc:
                if not down_logged:
                    log.warning("MQTT broker %s unreachable: %s", self.settings.url, exc)
                    down_logged = True
                await asyncio.sleep(backoff.next())
                continue
            if down_logged:
                log.info("MQTT broker %s reachable again", self.settings.url)
            down_logged = False
            backoff.reset()
            try:
                await self._session(conn)
            except asyncio.CancelledError:
                await self._goodbye(conn)
                raise
            self.stats.disconnects += 1
            log.warning("MQTT connection to %s lost: %s", self.settings.url, conn.closed.result())
            await asyncio.sleep(backoff.next())

    async def _session(self, conn: PahoConnection) -> None:
        self.stats.connects += 1
        self._conn = conn
        self._connected.set()
        try:
            self._resync(conn)
            self._kick(soon=True)
            while not conn.closed.done():
                # Turns are driven by reports and PUBACKs; this only watches result deadlines.
                await asyncio.wait([conn.closed], timeout=0.5)
                self._expire_results()
        finally:
            self._conn = None
            self._flush()  # commit the confirmations that arrived before the link dropped
            self._connected.clear()
            self._progress.set()
            self._inflight.clear()
            self._awaiting.clear()
            if self._outbox is not None:
                self._outbox.requeue_inflight()

    async def _goodbye(self, conn: PahoConnection) -> None:
        """Leave cleanly: confirmations committed, status retained as offline, DISCONNECT."""
        self._flush()
        with contextlib.suppress(EventBusError):
            conn.publish(self._status_topic(), b"offline", 1, retain=True)
        await conn.disconnect()

    def _resync(self, conn: PahoConnection) -> None:
        style = self.settings.id_style
        conn.subscribe(
            [
                topics.device_filter(topics.DeviceSuffix.TWIN_UPDATE_RESULT, style),
                topics.device_filter(topics.DeviceSuffix.TWIN_UPDATE_DELTA, style),
                topics.device_filter(topics.DeviceSuffix.TWIN_GET_RESULT, style),
                topics.TWIN_PARSE_ERROR_TOPIC,
                topics.membership_get_result(self.settings.node),
                topics.membership_updated(self.settings.node),
            ],
            qos=1,
        )
        conn.publish(self._status_topic(), b"online", 1, retain=True)
        conn.publish(
            topics.membership_get(self.settings.node),
            msg.build_membership_get(f"{self._event_prefix}m"),
            1,
        )
        if self._outbox is not None:
            self._outbox.requeue_inflight()
        for ref in self._devices:
            self._request_twin(conn, ref)

    def _request_twin(self, conn: PahoConnection, ref: DeviceRef) -> None:
        topic = topics.twin_get(self._ns(ref), ref.name, self.settings.id_style)
        with contextlib.suppress(EventBusError):
            conn.publish(topic, msg.build_twin_get(f"{self._event_prefix}g"), 1)

    def _stage(self, entry: Entry) -> None:
        self.stats.produced += 1
        self._progress.set()
        self._staged.append(entry)
        self._staged_bytes += entry.size
        if len(self._staged) == 1:
            self._kick(soon=False)

    def _kick(self, *, soon: bool) -> None:
        """Schedule a turn: on the next loop iteration, or within ``batch_delay``."""
        handle = self._turn_handle
        if handle is not None:
            if self._turn_soon or not soon:
                return  # the turn already scheduled comes soon enough
            handle.cancel()
        loop = asyncio.get_running_loop()
        delay = self.settings.batch_delay
        if soon or delay <= 0:
            self._turn_handle = loop.call_soon(self._turn)
        else:
            self._turn_handle = loop.call_later(delay, self._turn)
        self._turn_soon = soon

    def _turn(self) -> None:
        """Commit staged reports and confirmations, hand out and publish what fits the window
        (a quarter of it at most): one outbox transaction and one burst of socket writes."""
        if self._turn_handle is not None:
            self._turn_handle.cancel()  # when run directly, from a PUBACK
            self._turn_handle = None
        self._progress.set()
        conn = self._conn
        chunk = self._chunk()
        handed = self._flush(min(self._room(), chunk) if conn is not None else 0)
        if handed and conn is not None:
            self._send(conn, handed)
            # Written now, not at the end of the loop turn: the broker works on this chunk
            # while the next one is prepared (or while the rest of a read's PUBACKs are handled).
            conn.write_now()
            if len(handed) == chunk and self._outbox is not None and self._outbox.idle_count:
                self._kick(soon=True)

    def _chunk(self) -> int:
        return max(1, self.settings.max_inflight // 4)

    def _room(self) -> int:
        """How many entries to hand out now: refilled in batches, a quarter window at least."""
        busy = len(self._inflight) + len(self._awaiting)
        room = self.settings.max_inflight - busy
        if room <= 0 or (busy and room < self.settings.max_inflight // 4):
            return 0
        return room

    def _flush(self, take: int = 0) -> list[Entry]:
        """One outbox transaction: confirm, append what is staged, hand out up to ``take``."""
        outbox = self._outbox
        if outbox is None:
            return []
        confirmed, self._confirmed = self._confirmed, []
        staged, staged_bytes = self._staged, self._staged_bytes
        self._staged, self._staged_bytes = [], 0
        if staged_bytes > outbox.max_bytes and any(e.size > outbox.max_bytes for e in staged):
            for entry in staged:
                if entry.size > outbox.max_bytes:
                    self._reject(
                        "outbox_write_failed",
                        f"a report of {entry.size} bytes exceeds the outbox's max_bytes",
                    )
            staged = [e for e in staged if e.size <= outbox.max_bytes]
        try:
            _, handed = outbox.exchange(confirmed, staged, take)
        except OutboxError as exc:  # disk full, I/O error: the staged reports are counted lost
            self._confirmed = confirmed + self._confirmed  # confirmations are tried again
            self._reject("outbox_write_failed", str(exc))
            return []
        self.stats.persisted += len(staged)
        return handed

    def _send(self, conn: PahoConnection, entries: list[Entry]) -> None:
        assert self._outbox is not None
        qos = self.settings.qos
        for n, entry in enumerate(entries):
            try:
                mid = conn.publish(entry.topic, entry.payload, qos)
            except EventBusError:
                # The link is going down: not the entries' fault; sent again after reconnect.
                self._outbox.release([e.id for e in entries[n:]], count_attempt=False)
                return
            self._inflight[mid] = entry
            self.stats.published += 1
            if entry.id in self._sent_ids:
                self.stats.resent += 1
            elif len(self._sent_ids) < 1_000_000:  # bounded: beyond, resends go uncounted
                self._sent_ids.add(entry.id)

    def _on_published(self, mid: int) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None or self._outbox is None:
            return
        self.stats.broker_acked += 1
        if self._wait_for_result(entry):
            deadline = time.monotonic() + self.settings.result_timeout
            self._awaiting[entry.event_id] = (entry, deadline)
        else:
            self._confirm(entry)
        if (self._outbox.idle_count or self._staged) and self._room() >= self._chunk():
            self._turn()  # refill at once, between PUBACKs of one read: keeps the broker busy
        else:
            self._kick(soon=False)  # a confirmation alone can wait a little

    def _wait_for_result(self, entry: Entry) -> bool:
        if entry.kind != "twin" or not entry.event_id:
            return False
        mode = self.settings.confirm
        return mode is ConfirmMode.RESULT or (mode is ConfirmMode.AUTO and self._edgecore_answers)

    def _confirm(self, entry: Entry) -> None:
        self._confirmed.append(entry.id)
        self._sent_ids.discard(entry.id)
        self.stats.confirmed += 1

    def _expire_results(self) -> None:
        if not self._awaiting or self._outbox is None:
            return
        now = time.monotonic()
        late = [eid for eid, (_, deadline) in self._awaiting.items() if deadline <= now]
        # A missing answer counts against the message only if EdgeCore answered others
        # meanwhile; when it is silent altogether (restarting, unsubscribed) nothing is poison.
        edgecore_alive = now - self._last_result < self.settings.result_timeout
        for event_id in late:
            entry, _ = self._awaiting.pop(event_id)
            self._outbox.release([entry.id], count_attempt=edgecore_alive)
        if late:
            self._kick(soon=True)

    # -- incoming -------------------------------------------------------------------------

    def _on_message(self, message: paho.MQTTMessage) -> None:
        try:
            self._dispatch(message.topic, bytes(message.payload))
        except (msg.MessageError, topics.TopicError, EventBusError) as exc:
            self._reject(type(exc).__name__, f"{message.topic}: {exc}")
        finally:
            if self._conn is not None and message.qos > 0:
                self._conn.ack(message.mid, message.qos)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if topic == topics.TWIN_PARSE_ERROR_TOPIC:
            result = msg.parse_twin_update_result(payload, max_size=self.settings.max_payload)
            self._reject(
                f"edgecore_{result.code}", f"EdgeCore could not parse a report: {result.reason}"
            )
            return
        if topic.startswith(topics.NODE_PREFIX):
            self._dispatch_node(topic, payload)
            return
        parsed = topics.parse_device_topic(topic, self.settings.id_style)
        suffix = parsed.suffix
        if suffix is topics.DeviceSuffix.TWIN_UPDATE_RESULT:
            # Matched by event_id, not by device: reports of a device removed meanwhile still
            # have to leave the outbox.
            device = topics.device_id(parsed.namespace, parsed.name, self.settings.id_style)
            result = msg.parse_twin_update_result(payload, max_size=self.settings.max_payload)
            self._handle_result(device, result)
            return
        ref = self._resolve(parsed.namespace, parsed.name)
        if ref is None:
            return  # another mapper's device: the filters are wildcards
        if suffix is topics.DeviceSuffix.TWIN_UPDATE_DELTA:
            delta = msg.parse_twin_delta(payload, max_size=self.settings.max_payload)
            wanted = []
            for name, value in delta.delta.items():
                twin = delta.twin.get(name)
                version = twin.expected.timestamp if twin and twin.expected else None
                wanted.append((name, value, version))
            self._desired_in(ref, wanted, "mqtt-delta")
        elif suffix is topics.DeviceSuffix.TWIN_GET_RESULT:
            self._handle_twin_get(
                ref, msg.parse_twin_get_result(payload, max_size=self.settings.max_payload)
            )

    def _dispatch_node(self, topic: str, payload: bytes) -> None:
        parsed = topics.parse_node_topic(topic)
        if parsed.suffix is topics.NodeSuffix.MEMBERSHIP_GET_RESULT:
            result = msg.parse_membership_get_result(payload, max_size=self.settings.max_payload)
            ids = {d.id for d in result.devices}
            added, removed = sorted(ids - self.membership), sorted(self.membership - ids)
            self.membership = ids
        elif parsed.suffix is topics.NodeSuffix.MEMBERSHIP_UPDATED:
            update = msg.parse_membership_updated(payload, max_size=self.settings.max_payload)
            added = [d.id for d in update.added_devices or ()]
            removed = [d.id for d in update.removed_devices or ()]
            self.membership = (self.membership | set(added)) - set(removed)
        else:
            return
        if self._on_membership is not None and (added or removed):
            self._on_membership(added, removed)

    def _handle_result(self, device: str, result: msg.TwinUpdateResult) -> None:
        self._edgecore_answers = True
        self._last_result = time.monotonic()
        waiting = self._awaiting.pop(result.event_id, None)
        if not result.ok:
            self._reject(
                f"edgecore_{result.code}", f"EdgeCore refused a report of {device}: {result.reason}"
            )
        if waiting is not None:
            # A 4xx will not succeed on a resend: it is counted and logged, and leaves too.
            self._confirm(waiting[0])
            self._kick(soon=False)

    def _handle_twin_get(self, ref: DeviceRef, result: msg.TwinGetResult) -> None:
        if not result.ok:
            return  # 404 until EdgeCore knows the device; nothing to restore
        wanted = []
        for name, twin in result.twin.items():
            if twin is None or twin.expected is None or twin.expected.value in (None, ""):
                continue
            actual = twin.actual.value if twin.actual else None
            if twin.expected.value != actual:
                wanted.append((name, twin.expected.value, twin.expected.timestamp))
        self._desired_in(ref, wanted, "mqtt-get")

    def _desired_in(
        self, ref: DeviceRef, wanted: list[tuple[str, str, int | None]], source: str
    ) -> None:
        """Persist the desired values of one message together, then apply each that is new."""
        assert self._desired is not None
        if not wanted:
            return
        self.stats.desired_received += len(wanted)
        now_ms = int(time.time() * 1000)
        rows = [(ref.id, p, v, ver if ver is not None else now_ms) for p, v, ver in wanted]
        for (_, prop, value, version), stored in zip(
            rows, self._desired.put_many(rows), strict=True
        ):
            if stored:  # else a repeat of a version already taken: at most once
                self._submit(DesiredChange(ref, prop, value, source, version))

    def _submit(self, change: DesiredChange) -> None:
        task = asyncio.get_running_loop().create_task(self._apply_desired(change))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _apply_desired(self, change: DesiredChange) -> None:
        assert self._on_desired is not None
        assert self._desired is not None
        result = await self._on_desired(change)
        self._progress.set()
        if result.ok:
            self.stats.desired_applied += 1
        elif result.reason != "pending":
            self.stats.desired_refused[result.reason] += 1
        self._mark(change.ref.id, change.property, change.version or 0, result.status.value)
        self._answer(change, result)

    def _mark(self, device_id: str, prop: str, version: int, status: str) -> None:
        # Outcomes are only bookkeeping for a restart (a value re-applied after a crash lands
        # the same): those of one loop turn share a commit.
        if not self._marks:
            asyncio.get_running_loop().call_soon(self._flush_marks)
        self._marks.append((device_id, prop, version, status))

    def _flush_marks(self) -> None:
        marks, self._marks = self._marks, []
        if marks and self._desired is not None:
            self._desired.mark_many(marks)

    def _answer(self, change: DesiredChange, result: WriteResult) -> None:
        body = {
            "event_id": "",
            "timestamp": int(time.time() * 1000),
            "property": change.property,
            "value": change.value,
            "status": result.status.value,
            "reason": result.reason,
            "message": result.message,
        }
        topic = f"{self.settings.status_prefix}/events/device/{change.ref.id}/desired/result"
        if self._conn is not None:
            with contextlib.suppress(EventBusError):
                self._conn.publish(topic, orjson.dumps(body), 1)

    def _restore_desired(self, ref: DeviceRef) -> None:
        if self._desired is None or self._on_desired is None:
            return
        for row in self._desired.for_device(ref.id):
            if row.status in ("pending", "applied"):
                self._submit(DesiredChange(ref, row.property, row.value, "restored", row.version))

    # -- helpers --------------------------------------------------------------------------

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        self._progress.set()
        if reason not in self._logged:  # once per reason, not once per message
            self._logged.add(reason)
            log.warning("rejected (%s; further ones only counted): %s", reason, detail)

    def _resolve(self, namespace: str | None, name: str) -> DeviceRef | None:
        if namespace is None:
            return self._by_name.get(name)
        ref = DeviceRef(namespace, name)
        return ref if ref in self._devices else None

    def _ns(self, ref: DeviceRef) -> str | None:
        return ref.namespace if self.settings.id_style is topics.IdStyle.NAMESPACED else None

    def _status_topic(self) -> str:
        return f"{self.settings.status_prefix}/{self.settings.node}/status"

    def _publish_data(self, report: TwinReport) -> None:
        conn = self._conn
        if conn is None:
            return  # telemetry for apps is best effort; twins are the durable path
        ref = report.ref
        body = {
            "event_id": "",
            "timestamp": report.timestamp_ms,
            "data": {
                t.name: {
                    "value": t.value,
                    "metadata": {"timestamp": report.timestamp_ms, "type": t.type},
                }
                for t in report.twins
            },
        }
        with contextlib.suppress(EventBusError):
            conn.publish(
                topics.data_update(self._ns(ref), ref.name, self.settings.id_style),
                orjson.dumps(body),
                0,
            )
