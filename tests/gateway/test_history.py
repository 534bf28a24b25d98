"""``GET /api/v1/devices/{ns}/{name}/properties/{prop}/history``: the values a virtual device
reported, read back from the gateway's real SQLite local store through the real application."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapper_gateway.gateway import Gateway
from mapper_sdk import DeviceRef
from mapper_sdk.virtual import VirtualDriver

from .kit import AUTH, TOKEN, asgi_client, make_settings, wait_until

REF = DeviceRef("default", "thermo-1")
HISTORY = "/api/v1/devices/default/thermo-1/properties/{}/history"


def reported(gateway: Gateway, prop: str) -> str | None:
    supervisor = gateway.require_runtime().supervisor(REF)
    if supervisor is None:
        return None
    point = supervisor.device.property(prop)
    assert point is not None
    return supervisor.engine.states[point.index].text


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:  # noqa: ASYNC109
    """Ask ``check`` every 50 ms until it answers something truthy, or fail."""
    async with asyncio.timeout(timeout):
        # The store has no event to wait on: it is written by a batch every second or so.
        while not (found := await check()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return found


@pytest.fixture
def stored(gateway: Gateway) -> Gateway:
    """The suite's gateway: its local store is on by default."""
    assert gateway.settings.local_store
    return gateway


@pytest.fixture
def http(client: httpx.AsyncClient) -> httpx.AsyncClient:
    return client


async def samples(http: httpx.AsyncClient, prop: str, **params: int) -> list[dict[str, Any]]:
    answer = await http.get(HISTORY.format(prop), params=params)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["samples"]
    return found


async def test_history_has_what_the_device_reported_oldest_first(
    stored: Gateway, http: httpx.AsyncClient
) -> None:
    simulated = VirtualDriver.world.device(REF.id)
    await wait_until(lambda: reported(stored, "mode") == "auto")
    for value in ("m1", "m2", "m3"):
        simulated.values["mode"] = value
        await wait_until(partial(lambda v: reported(stored, "mode") == v, value))

    async def has_m3() -> list[dict[str, Any]] | None:
        found = await samples(http, "mode")
        return found if found and found[-1]["value"] == "m3" else None

    found = await until(has_m3)  # the store is written in batches, up to a second late
    times = [s["timestamp"] for s in found]
    assert times == sorted(times)
    changes = [
        v for i, v in enumerate(s["value"] for s in found) if i == 0 or found[i - 1]["value"] != v
    ]
    assert changes == ["auto", "m1", "m2", "m3"]

    body = (await http.get(HISTORY.format("temperature"))).json()
    assert body["device"] == "default/thermo-1"
    assert body["property"] == "temperature"
    assert body["type"] == "FLOAT"
    assert all(15 <= float(s["value"]) <= 28 for s in body["samples"])


async def test_since_and_limit(stored: Gateway, http: httpx.AsyncClient) -> None:
    # The temperature walks every 100 ms: wait for a dozen stored values.
    before = await until(lambda: _at_least(http, "temperature", 12))
    middle = before[len(before) // 2]["timestamp"]
    since = await samples(http, "temperature", since=middle)
    expected = [s for s in before if s["timestamp"] >= middle]
    assert since[: len(expected)] == expected  # and whatever was stored since
    assert all(s["timestamp"] >= middle for s in since)

    newest = await samples(http, "temperature", limit=3)
    after = await samples(http, "temperature", limit=10_000)
    assert len(newest) == 3
    # The newest three when asked: consecutive in the store and not older than the last of
    # ``before`` (values keep arriving, so ``after`` may hold more after them).
    start = after.index(newest[0])
    assert start > 0
    assert after[start : start + 3] == newest
    assert newest[-1]["timestamp"] >= before[-1]["timestamp"]

    recent = await samples(http, "temperature", since=middle, limit=2)
    assert len(recent) == 2
    assert recent[0]["timestamp"] >= middle
    assert await samples(http, "temperature", since=4_000_000_000_000) == []


async def _at_least(http: httpx.AsyncClient, prop: str, count: int) -> list[dict[str, Any]] | None:
    found = await samples(http, prop)
    return found if len(found) >= count else None


@pytest.mark.parametrize(
    ("path", "reason", "message"),
    [
        (
            "/api/v1/devices/default/nope/properties/temperature/history",
            "unknown_device",
            "no device default/nope",
        ),
        (
            HISTORY.format("nope"),
            "unknown_property",
            "device default/thermo-1 has no property 'nope'",
        ),
    ],
)
async def test_unknown_device_or_property_is_404(
    http: httpx.AsyncClient, path: str, reason: str, message: str
) -> None:
    answer = await http.get(path)
    assert answer.status_code == 404
    assert answer.json() == {"status": "not_found", "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 10_001}, "query.limit"),
        ({"since": -1}, "query.since"),
    ],
)
async def test_bad_since_or_limit_is_422(
    http: httpx.AsyncClient, params: dict[str, int], field: str
) -> None:
    answer = await http.get(HISTORY.format("temperature"), params=params)
    assert answer.status_code == 422
    assert answer.json()["reason"] == "validation"
    assert field in answer.json()["message"]


async def test_without_the_local_store_the_answer_says_how_to_turn_it_on(
    tmp_path: Path, devices_dir: Path
) -> None:
    async with Gateway(make_settings(tmp_path, devices_dir, local_store=False)) as gw:
        await gw.wait_loaded(10)
        async with asgi_client(gw) as client:
            answer = await client.get(HISTORY.format("temperature"))
            assert answer.status_code == 409
            body = answer.json()
            assert body["status"] == "refused"
            assert body["reason"] == "local_store_off"
            assert "--local-store" in body["message"]
            assert "MAPPER_GATEWAY_LOCAL_STORE" in body["message"]
            # An unknown device is still a 404: the device is checked first.
            missing = await client.get("/api/v1/devices/default/nope/properties/x/history")
            assert missing.status_code == 404
    assert not (tmp_path / "state" / "values.sqlite3").exists()


async def test_beyond_loopback_history_needs_the_token(tmp_path: Path, devices_dir: Path) -> None:
    settings = make_settings(
        tmp_path, devices_dir, api="0.0.0.0:7777", insecure_http=True, local_store=True
    )
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        path = HISTORY.format("temperature")
        async with asgi_client(gw, ("192.0.2.7", 40000)) as client:
            refused = await client.get(path)
            assert refused.status_code == 401
            assert refused.json()["reason"] == "unauthorized"
            assert (
                await client.get(path, headers={"Authorization": "Bearer x"})
            ).status_code == 401
            assert (await client.get(path, headers=AUTH)).status_code == 200
            assert (await client.get(path, params={"token": TOKEN})).status_code == 200


async def test_history_is_in_the_openapi(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    route = spec["paths"]["/api/v1/devices/{namespace}/{name}/properties/{prop}/history"]["get"]
    params = {p["name"]: p for p in route["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 10_000
    assert params["limit"]["schema"]["default"] == 1000
    assert set(route["responses"]) >= {"200", "401", "404", "409", "422"}
