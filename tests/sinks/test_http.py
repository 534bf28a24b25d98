"""HTTP push against a local HTTP server: JSON batches, KubeEdge form bodies, timeouts,
retry and rejection."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import PushMethodHttp
from mapper_sdk.sinks import RunnerSettings, Sample, SinkError, SinkRejected, SinkRunner
from mapper_sdk.sinks.http import HttpSettings, HttpSink, kubeedge_time

from .servers import FakeHttpServer, Request, Response

TS = 1_700_000_000_123
FAST = RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.05)


def samples() -> list[Sample]:
    return [
        Sample("default", "thermo-1", "temp", "21.5", "float", TS),
        Sample("plant", "meter", "label", "a b&c=d", "string", TS + 1),
    ]


def crd(port: int, path: str = "/push", timeout: int = 0) -> PushMethodHttp:
    return PushMethodHttp.model_validate(
        {"hostName": "http://127.0.0.1", "port": port, "requestPath": path, "timeout": timeout}
    )


async def test_json_batch() -> None:
    async with FakeHttpServer() as server:
        sink = HttpSettings.from_crd(crd(server.port, "/push?token=abc")).build()
        await sink.open()
        await sink.write(samples())
        await sink.aclose()
    [request] = server.requests
    assert (request.method, request.path, request.query) == ("POST", "/push", {"token": "abc"})
    assert request.headers["content-type"] == "application/json"
    assert orjson.loads(request.body) == {
        "samples": [
            {"device": "default/thermo-1", "namespace": "default", "name": "thermo-1",
             "property": "temp", "value": "21.5", "type": "float", "timestamp": TS},
            {"device": "plant/meter", "namespace": "plant", "name": "meter",
             "property": "label", "value": "a b&c=d", "type": "string", "timestamp": TS + 1},
        ]
    }  # fmt: skip


async def test_kubeedge_form_mode_chosen_by_query_flag() -> None:
    async with FakeHttpServer() as server:
        settings = HttpSettings.from_crd(crd(server.port, "/in?pushFormat=form"))
        assert settings.format == "form"
        sink = settings.build()
        await sink.write(samples())
        await sink.aclose()
    assert [(r.path, r.query) for r in server.requests] == [("/in", {}), ("/in", {})]
    assert {r.headers["content-type"] for r in server.requests} == {
        "application/x-www-form-urlencoded"
    }
    # Upstream's body: <property>=<value>&time=<YYYY-MM-DD hh:mm:ss>, one request per value.
    assert [r.body.decode() for r in server.requests] == [
        f"temp=21.5&time={kubeedge_time(TS).replace(' ', '+').replace(':', '%3A')}",
        f"label=a+b%26c%3Dd&time={kubeedge_time(TS + 1).replace(' ', '+').replace(':', '%3A')}",
    ]
    assert len(kubeedge_time(TS)) == len("2023-11-14 22:13:20")


def test_settings_from_crd() -> None:
    assert HttpSettings.from_crd(crd(80, "push", 2500)) == HttpSettings(
        "http://127.0.0.1:80/push", "json", 2.5
    )
    hub_default = HttpSettings.from_crd(crd(80, "/p?pushFormat=json"), "form")
    assert hub_default.format == "json"  # the query wins over the hub's default
    assert HttpSettings.from_crd(crd(81, "/p"), "form").format == "form"
    no_scheme = PushMethodHttp(host_name="10.0.0.9:7000", port=9, request_path="/a")
    assert HttpSettings.from_crd(no_scheme).url == "http://10.0.0.9:7000/a"  # port in hostName
    with pytest.raises(ConfigError, match="pushFormat"):
        HttpSettings.from_crd(crd(80, "/p?pushFormat=xml"))


async def test_timeout_comes_from_the_crd_in_milliseconds() -> None:
    async with FakeHttpServer(respond=lambda r: Response(delay=2.0)) as server:
        sink = HttpSettings.from_crd(crd(server.port, timeout=100)).build()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(SinkError, match="Timeout"):
            await sink.write(samples())
        assert loop.time() - started < 1.5
        await sink.aclose()


async def test_status_codes_decide_retry_or_drop() -> None:
    answers = [Response(503), Response(400, b'{"error": "bad"}'), Response(204)]
    async with FakeHttpServer(respond=lambda r: answers.pop(0)) as server:
        sink = HttpSettings.from_crd(crd(server.port)).build()
        with pytest.raises(SinkError, match="HTTP 503") as retry:
            await sink.write(samples())
        assert not isinstance(retry.value, SinkRejected)
        with pytest.raises(SinkRejected, match=re.escape('HTTP 400 {"error": "bad"}')):
            await sink.write(samples())
        await sink.write(samples())
        await sink.aclose()


async def test_down_server_is_retried_until_it_answers() -> None:
    failures = 2

    def respond(request: Request) -> Response:
        nonlocal failures
        failures -= 1
        return Response(500 if failures >= 0 else 204)

    async with FakeHttpServer(respond=respond) as server:
        runner = SinkRunner(HttpSink(HttpSettings.from_crd(crd(server.port))), FAST)
        runner.start()
        for sample in samples():
            runner.offer(sample)
        await server.wait_for(3)
        await runner.aclose()
    assert runner.stats.written == 2
    assert runner.stats.failures == 2
    assert [orjson.loads(r.body) for r in server.requests[1:]] == [
        orjson.loads(server.requests[0].body)
    ] * 2  # the same batch, resent


async def test_form_mode_resends_only_what_was_not_accepted() -> None:
    answers = [Response(204), Response(503), Response(204)]
    async with FakeHttpServer(respond=lambda r: answers.pop(0)) as server:
        settings = HttpSettings.from_crd(crd(server.port, "/f?pushFormat=kubeedge"))
        runner = SinkRunner(settings.build(), FAST)
        runner.start()
        for sample in samples():
            runner.offer(sample)
        await server.wait_for(3)
        await runner.aclose()
    assert [r.body.split(b"=")[0] for r in server.requests] == [b"temp", b"label", b"label"]
    assert runner.stats.written == 2


async def test_connection_refused_is_a_retryable_error() -> None:
    async with FakeHttpServer() as server:
        port = server.port
    sink = HttpSettings.from_crd(crd(port)).build()
    with pytest.raises(SinkError, match="ConnectError") as info:
        await sink.write(samples())
    assert not isinstance(info.value, SinkRejected)
    await sink.aclose()
