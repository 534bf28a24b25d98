"""``SinkHub``: builds the sinks a device's ``pushMethod`` asks for and routes reports to them.

Attach it to a runtime with three calls (see the package docstring): ``add_device`` when a
device starts, ``remove_device`` when it stops, ``submit`` for every ``TwinReport``.

- **Several destinations per property.** KubeEdge's framework honours only the first of
  http/mqtt/otel (in that order) plus the dbMethod (contract §5.6); here every method set on a
  property gets the samples, and all four dbMethods may be set together.
- **One sink per target.** Properties (of any device) naming the same destination -- the same
  URL, broker address, database -- share one sink, one connection and one bounded queue.
  Per-property details (MQTT topic, InfluxDB measurement) travel with each sample as its
  ``route``. A sink no device uses any more is closed after a short grace period, so a device
  restart (remove, then add) keeps its sink and queue.
- **reportCycle.** Every value in a report becomes a sample: the twin engine already reports
  on change and at least every ``reportCycle``, so sinks see what the twin sees.
- **Local store.** ``local_store=SqliteSettings(path)`` keeps every reported value of every
  device in SQLite, whatever its ``pushMethod``.
- **anomalyDetection** (KubeEdge 1.23) is free-form and has no sink here; it is ignored.

A pushMethod that cannot be built (an empty field, a missing optional library) is reported in
``problems`` and logged; the device and its other sinks run anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mapper_sdk.binding import BoundDevice, BoundProperty, DeviceRef
from mapper_sdk.bus import TwinReport
from mapper_sdk.errors import ConfigError
from mapper_sdk.sinks._base import Sample, Sink
from mapper_sdk.sinks._runner import RunnerSettings, SinkRunner, SinkStats
from mapper_sdk.sinks.http import HttpSettings
from mapper_sdk.sinks.influxdb2 import InfluxSettings
from mapper_sdk.sinks.mqtt import MqttSinkSettings
from mapper_sdk.sinks.mysql import MysqlSettings
from mapper_sdk.sinks.otel import OtelSettings
from mapper_sdk.sinks.redis import RedisSettings
from mapper_sdk.sinks.sqlite import SqliteSettings, SqliteSink
from mapper_sdk.sinks.tdengine import TdengineSettings

log = logging.getLogger("mapper_sdk.sinks")

SinkFactory = Callable[[Any], Sink]
"""Builds a sink from a settings object (``HttpSettings``...); the default calls ``.build()``."""

Target = tuple[Hashable, object]
"""A destination's settings (equal settings share a sink) and the property's route."""

IDLE_GRACE = 2.0
"""Seconds an unused sink stays open in case a restarting device asks for it again."""


def _build(settings: Any) -> Sink:
    sink: Sink = settings.build()
    return sink


def targets_of(
    point: BoundProperty,
    *,
    env: Mapping[str, str] | None = None,
    http_format: Literal["json", "form"] = "json",
) -> tuple[list[Target], list[str]]:
    """Every destination ``point.push_method`` names, and a message per one that is invalid."""
    push = point.push_method
    found: list[Target] = []
    problems: list[str] = []
    if push is None:
        return found, problems
    where = f"property {point.name!r} pushMethod"

    def add(kind: str, make: Callable[[], Target]) -> None:
        try:
            found.append(make())
        except ConfigError as exc:
            problems.append(f"{where}.{kind}: {exc}")

    if push.http is not None:
        http = push.http
        add("http", lambda: (HttpSettings.from_crd(http, http_format), None))
    if push.mqtt is not None:
        mqtt = push.mqtt
        add("mqtt", lambda: MqttSinkSettings.from_crd(mqtt, env))
    if push.otel is not None:
        otel = push.otel
        add("otel", lambda: (OtelSettings.from_crd(otel), None))
    db = push.db_method
    if db is not None:
        if db.influxdb2 is not None:
            influx = db.influxdb2
            add("dbMethod.influxdb2", lambda: InfluxSettings.from_crd(influx, env))
        if db.redis is not None:
            config = db.redis.redis_client_config
            if config is None:
                problems.append(f"{where}.dbMethod.redis: redisClientConfig is missing")
            else:
                add("dbMethod.redis", lambda: (RedisSettings.from_crd(config, env), None))
        if db.tdengine is not None:
            td = db.tdengine.td_engine_client_config
            if td is None:
                problems.append(f"{where}.dbMethod.TDEngine: TDEngineClientConfig is missing")
            else:
                add("dbMethod.TDEngine", lambda: (TdengineSettings.from_crd(td, env), None))
        if db.mysql is not None:
            my = db.mysql.mysql_client_config
            if my is None:
                problems.append(f"{where}.dbMethod.mysql: mysqlClientConfig is missing")
            else:
                add("dbMethod.mysql", lambda: (MysqlSettings.from_crd(my, env), None))
    return found, problems


@dataclass(slots=True)
class _Shared:
    runner: SinkRunner
    users: set[DeviceRef] = field(default_factory=set)
    reaper: asyncio.TimerHandle | None = None


Routes = dict[str, tuple[tuple[SinkRunner, object], ...]]


class SinkHub:
    """The sinks of every running device; see the module docstring.

    Args:
        settings: queue, batching and retry policy of every sink.
        local_store: keep every reported value in this SQLite store.
        http_format: the body format of HTTP targets without a ``pushFormat`` query.
        env: where secrets (``TOKEN``, ``PASSWORD``, ``USERNAME``) are read; ``os.environ``.
        factory: builds a sink from its settings (tests substitute fakes).
    """

    def __init__(
        self,
        *,
        settings: RunnerSettings | None = None,
        local_store: SqliteSettings | None = None,
        http_format: Literal["json", "form"] = "json",
        env: Mapping[str, str] | None = None,
        factory: SinkFactory = _build,
    ) -> None:
        self.settings = settings or RunnerSettings()
        self.local_store = local_store
        self.http_format = http_format
        self.env = env
        self.factory = factory
        self.problems: dict[DeviceRef, list[str]] = {}
        self._routes: dict[DeviceRef, Routes] = {}
        self._uses: dict[DeviceRef, set[Hashable]] = {}
        self._shared: dict[Hashable, _Shared] = {}
        self._local: SinkRunner | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- devices ----------------------------------------------------------------------------

    def add_device(self, device: BoundDevice) -> list[str]:
        """Route ``device``'s properties to their sinks (replacing earlier routes of the same
        device); returns the problems found, which are also logged. Call on the event loop."""
        if self._closed:
            return []
        self._ensure_local()
        ref = device.ref
        problems: list[str] = []
        routes: dict[str, list[tuple[SinkRunner, object]]] = {}
        uses: set[Hashable] = set()
        for point in device.properties:
            targets, bad = targets_of(point, env=self.env, http_format=self.http_format)
            problems.extend(bad)
            for key, route in targets:
                runner = self._acquire(key, ref, problems, point.name)
                if runner is not None:
                    uses.add(key)
                    routes.setdefault(point.name, []).append((runner, route))
        for old in self._uses.get(ref, set()) - uses:
            self._release(old, ref)
        self._uses[ref] = uses
        self._routes[ref] = {name: tuple(pairs) for name, pairs in routes.items()}
        if any(p.push_method and p.push_method.anomaly_detection for p in device.properties):
            log.info("device %s: pushMethod.anomalyDetection is not supported; ignored", ref)
        if problems:
            self.problems[ref] = problems
            for problem in problems:
                log.warning("device %s: %s", ref, problem)
        else:
            self.problems.pop(ref, None)
        return problems

    def remove_device(self, ref: DeviceRef) -> None:
        """Stop routing ``ref``; sinks nobody uses any more close after ``IDLE_GRACE``."""
        self._routes.pop(ref, None)
        self.problems.pop(ref, None)
        for key in self._uses.pop(ref, set()):
            self._release(key, ref)

    def _acquire(
        self, key: Hashable, ref: DeviceRef, problems: list[str], prop: str
    ) -> SinkRunner | None:
        shared = self._shared.get(key)
        if shared is None:
            try:
                sink = self.factory(key)
            except ConfigError as exc:
                problems.append(f"property {prop!r} pushMethod: {exc}")
                return None
            runner = SinkRunner(sink, self.settings)
            runner.start()
            shared = self._shared[key] = _Shared(runner)
        if shared.reaper is not None:
            shared.reaper.cancel()
            shared.reaper = None
        shared.users.add(ref)
        return shared.runner

    def _release(self, key: Hashable, ref: DeviceRef) -> None:
        shared = self._shared.get(key)
        if shared is None:
            return
        shared.users.discard(ref)
        if not shared.users and shared.reaper is None:
            loop = asyncio.get_running_loop()
            shared.reaper = loop.call_later(IDLE_GRACE, self._reap, key)

    def _reap(self, key: Hashable) -> None:
        shared = self._shared.get(key)
        if shared is None or shared.users:
            return
        del self._shared[key]
        self._close_later(shared.runner)

    def _close_later(self, runner: SinkRunner) -> None:
        task = asyncio.get_running_loop().create_task(runner.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _ensure_local(self) -> SinkRunner | None:
        if self._local is None and self.local_store is not None and not self._closed:
            try:
                sink = self.factory(self.local_store)
            except ConfigError as exc:
                log.error("local store: %s", exc)
                self.local_store = None
                return None
            self._local = SinkRunner(sink, self.settings)
            self._local.start()
        return self._local

    # -- reports ----------------------------------------------------------------------------

    def submit(self, report: TwinReport) -> None:
        """Offer every value of ``report`` to its property's sinks. Never blocks."""
        routes = self._routes.get(report.ref)
        local = self._local
        if local is None and self.local_store is not None:
            local = self._ensure_local()
        if not routes and local is None:
            return
        ref, ts = report.ref, report.timestamp_ms
        for twin in (*report.twins, *report.local):  # local: reportToCloud false, still pushed
            pairs = routes.get(twin.name) if routes else None
            if local is None and not pairs:
                continue
            base = Sample(ref.namespace, ref.name, twin.name, twin.value, twin.type, ts)
            if local is not None:
                local.offer(base)
            if pairs:
                for runner, route in pairs:
                    sample = base
                    if route is not None:
                        sample = Sample(
                            ref.namespace, ref.name, twin.name, twin.value, twin.type, ts, route
                        )
                    runner.offer(sample)

    # -- inspection and shutdown ------------------------------------------------------------

    async def history(
        self, ref: DeviceRef, property: str, *, since_ms: int = 0, limit: int = 1000
    ) -> list[Sample] | None:
        """The newest ``limit`` stored values of one property since ``since_ms`` (wall-clock
        ms), oldest first, from the local store; ``None`` when there is no local store. Values
        still queued for the store (at most ``settings.max_delay`` old) are not included."""
        local = self._ensure_local()
        if local is None or not isinstance(local.sink, SqliteSink):
            return None
        return await local.sink.history(
            ref.namespace, ref.name, property, since_ms=since_ms, limit=limit
        )

    @property
    def runners(self) -> dict[str, SinkRunner]:
        """Every open sink's runner by sink name (the local store included)."""
        found = {shared.runner.name: shared.runner for shared in self._shared.values()}
        if self._local is not None:
            found[self._local.name] = self._local
        return found

    def stats(self) -> dict[str, SinkStats]:
        """Counters of every open sink, by sink name: for ``/metrics``."""
        return {name: runner.stats for name, runner in self.runners.items()}

    async def aclose(self) -> None:
        """Flush every sink (each within ``settings.close_timeout``) and close them."""
        self._closed = True
        runners = [shared.runner for shared in self._shared.values()]
        for shared in self._shared.values():
            if shared.reaper is not None:
                shared.reaper.cancel()
        if self._local is not None:
            runners.append(self._local)
        self._shared.clear()
        self._routes.clear()
        self._uses.clear()
        self._local = None
        await asyncio.gather(*(r.aclose() for r in runners), *self._closing)
