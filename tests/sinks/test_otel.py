"""OTel sink against a local server checking OTLP/HTTP JSON: path, content type, and the
``ExportMetricsServiceRequest`` shape (resource attributes, gauges, data points)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from mapper_sdk._version import __version__
from mapper_sdk.models.device import PushMethodOtel
from mapper_sdk.sinks import Sample, SinkError, SinkRejected
from mapper_sdk.sinks.otel import OtelSettings, OtelSink

from .servers import FakeHttpServer, Request, Response

TS = 1_700_000_000_123


def check_otlp(request: Request) -> Response:
    """What an OTLP/HTTP receiver requires of a JSON metrics export."""
    assert request.method == "POST"
    assert request.path == "/v1/metrics"
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.body)
    for resource_metrics in body["resourceMetrics"]:
        for attribute in resource_metrics["resource"]["attributes"]:
            assert set(attribute) == {"key", "value"}
            assert set(attribute["value"]) == {"stringValue"}
        for scope_metrics in resource_metrics["scopeMetrics"]:
            for metric in scope_metrics["metrics"]:
                for point in metric["gauge"]["dataPoints"]:
                    # int64 fields are decimal strings in OTLP's JSON mapping
                    assert isinstance(point["timeUnixNano"], str)
                    int(point["timeUnixNano"])
                    assert isinstance(point["asDouble"], float | int)
    return Response(200, b"{}")


def settings(server: FakeHttpServer) -> OtelSettings:
    return OtelSettings.from_crd(PushMethodOtel(endpoint_url=f"{server.url}/v1/metrics"))


def resource(device: str, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": {
            "attributes": [
                {"key": "device.id", "value": {"stringValue": device}},
                {"key": "service.name", "value": {"stringValue": "mapper-sdk"}},
            ]
        },
        "scopeMetrics": [
            {"scope": {"name": "mapper_sdk.sinks.otel", "version": __version__},
             "metrics": metrics}
        ],
    }  # fmt: skip


async def test_gauges_per_property_with_device_id_resource() -> None:
    async with FakeHttpServer(respond=check_otlp) as server:
        sink = OtelSink(settings(server))
        await sink.open()
        await sink.write(
            [
                Sample("default", "thermo-1", "temp", "21.5", "float", TS),
                Sample("default", "thermo-1", "temp", "21.75", "float", TS + 1000),
                Sample("default", "thermo-1", "on", "true", "boolean", TS),
                Sample("default", "thermo-1", "label", "idle", "string", TS),  # not a number
                Sample("plant", "meter", "count", "7", "int", TS),
            ]
        )
        await sink.write([Sample("ns", "d", "label", "text only", "string", TS)])  # no request
        await sink.aclose()
    [request] = server.requests
    ns = str(TS * 1_000_000)
    ns_later = str((TS + 1000) * 1_000_000)
    assert orjson.loads(request.body) == {
        "resourceMetrics": [
            resource("default/thermo-1", [
                {"name": "temp", "gauge": {"dataPoints": [
                    {"timeUnixNano": ns, "asDouble": 21.5},
                    {"timeUnixNano": ns_later, "asDouble": 21.75},
                ]}},
                {"name": "on", "gauge": {"dataPoints": [{"timeUnixNano": ns, "asDouble": 1.0}]}},
            ]),
            resource("plant/meter", [
                {"name": "count", "gauge": {"dataPoints": [{"timeUnixNano": ns,
                                                            "asDouble": 7.0}]}},
            ]),
        ]
    }  # fmt: skip


async def test_retries_follow_the_otlp_spec() -> None:
    answers = [Response(503), Response(429), Response(500), Response(400)]
    async with FakeHttpServer(respond=lambda request: answers.pop(0)) as server:
        sink = OtelSink(settings(server))
        batch = [Sample("ns", "d", "p", "1", "int", TS)]
        for status in (503, 429):
            with pytest.raises(SinkError, match=f"HTTP {status}") as info:
                await sink.write(batch)
            assert not isinstance(info.value, SinkRejected)
        for status in (500, 400):  # not retryable for OTLP/HTTP
            with pytest.raises(SinkRejected, match=f"HTTP {status}"):
                await sink.write(batch)
        await sink.aclose()


def test_endpoint_settings() -> None:
    assert OtelSettings.from_crd(PushMethodOtel(endpoint_url="collector:4318/v1/metrics")) == (
        OtelSettings("http://collector:4318/v1/metrics")
    )
