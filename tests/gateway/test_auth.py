"""Who may do what: the token matrix on loopback and elsewhere, 401/429/413, and the audit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi.routing import APIRoute

from mapper_gateway import dashboard
from mapper_gateway.__main__ import main
from mapper_gateway.api import ROUTERS
from mapper_gateway.app import create_app
from mapper_gateway.gateway import Gateway
from mapper_gateway.security import ApiToken, FailureLimiter

from .kit import AUTH, TOKEN, asgi_client, make_settings

WRITE = "/api/v1/devices/default/thermo-1/properties/mode"
READS = [
    "/readyz",
    "/openapi.json",
    "/docs",
    "/metrics",
    "/api/v1/devices",
    "/api/v1/devices/default/thermo-1",
    "/api/v1/devices/default/thermo-1/properties/mode",
    "/api/v1/models",
    "/api/v1/files",
    "/api/v1/ping",
    "/api/v1/devicemethod/default/thermo-1",
    "/api/v1/meta/model/default/thermo-model",
]


def audit_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [
        orjson.loads(r.getMessage()) for r in caplog.records if r.name == "mapper_gateway.audit"
    ]


@pytest.fixture
async def exposed(tmp_path: Path, devices_dir: Path) -> AsyncIterator[Gateway]:
    """A gateway configured to listen on every interface (the guard's view; nothing binds)."""
    settings = make_settings(tmp_path, devices_dir, api="0.0.0.0:7777", insecure_http=True)
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        yield gw


@pytest.mark.parametrize("path", READS)
async def test_loopback_reads_are_open_but_a_wrong_token_is_refused(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 200
    assert (await client.get(path, headers=AUTH)).status_code == 200
    wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["reason"] == "unauthorized"


@pytest.mark.parametrize("path", READS)
async def test_elsewhere_every_read_needs_the_token(exposed: Gateway, path: str) -> None:
    async with asgi_client(exposed, ("192.0.2.7", 40000)) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers={"Authorization": "Bearer x"})).status_code == 401
        assert (await http.get(path, headers=AUTH)).status_code == 200
        # EventSource cannot send headers: a read may carry the token in the query.
        assert (await http.get(path, params={"token": TOKEN})).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "x"}])
async def test_writes_always_need_the_token_and_are_audited(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    caplog.set_level(logging.INFO, "mapper_gateway.audit")
    answer = await client.put(WRITE, json={"value": "heat"}, headers=headers)
    assert answer.status_code == 401
    (record,) = audit_records(caplog)
    assert record["result"] == "unauthorized"
    assert record["principal"] == "anonymous"
    assert record["path"] == WRITE
    assert str(record["client"]).startswith("127.0.0.1:")


async def test_a_write_token_in_the_query_is_not_accepted(client: httpx.AsyncClient) -> None:
    answer = await client.put(WRITE, json={"value": "heat"}, params={"token": TOKEN})
    assert answer.status_code == 401


async def test_accepted_and_refused_writes_are_audited(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mapper_gateway.audit")
    assert (await client.put(WRITE, json={"value": "heat"}, headers=AUTH)).status_code == 200
    read_only = "/api/v1/devices/default/thermo-1/properties/temperature"
    assert (await client.put(read_only, json={"value": "1"}, headers=AUTH)).status_code == 409
    accepted, refused = audit_records(caplog)
    token_id = ApiToken(TOKEN).id
    assert accepted["principal"] == refused["principal"] == f"token:{token_id}"
    assert accepted["target"] == "default/thermo-1/mode"
    assert accepted["value"] == "heat"
    assert accepted["result"] == "applied"
    assert (refused["result"], refused["reason"], refused["status"]) == (
        "refused",
        "read_only",
        409,
    )
    assert TOKEN not in caplog.text  # only a digest prefix is ever logged


async def test_ten_failures_block_the_client_for_a_while(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    bad = {"Authorization": "Bearer wrong"}
    for _ in range(10):
        assert (await client.get("/api/v1/devices", headers=bad)).status_code == 401
    blocked = await client.get("/api/v1/devices", headers=AUTH)
    assert blocked.status_code == 429
    assert blocked.json()["reason"] == "too_many_failures"
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    assert (await client.get("/healthz")).status_code == 200  # liveness is never blocked
    async with asgi_client(gateway, ("127.0.0.2", 40000)) as other:
        assert (await other.get("/api/v1/devices", headers=AUTH)).status_code == 200


def test_the_block_ends_after_the_block_time() -> None:
    limiter = FailureLimiter(max_failures=3, block_seconds=60)
    for _ in range(3):
        limiter.failed("c", now=100.0)
    assert limiter.retry_after("c", now=130.0) == 30.0
    assert limiter.retry_after("c", now=161.0) == 0.0
    limiter.failed("c", now=200.0)
    limiter.failed("c", now=300.0)  # the first failure is outside the window by now
    assert limiter.retry_after("c", now=300.0) == 0.0


async def test_large_bodies_are_refused_before_they_are_read(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mapper_gateway.audit")
    big = orjson.dumps({"value": "x" * (70 * 1024)})
    answer = await client.put(
        WRITE, content=big, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert answer.json()["reason"] == "too_large"

    async def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(70):
            yield b"x" * 1024

    chunked = await client.put(WRITE, content=chunks(), headers=AUTH)
    assert chunked.status_code == 413
    assert [r["result"] for r in audit_records(caplog)] == ["too_large", "too_large"]


def test_the_token_comes_from_env_file_or_is_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mapper_gateway.settings import GatewaySettings

    monkeypatch.setenv("MAPPER_GATEWAY_TOKEN", "from-env")
    token, shown = ApiToken.resolve(GatewaySettings.load({}))
    assert token.matches("from-env")
    assert shown is None  # a configured token is never printed
    monkeypatch.delenv("MAPPER_GATEWAY_TOKEN")
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    token, shown = ApiToken.resolve(GatewaySettings.load({"token_file": secret}))
    assert token.matches("from-file")
    assert shown is None
    token, shown = ApiToken.resolve(GatewaySettings.load({}))
    assert shown is not None
    assert len(shown) >= 32
    assert token.generated
    assert token.matches(shown)
    assert not token.matches(shown + "x")


# Routes that answer without a token even beyond loopback: liveness, and the static files of
# the dashboard and of /docs (the same bytes as in the wheel: they hold no data).
PUBLIC = {"/healthz", "/", "/static/{name}", "/docs/assets/{name}"}
PATH_VALUES = {
    "namespace": "default",
    "name": "thermo-1",
    "prop": "mode",
    "method": "SetClimate",
    "data": "heat",
}


async def test_beyond_loopback_every_route_but_the_public_ones_needs_the_token(
    exposed: Gateway,
) -> None:
    """Walks every router the application includes, so a route added later without a guard
    fails here instead of being found open on someone's network."""
    routes = [route for router in (*ROUTERS, dashboard.router) for route in router.routes]
    checked = set()
    for n, route in enumerate(routes):
        assert isinstance(route, APIRoute)
        if route.path in PUBLIC:
            continue
        path = route.path.format(**{k: PATH_VALUES.get(k, "x") for k in route.param_convertors})
        # One client address per route: ten refusals from one address would block it (429).
        async with asgi_client(exposed, (f"192.0.2.{n + 1}", 40000)) as http:
            for method in sorted(route.methods - {"HEAD"}):
                answer = await http.request(method, path)
                assert answer.status_code == 401, (method, route.path, answer.text)
                checked.add((method, route.path))
            assert (await http.get("/healthz")).status_code == 200
    assert ("GET", "/api/v1/devices") in checked
    assert ("PUT", "/api/v1/devices/{namespace}/{name}/properties/{prop}") in checked
    assert len(checked) >= 15
    # Every documented route of the real application is one the walk covered.
    assert set(create_app(exposed).openapi()["paths"]) <= {route.path for route in routes}


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_setting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("MAPPER_GATEWAY_TOKEN", value)
    assert main(["run", "--mqtt-url", "off"]) == 2
    error = capsys.readouterr().err
    assert "MAPPER_GATEWAY_TOKEN" in error
    assert "is set but empty" in error
    assert "unset it to have one generated" in error
    assert "Traceback" not in error


def test_an_empty_or_missing_token_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    empty.chmod(0o600)
    state = str(tmp_path / "state")
    run = ["run", "--mqtt-url", "off", "--state-dir", state, "--token-file"]
    assert main([*run, str(empty)]) == 2
    error = capsys.readouterr().err
    assert f"token_file {empty} is empty" in error
    assert "write the token into it" in error
    assert main([*run, str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err
    assert "absent: No such file or directory" in error
    assert "Traceback" not in error
    config = tmp_path / "gateway.yaml"
    config.write_text("token: ''\n")
    assert main(["run", "--config", str(config), "--mqtt-url", "off"]) == 2
    assert "is set but empty" in capsys.readouterr().err


def test_a_settings_error_never_echoes_a_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("tokn: s3cret-in-a-misspelt-key\n")  # a typo must not leak the secret
    assert main(["run", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "tokn: Extra inputs are not permitted" in error
    assert "s3cret" not in error
