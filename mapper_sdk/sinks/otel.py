"""OpenTelemetry (``pushMethod.otel``, extra ``otel``): OTLP/HTTP metrics, JSON encoding.

Each batch is one ``POST <endpointURL>`` (e.g. ``http://collector:4318/v1/metrics``) with
``Content-Type: application/json`` and an ``ExportMetricsServiceRequest`` in OTLP's JSON
mapping: one ``resourceMetrics`` entry per device with the resource attributes ``device.id``
(``namespace/name``, as upstream) and ``service.name`` (``mapper-sdk``), and under it one
gauge per property (metric name = property name) with a data point per sample:
``{"timeUnixNano": "<ns as a decimal string>", "asDouble": <value>}``.

Upstream runs an observable gauge that re-reads the device on the exporter's interval, and at
HEAD never starts it at all (contract §5.8); we export the reported values themselves, at the
time they were read. Values that are not numbers are skipped (booleans become 1 and 0), as
upstream's float parse does. Retries follow the OTLP/HTTP spec: 429, 502, 503 and 504 (and
connection errors) are retried, other 4xx answers drop the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mapper_sdk._version import __version__
from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import PushMethodOtel
from mapper_sdk.sinks import _httpclient
from mapper_sdk.sinks._base import Sample

SCOPE = "mapper_sdk.sinks.otel"
SERVICE_NAME = "mapper-sdk"
OTLP_RETRYABLE = frozenset({429, 502, 503, 504})
"""The statuses the OTLP/HTTP spec says to retry; any other failure status drops the batch."""


@dataclass(frozen=True, slots=True)
class OtelSettings:
    """One OTLP/HTTP metrics endpoint. Equal settings share one sink."""

    endpoint_url: str
    timeout: float = _httpclient.DEFAULT_TIMEOUT

    @classmethod
    def from_crd(cls, crd: PushMethodOtel) -> OtelSettings:
        url = crd.endpoint_url.strip()
        if not url:
            raise ConfigError("pushMethod.otel.endpointURL is empty")
        if "://" not in url:
            url = f"http://{url}"
        return cls(url)

    def build(self) -> OtelSink:
        return OtelSink(self)


def as_double(sample: Sample) -> float | None:
    """The gauge value of a sample, or ``None`` when it is not a number."""
    if sample.type == "boolean":
        lowered = sample.value.lower()
        return 1.0 if lowered == "true" else 0.0 if lowered == "false" else None
    try:
        number = float(sample.value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _attribute(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def export_request(batch: Sequence[Sample]) -> dict[str, Any] | None:
    """The ``ExportMetricsServiceRequest`` for ``batch``; ``None`` when nothing is numeric."""
    devices: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for sample in batch:
        number = as_double(sample)
        if number is None:
            continue
        point = {"timeUnixNano": str(sample.timestamp_ms * 1_000_000), "asDouble": number}
        devices.setdefault(sample.device_id, {}).setdefault(sample.property, []).append(point)
    if not devices:
        return None
    resource_metrics = []
    for device_id, properties in devices.items():
        metrics = [
            {"name": name, "gauge": {"dataPoints": points}} for name, points in properties.items()
        ]
        resource_metrics.append(
            {
                "resource": {
                    "attributes": [
                        _attribute("device.id", device_id),
                        _attribute("service.name", SERVICE_NAME),
                    ]
                },
                "scopeMetrics": [
                    {"scope": {"name": SCOPE, "version": __version__}, "metrics": metrics}
                ],
            }
        )
    return {"resourceMetrics": resource_metrics}


class OtelSink:
    """Posts one OTLP/HTTP JSON export request per batch."""

    def __init__(self, settings: OtelSettings) -> None:
        self.settings = settings
        self.name = f"otel {settings.endpoint_url}"
        headers = {"Content-Type": "application/json"}
        self._http: Any = _httpclient.client("otel", settings.timeout, headers)

    async def open(self) -> None:
        """Nothing to prepare: connections open on the first request."""

    async def write(self, batch: Sequence[Sample]) -> None:
        request = export_request(batch)
        if request is None:
            return
        url, body = self.settings.endpoint_url, orjson.dumps(request)
        await _httpclient.post(self._http, self.name, url, body, retry=OTLP_RETRYABLE)

    async def aclose(self) -> None:
        await self._http.aclose()
