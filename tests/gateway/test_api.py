"""REST routes against a gateway running virtual devices: reads, writes and their refusals,
models, files, the KubeEdge-compatible routes, OpenAPI and server-sent events."""

from __future__ import annotations

import gc
import logging
import re
from pathlib import Path

import httpx
import orjson
import pytest

from mapper_gateway.gateway import Gateway
from mapper_sdk import DeviceRef
from mapper_sdk.virtual import VirtualDriver

from .kit import AUTH, make_settings, served, wait_until

REF = DeviceRef("default", "thermo-1")
PROP = "/api/v1/devices/default/thermo-1/properties"


def has_value(gateway: Gateway, prop: str = "temperature") -> bool:
    supervisor = gateway.require_runtime().supervisor(REF)
    if supervisor is None:
        return False
    point = supervisor.device.property(prop)
    return point is not None and supervisor.engine.states[point.index].text is not None


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "waiting": [], "devices": 1}


async def test_device_list_has_every_property_with_value_time_and_error(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await wait_until(lambda: has_value(gateway, "mode"))
    body = (await client.get("/api/v1/devices")).json()
    assert body["total"] == 1
    device = body["items"][0]
    assert device["id"] == "default/thermo-1"
    assert device["state"] == "online"
    assert device["source"] == "files"
    props = {p["name"]: p for p in device["properties"]}
    assert set(props) == {"temperature", "setpoint", "mode"}
    assert props["mode"]["value"] == "auto"
    assert isinstance(props["mode"]["timestamp"], int)
    assert props["mode"]["error"] is None
    assert props["temperature"]["writable"] is False


async def test_device_detail_and_unknown_device(client: httpx.AsyncClient) -> None:
    detail = (await client.get("/api/v1/devices/default/thermo-1")).json()
    assert detail["methods"] == [
        {"name": "SetClimate", "description": "", "properties": ["setpoint", "mode"]}
    ]
    missing = await client.get("/api/v1/devices/default/nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "status": "not_found",
        "reason": "unknown_device",
        "message": "no device default/nope",
    }


async def test_property_last_report_and_live_read(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await wait_until(lambda: has_value(gateway))
    last = (await client.get(f"{PROP}/temperature")).json()
    assert last["name"] == "temperature"
    assert last["unit"] == "Celsius"
    sim = VirtualDriver.world.device(REF.id)
    reads = sim.reads
    live = await client.get(f"{PROP}/mode", params={"live": "true"})
    assert live.status_code == 200
    assert live.json()["value"] == "auto"
    assert sim.reads > reads  # the device was read for this request
    assert (await client.get(f"{PROP}/nope")).status_code == 404


async def test_write_is_applied_through_the_single_write_path(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    answer = await client.put(f"{PROP}/setpoint", json={"value": 24}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "applied"
    assert answer.json()["value"] == "24"
    assert ("setpoint", 24.0) in VirtualDriver.world.device(REF.id).writes


@pytest.mark.parametrize(
    ("prop", "value", "status", "reason"),
    [
        ("temperature", "20", 409, "read_only"),
        ("setpoint", "99", 422, "out_of_range"),
        ("setpoint", "warm", 422, "bad_type"),
        ("nope", "1", 404, "unknown_property"),
    ],
)
async def test_refused_writes_say_why(
    client: httpx.AsyncClient, prop: str, value: str, status: int, reason: str
) -> None:
    answer = await client.put(f"{PROP}/{prop}", json={"value": value}, headers=AUTH)
    assert answer.status_code == status
    body = answer.json()
    assert body["status"] == "refused"
    assert body["reason"] == reason
    assert body["message"]
    writes = VirtualDriver.world.device(REF.id).writes
    assert all(name != prop for name, _ in writes if name != "setpoint")


async def test_write_to_an_offline_device_is_pending(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    runtime = gateway.require_runtime()
    runtime.write_wait = 0.2
    VirtualDriver.world.device(REF.id).online = False
    await wait_until(lambda: runtime.devices[REF].state.value == "offline")
    answer = await client.put(f"{PROP}/mode", json={"value": "heat"}, headers=AUTH)
    assert answer.status_code == 202
    assert answer.json()["status"] == "pending"


async def test_invalid_body_names_the_field(client: httpx.AsyncClient) -> None:
    answer = await client.put(f"{PROP}/mode", json={"valeu": "x"}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["reason"] == "validation"
    assert "body.value" in answer.json()["message"]


async def test_models_and_files(client: httpx.AsyncClient) -> None:
    models = (await client.get("/api/v1/models")).json()
    assert [(m["namespace"], m["name"], m["devices"]) for m in models] == [
        ("default", "thermo-model", 1)
    ]
    one = (await client.get("/api/v1/models/default/thermo-model")).json()
    assert [p["name"] for p in one["properties"]] == ["temperature", "setpoint", "mode"]
    files = (await client.get("/api/v1/files")).json()
    assert all(f["ok"] for f in files["files"])
    assert len(files["files"]) == 2


async def test_kubeedge_routes_are_read_only(gateway: Gateway, client: httpx.AsyncClient) -> None:
    await wait_until(lambda: has_value(gateway, "mode"))
    ping = (await client.get("/api/v1/ping")).json()
    assert ping["Message"] == "This is v1 API, the server is running normally."
    assert ping["apiVersion"] == "v1"
    read = (await client.get("/api/v1/device/default/thermo-1/mode")).json()
    assert read["Data"]["Value"] == "auto"
    assert read["Data"]["Type"] == "string"
    methods = (await client.get("/api/v1/devicemethod/default/thermo-1")).json()
    method = methods["Data"]["Methods"][0]
    assert method["Name"] == "SetClimate"
    assert [p["PropertyName"] for p in method["Parameters"]] == ["setpoint", "mode"]
    model = (await client.get("/api/v1/meta/model/default/thermo-model")).json()
    assert model["id"] == "default/thermo-model"
    assert model["properties"][0]["dataType"] == "float"


async def test_a_get_never_writes(gateway: Gateway, client: httpx.AsyncClient) -> None:
    sim = VirtualDriver.world.device(REF.id)
    await wait_until(lambda: has_value(gateway, "mode"))
    before = list(sim.writes)
    url = "/api/v1/devicemethod/default/thermo-1/SetClimate/mode/heat"
    refused = await client.get(url, headers=AUTH)
    assert refused.status_code == 405
    assert "PUT /api/v1/devices/default/thermo-1/properties/mode" in refused.json()["message"]
    read = await client.get("/api/v1/device/default/thermo-1/setpoint")
    assert read.status_code == 200
    assert sim.writes == before  # neither the refused write nor the read wrote anything
    posted = await client.post(url, headers=AUTH)
    assert posted.status_code == 200
    assert ("mode", "heat") in sim.writes


async def test_openapi_is_published(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/devices/{namespace}/{name}/properties/{prop}" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_server_sent_events_stream_property_updates(gateway: Gateway) -> None:
    async with served(gateway) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        params = {"device": "default/thermo-1"}
        async with http.stream("GET", "/api/v1/events", params=params) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in stream.aiter_lines():
                if line.startswith("event: twins"):
                    event = "twins"
                elif event == "twins" and line.startswith("data: "):
                    data = orjson.loads(line[6:])
                    break
    assert data["device"] == "default/thermo-1"
    assert data["values"]
    await wait_until(lambda: not gateway.events.subscribers)  # the client is forgotten


async def test_start_up_reports_its_phases_and_leaves_the_collector_on(
    tmp_path: Path, devices_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mapper_gateway")
    async with Gateway(make_settings(tmp_path, devices_dir)) as gw:
        await gw.wait_loaded(10)
        # The collector is paused while the devices start, and only then.
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0
        assert gw.require_runtime().supervisor(REF) is not None
    found = re.search(
        r"start-up: 2 files read in [\d.]+ s, 1 devices started in [\d.]+ s", caplog.text
    )
    assert found is not None, caplog.text
