"""Prometheus metrics, collected from the runtime's own counters at scrape time.

Why prometheus-client and not a hand-written exposition: it gets the text format right
(label escaping, histogram ``_bucket``/``_sum``/``_count``, OpenMetrics negotiation) and
brings the ``process_*`` CPU and memory metrics; it is small and has no dependencies. The
devices are never instrumented on the hot path: a custom collector reads the counters the
supervisors, twin engines and links keep anyway, so 10,000 devices cost nothing between
scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mapper_gateway.gateway import Gateway
from mapper_sdk._supervisor import READ_RTT_BUCKETS_MS, DeviceSupervisor
from mapper_sdk.driver import DeviceState

_RTT_BOUNDS = [str(b / 1000) if b != float("inf") else "+Inf" for b in READ_RTT_BUCKETS_MS]


def make_registry(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(GatewayCollector(gateway))
    return registry


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        runtime = self.gateway.runtime
        if runtime is not None:
            yield from _devices(list(runtime.devices.values()))
        yield from self._mqtt()
        yield from self._sinks()
        yield from self._dmi()
        yield from self._gateway()

    def _mqtt(self) -> Iterator[Metric]:
        bus = self.gateway.mqtt
        if bus is None:
            return
        stats = bus.stats
        yield _gauge(
            "mapper_mqtt_connected", "1 when the MQTT event bus is connected", bus.connected
        )
        yield _counter(
            "mapper_mqtt_reconnects", "connections lost and made again", stats.disconnects
        )
        yield _counter("mapper_mqtt_published", "messages published (QoS 1)", stats.published)
        yield _counter("mapper_mqtt_confirmed", "reports confirmed delivered", stats.confirmed)
        rejected = CounterMetricFamily(
            "mapper_mqtt_rejected", "messages refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        outbox = bus.outbox_stats()
        if outbox is None:
            return
        yield _gauge("mapper_outbox_rows", "reports waiting for delivery", outbox.rows)
        yield _gauge("mapper_outbox_bytes", "bytes of reports waiting for delivery", outbox.bytes)
        drops = CounterMetricFamily(
            "mapper_outbox_drops", "reports dropped, by reason", labels=["reason"]
        )
        for reason, count in sorted(outbox.drops.items()):
            drops.add_metric([reason], count)
        yield drops

    def _dmi(self) -> Iterator[Metric]:
        links = self.gateway.links
        if not links:
            return
        registered = GaugeMetricFamily(
            "mapper_dmi_registered", "1 when registered with EdgeCore", labels=["protocol"]
        )
        queued = GaugeMetricFamily(
            "mapper_dmi_queued", "reports waiting for EdgeCore's rate", labels=["protocol"]
        )
        dropped = CounterMetricFamily(
            "mapper_dmi_dropped", "reports dropped (queue full)", labels=["protocol"]
        )
        limited = CounterMetricFamily(
            "mapper_dmi_rate_limited", "reports EdgeCore rate-limited", labels=["protocol"]
        )
        for protocol, link in sorted(links.items()):
            registered.add_metric([protocol], float(link.registered))
            queued.add_metric([protocol], link.queued)
            dropped.add_metric([protocol], link.dropped)
            limited.add_metric([protocol], link.stats.rate_limited)
        yield from (registered, queued, dropped, limited)

    def _sinks(self) -> Iterator[Metric]:
        hub = self.gateway.sinks
        if hub is None:
            return
        label = ["sink"]
        queued = GaugeMetricFamily("mapper_sink_queued", "values waiting for a sink", labels=label)
        healthy = GaugeMetricFamily("mapper_sink_healthy", "1 while writes succeed", labels=label)
        written = CounterMetricFamily("mapper_sink_written", "values written", labels=label)
        failures = CounterMetricFamily("mapper_sink_failures", "failed batches", labels=label)
        dropped = CounterMetricFamily(
            "mapper_sink_dropped", "values dropped, by reason", labels=["sink", "reason"]
        )
        for name, stats in sorted(hub.stats().items()):
            queued.add_metric([name], stats.queued)
            healthy.add_metric([name], 1.0 if stats.healthy else 0.0)
            written.add_metric([name], stats.written)
            failures.add_metric([name], stats.failures)
            for reason, count in sorted(stats.dropped.items()):
                dropped.add_metric([name, reason], count)
        yield from (queued, healthy, written, failures, dropped)

    def _gateway(self) -> Iterator[Metric]:
        gateway = self.gateway
        hub = gateway.events
        yield _gauge(
            "mapper_gateway_sse_clients", "server-sent-events clients", len(hub.subscribers)
        )
        yield _counter(
            "mapper_gateway_sse_dropped", "events dropped for slow clients", hub.dropped_total
        )
        yield _counter(
            "mapper_gateway_auth_failures", "failed authentications", gateway.guard.failures
        )
        yield _counter(
            "mapper_gateway_auth_blocked",
            "clients blocked for failures",
            gateway.guard.limiter.blocked_total,
        )
        yield _counter("mapper_gateway_reloads", "devices-directory reloads", gateway.reloads)
        audit = gateway.audit
        yield _counter("mapper_gateway_audit_lines", "audit lines on disk", audit.written)
        yield _counter(
            "mapper_gateway_audit_lost", "audit lines the disk refused (see the log)", audit.errors
        )
        files = gateway.files
        rejected = len(files.rejected()) if files is not None else 0
        yield _gauge(
            "mapper_gateway_rejected_files", "files whose last good version runs", rejected
        )


def _devices(supervisors: list[DeviceSupervisor]) -> Iterator[Metric]:
    now_ms = time.time() * 1000
    d = ["device"]
    reads = CounterMetricFamily("mapper_device_reads", "driver reads", labels=d)
    read_errors = CounterMetricFamily("mapper_device_read_errors", "failed driver reads", labels=d)
    reports = CounterMetricFamily("mapper_device_reports", "twin reports published", labels=d)
    connects = CounterMetricFamily("mapper_device_connects", "connections made", labels=d)
    connect_failures = CounterMetricFamily(
        "mapper_device_connect_failures", "connections failed", labels=d
    )
    writes = CounterMetricFamily(
        "mapper_device_writes", "desired values by outcome", labels=["device", "result"]
    )
    state = GaugeMetricFamily(
        "mapper_device_state", "1 for the device's current state", labels=["device", "state"]
    )
    rtt = HistogramMetricFamily(
        "mapper_device_read_rtt_seconds", "driver read round-trip time", labels=d
    )
    p = ["device", "property"]
    age = GaugeMetricFamily(
        "mapper_property_last_seen_age_seconds", "time since the last good read", labels=p
    )
    prop_errors = CounterMetricFamily(
        "mapper_property_errors", "failed reads of the property", labels=p
    )
    failing = GaugeMetricFamily("mapper_property_failing", "1 when the last read failed", labels=p)
    for supervisor in supervisors:
        device = supervisor.device.ref.id
        stats = supervisor.stats
        labels = [device]
        reads.add_metric(labels, stats.reads)
        read_errors.add_metric(labels, stats.read_errors)
        reports.add_metric(labels, stats.reports)
        connects.add_metric(labels, stats.connects)
        connect_failures.add_metric(labels, stats.connect_failures)
        writes.add_metric([device, "applied"], stats.writes_applied)
        writes.add_metric([device, "failed"], stats.writes_failed)
        writes.add_metric([device, "expired"], stats.writes_expired)
        for value in DeviceState:
            state.add_metric([device, value.value], float(supervisor.state is value))
        rtt.add_metric(labels, _buckets(stats.read_rtt), stats.read_rtt_sum_ms / 1000)
        for point in supervisor.device.properties:
            prop = supervisor.engine.states[point.index]
            names = [device, point.name]
            if prop.read_at_ms is not None:
                age.add_metric(names, max(0.0, (now_ms - prop.read_at_ms) / 1000))
            prop_errors.add_metric(names, prop.errors)
            failing.add_metric(names, float(prop.error is not None))
    yield from (reads, read_errors, reports, connects, connect_failures, writes, state, rtt)
    yield from (age, prop_errors, failing)


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    total = 0
    cumulative = []
    for bound, count in zip(_RTT_BOUNDS, counts, strict=True):
        total += count
        cumulative.append((bound, float(total)))
    return cumulative


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))
