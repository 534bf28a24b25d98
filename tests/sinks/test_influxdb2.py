"""InfluxDB 2 sink against a local server that checks the documented /api/v2/write request:
path, org/bucket/precision query, ``Authorization: Token``, and line protocol that parses."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from mapper_sdk.models.device import DbMethodInfluxdb2
from mapper_sdk.sinks import RunnerSettings, Sample, SinkError, SinkRejected, SinkRunner
from mapper_sdk.sinks.influxdb2 import InfluxRoute, InfluxSettings, InfluxSink, field_value, line

from .servers import FakeHttpServer, Request, Response

TOKEN = "influx-Token-abc123=="
TS = 1_700_000_000_123


def parse_line(text: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """Line protocol as the InfluxDB docs define it: ``measurement[,tag=v...] field=v[,...]
    timestamp``; backslash escapes; string fields in double quotes; ``i`` suffix integers."""
    sections: list[list[str]] = [[""]]  # sections of comma-separated parts
    quoted = escaped = False
    for char in text:
        if escaped:
            sections[-1][-1] += char
            escaped = False
        elif char == "\\":
            if quoted:
                sections[-1][-1] += char  # string fields keep their escapes for the decoder
            escaped = True
        elif char == '"':
            quoted = not quoted
            sections[-1][-1] += char
        elif char == " " and not quoted:
            sections.append([""])
        elif char == "," and not quoted:
            sections[-1].append("")
        else:
            sections[-1][-1] += char
    assert len(sections) == 3, f"three sections expected in {text!r}"
    (measurement, *tag_parts), field_parts, (timestamp,) = sections
    tags = dict(part.split("=", 1) for part in tag_parts)
    fields: dict[str, Any] = {}
    for part in field_parts:
        key, raw = part.split("=", 1)
        if raw.startswith('"'):
            fields[key] = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif raw.endswith("i"):
            fields[key] = int(raw[:-1])
        elif raw in ("true", "false"):
            fields[key] = raw == "true"
        else:
            fields[key] = float(raw)
    return measurement, tags, fields, int(timestamp)


class FakeInflux:
    """Answers like InfluxDB 2: 401 without the token, 404 for another bucket, 400 for lines
    that do not parse, else 204 and keeps the points."""

    def __init__(self, bucket: str = "telemetry") -> None:
        self.bucket = bucket
        self.points: list[tuple[str, dict[str, str], dict[str, Any], int]] = []

    def __call__(self, request: Request) -> Response:
        assert request.method == "POST"
        assert request.path == "/api/v2/write"
        if request.headers.get("authorization") != f"Token {TOKEN}":
            return Response(401, b'{"code":"unauthorized","message":"unauthorized access"}')
        assert request.query["org"] == "factory"
        assert request.query["precision"] == "ms"
        assert request.headers["content-type"] == "text/plain; charset=utf-8"
        if request.query.get("bucket") != self.bucket:
            body = {"code": "not found", "message": f'bucket "{request.query.get("bucket")}"'}
            return Response(404, orjson.dumps(body))
        text = request.body.decode()
        assert text.endswith("\n")
        try:
            points = [parse_line(line) for line in text.splitlines()]
        except (AssertionError, ValueError) as exc:
            return Response(400, orjson.dumps({"code": "invalid", "message": str(exc)}))
        self.points.extend(points)
        return Response(204)


def crd(url: str, bucket: str = "telemetry", data: dict[str, Any] | None = None) -> Any:
    return DbMethodInfluxdb2.model_validate(
        {
            "influxdb2ClientConfig": {"url": url, "org": "factory", "bucket": bucket},
            "influxdb2DataConfig": data
            or {"measurement": "climate", "tag": {"site": "hall 1", "line": "a,b"},
                "fieldKey": "reading"},
        }
    )  # fmt: skip


async def test_points_arrive_as_documented_line_protocol() -> None:
    fake = FakeInflux()
    async with FakeHttpServer(respond=fake) as server:
        settings, route = InfluxSettings.from_crd(crd(server.url), {"TOKEN": TOKEN})
        sink = InfluxSink(settings)
        await sink.open()
        await sink.write(
            [
                Sample("default", "thermo-1", "temp", "21.5", "float", TS, route),
                Sample("default", "thermo-1", "count", "42", "int", TS + 1, route),
                Sample("default", "thermo-1", "on", "true", "boolean", TS + 2, route),
                Sample("default", "thermo-1", "label", 'say "hi" \\o/', "string", TS + 3, route),
            ]
        )
        await sink.aclose()
    tags = {"site": "hall 1", "line": "a,b", "device": "default/thermo-1"}
    assert fake.points == [
        ("climate", {**tags, "property": "temp"}, {"reading": 21.5}, TS),
        ("climate", {**tags, "property": "count"}, {"reading": 42}, TS + 1),
        ("climate", {**tags, "property": "on"}, {"reading": True}, TS + 2),
        ("climate", {**tags, "property": "label"}, {"reading": 'say "hi" \\o/'}, TS + 3),
    ]


def test_line_escaping_and_defaults() -> None:
    sample = Sample("ns", "d", "my prop", "x=1, y", "string", TS)
    assert line(sample, InfluxRoute()) == (
        'my\\ prop,device=ns/d,property=my\\ prop value="x=1, y" 1700000000123'
    )
    route = InfluxRoute("m,1", (("device", "custom"), ("k=ey", "v al")), "f k")
    assert line(Sample("ns", "d", "p", "3", "int", TS), route) == (
        "m\\,1,device=custom,k\\=ey=v\\ al,property=p f\\ k=3i 1700000000123"
    )
    assert field_value("nan", "float") == '"nan"'  # no NaN in line protocol: kept as text
    assert field_value("12x", "int") == '"12x"'
    assert field_value("1e300", "float") == "1e+300"


async def test_status_answers_decide_retry_or_drop() -> None:
    fake = FakeInflux(bucket="other")
    async with FakeHttpServer(respond=fake) as server:
        settings, route = InfluxSettings.from_crd(crd(server.url), {"TOKEN": TOKEN})
        sink = InfluxSink(settings)
        with pytest.raises(SinkError, match="HTTP 404") as missing_bucket:
            await sink.write([Sample("ns", "d", "p", "1", "int", TS, route)])
        assert not isinstance(missing_bucket.value, SinkRejected)  # an operator can fix it
        fake.bucket = "telemetry"
        server.respond = lambda request: Response(422, b'{"code":"unprocessable entity"}')
        with pytest.raises(SinkRejected, match="HTTP 422"):
            await sink.write([Sample("ns", "d", "p", "1", "int", TS, route)])
        await sink.aclose()


async def test_token_only_from_env_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeInflux()
    async with FakeHttpServer(respond=fake) as server:
        settings, route = InfluxSettings.from_crd(crd(server.url), {"TOKEN": "wrong-token-xyz"})
        assert "wrong-token-xyz" not in repr(settings)
        fast = RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.02)
        runner = SinkRunner(InfluxSink(settings), fast)
        runner.start()
        runner.offer(Sample("ns", "d", "p", "1", "int", TS, route))
        await server.wait_for(2)  # refused (401) and retried
        await runner.aclose(flush_within=0.2)
    assert "HTTP 401" in (runner.stats.last_error or "")
    assert "wrong-token-xyz" not in caplog.text
    assert fake.points == []
    unauthenticated, _ = InfluxSettings.from_crd(crd("127.0.0.1:8086"), {})
    assert unauthenticated.token is None
    assert unauthenticated.write_url == (
        "http://127.0.0.1:8086/api/v2/write?org=factory&bucket=telemetry&precision=ms"
    )
