"""The dashboard at ``/``: served offline with a strict policy, and used in a real Chromium.

The browser tests run the real gateway on uvicorn with the virtual driver's devices; a value
is changed in the simulated device and must show up on the page, a write typed into the page
must reach the simulated device, and a refused write must show the runtime's reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from mapper_gateway.__main__ import _Server
from mapper_gateway.app import create_app
from mapper_gateway.dashboard import STATIC, redact
from mapper_gateway.gateway import Gateway
from mapper_sdk import DeviceRef
from mapper_sdk.virtual import VirtualDriver

from .browser import webdriver
from .browser.webdriver import Page, chromium
from .kit import TOKEN, asgi_client, device_yaml, free_port, make_settings, served, wait_until

DEVICE = "default/thermo-1"
REF = DeviceRef("default", "thermo-1")
CARD = f'[data-device="{DEVICE}"]'


def prop(name: str, part: str = "") -> str:
    return f'{CARD} [data-prop="{name}"] {part}'.strip()


def js_text(css: str) -> str:
    """A JavaScript expression: the text of the element ``css`` (null while missing)."""
    return f"document.querySelector({css!r})?.textContent"


# -- the page as files and headers ----------------------------------------------------------


@pytest.fixture
async def exposed(tmp_path: Path, devices_dir: Path) -> AsyncIterator[Gateway]:
    settings = make_settings(tmp_path, devices_dir, api="0.0.0.0:7777", insecure_http=True)
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        yield gw


async def test_the_shell_is_static_offline_and_strict(exposed: Gateway) -> None:
    # Bound elsewhere, the data needs the token but the page (the same bytes everywhere) does
    # not, so a person can open it and type the token in.
    async with asgi_client(exposed, ("192.0.2.7", 40000)) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self'" in policy
        assert page.headers["referrer-policy"] == "no-referrer"
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            asset = await http.get(f"/static/{name}")
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(kind)
        for bad in ("/static/index.html", "/static/..%2Fdashboard.py", "/static/nope.js"):
            assert (await http.get(bad)).status_code == 404
        assert (await http.get("/static/nope.js")).json()["status"] == "not_found"
        assert (await http.get("/api/v1/devices")).status_code == 401


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for path in (p for p in STATIC.iterdir() if p.is_file()):  # swagger-ui/: test_docs.py
        text = path.read_text()
        # The SVG namespace is an identifier, not a request.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+", text)) - {"http://www.w3.org"}
        assert not urls, f"{path.name} refers to {urls}: the page must work offline"
    html = (STATIC / "index.html").read_text()
    # Nothing inline: the policy allows only the gateway's own files.
    assert "<script>" not in html
    assert " style=" not in html


def test_redact_hides_every_token_in_a_query() -> None:
    line = "/?token=abc&x=1 and /api/v1/events?device=a%2Fb&token=s3cr%2Bt"
    assert redact(line) == "/?token=[redacted]&x=1 and /api/v1/events?device=a%2Fb&token=[redacted]"


async def test_the_access_log_never_holds_the_token(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    # The gateway runs uvicorn with its access log off; turned on, it still must not leak.
    port = free_port()
    config = uvicorn.Config(
        create_app(gateway), host="127.0.0.1", port=port, lifespan="off", log_config=None
    )
    server = _Server(config)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(caplog.handler)  # uvicorn's access logger may not propagate
    caplog.set_level(logging.INFO, "uvicorn.access")
    task = None
    try:
        task = asyncio.create_task(server.serve())
        await asyncio.wait_for(server.listening.wait(), 10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/", params={"token": TOKEN})).status_code == 200
            assert (await http.get("/api/v1/devices", params={"token": TOKEN})).status_code == 200
        await wait_until(lambda: len([r for r in caplog.records if "GET" in r.getMessage()]) >= 2)
    finally:
        access.removeHandler(caplog.handler)
        server.should_exit = True
        if task is not None:
            await asyncio.wait_for(task, 10)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/api/v1/devices?token=[redacted]" in line for line in lines), lines
    assert not any(TOKEN in line for line in lines)


# -- in Chromium ----------------------------------------------------------------------------


def test_a_missing_chromium_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webdriver, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian packages chromium "):
        webdriver.require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Debian packages chromium "):
        webdriver.require_chromium()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    async with chromium(tmp_path / "chromium") as browser:
        yield browser


async def test_live_values_sparklines_and_writes_in_chromium(
    gateway: Gateway, page: Page, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    simulated = VirtualDriver.world.device(DEVICE)
    async with served(gateway) as base:
        await page.goto(f"{base}/?token={TOKEN}")

        # The page lists the device with its state, and took the token out of the URL.
        assert await page.wait_for(f"{js_text(CARD + ' .state')} === 'online'")
        assert await page.wait_for(f"{js_text('#conn')} === 'Live'")
        assert "token" not in await page.run("return location.href")
        assert await page.run("return sessionStorage.getItem('mapper-gateway-token')") == TOKEN
        names = await page.run(
            f"return [...document.querySelectorAll('{CARD} .prop-name')].map(e => e.textContent)"
        )
        assert names == ["temperature", "setpoint", "mode"]

        # A value changed in the device shows up on the page, pushed over the event stream.
        simulated.values["mode"] = "eco-from-the-device"
        await page.wait_for(f"{js_text(prop('mode', '.value'))} === 'eco-from-the-device'")

        # The temperature walks: its sparkline collects points.
        points = prop("temperature", "polyline")
        await page.wait_for(
            f"(document.querySelector('{points}').getAttribute('points') || '')"
            ".split(' ').filter(Boolean).length >= 5"
        )

        # Read-only properties have no write form; writable ones do.
        read_only_form = prop("temperature", "form")
        assert await page.run(f"return document.querySelector('{read_only_form}')") is None

        # A write typed into the page reaches the device and is confirmed on the page.
        await page.type_into(prop("setpoint", "input"), "23.5")
        await page.click(prop("setpoint", "button"))
        result = prop("setpoint", ".result")
        text = await page.wait_for(
            f"['ok', 'pending'].includes(document.querySelector('{result}').dataset.kind)"
            f" && {js_text(result)}"
        )
        assert "23.5" in text
        await wait_until(lambda: ("setpoint", 23.5) in simulated.writes)
        await page.wait_for(f"{js_text(prop('setpoint', '.value'))} === '23.5'")

        # A write the runtime refuses shows its reason, and never reaches the device.
        await page.type_into(prop("setpoint", "input"), "99")
        await page.click(prop("setpoint", "button"))
        refused = await page.wait_for(
            f"document.querySelector('{result}').dataset.kind === 'error' && {js_text(result)}"
        )
        assert "out_of_range" in refused
        assert ("setpoint", 99.0) not in simulated.writes

        await page.screenshot(tmp_path / "dashboard.png")
        # A phone-sized window: one column, nothing wider than the screen.
        await page.resize(390, 844)
        await page.wait_for("window.innerWidth <= 400")
        assert await page.run(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        await page.screenshot(tmp_path / "dashboard-narrow.png")
        assert await page.console_errors() == []
        await page.close_page()

    # The token went through the query of the event stream, and into no log line.
    assert TOKEN not in caplog.text


def spark_points(name: str) -> str:
    """A JavaScript expression: how many points the sparkline of ``name`` draws."""
    line = prop(name, "polyline")
    return (
        f"(document.querySelector('{line}')?.getAttribute('points') || '')"
        ".split(' ').filter(Boolean).length"
    )


async def test_a_sparkline_starts_with_the_history_of_the_local_store(
    tmp_path: Path, devices_dir: Path, page: Page
) -> None:
    settings = make_settings(tmp_path, devices_dir, local_store=True)
    # A first run stores a dozen temperatures (one every 100 ms).
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        assert gw.sinks is not None
        hub = gw.sinks

        async def stored() -> int:
            return len(await hub.history(REF, "temperature") or [])

        async with asyncio.timeout(20):
            while await stored() < 12:  # noqa: ASYNC110 (written in batches, no event to wait on)
                await asyncio.sleep(0.05)
    # The second run reads the device once in ten minutes: every point but one on the page
    # right after it loads can only come from the history.
    (devices_dir / "thermo-1.yaml").write_text(device_yaml(cycle=600_000))
    VirtualDriver.world.reset()
    async with Gateway(settings) as gw, served(gw) as base:
        await gw.wait_loaded(10)
        await page.goto(f"{base}/")
        await page.wait_for(f"{js_text(CARD + ' .state')} === 'online'")
        assert await page.wait_for(f"{spark_points('temperature')} >= 12")
        assert await page.run(f"return {spark_points('temperature')}") <= 60
        label = await page.run(
            f"return document.querySelector('{prop('temperature', 'svg')}')"
            ".getAttribute('aria-label')"
        )
        assert label.startswith("temperature, last ")
        # Only numeric properties have a sparkline, so only they ask for a history.
        assert await page.run(f"return document.querySelector('{prop('mode', 'svg')}')") is None
        assert await page.console_errors() == []
        await page.close_page()


async def test_a_write_without_token_asks_for_it_and_the_token_field_works(
    gateway: Gateway, page: Page, devices_dir: Path
) -> None:
    simulated = VirtualDriver.world.device(DEVICE)
    async with served(gateway) as base:
        await page.goto(f"{base}/")  # loopback: reading needs no token, writing does
        await page.wait_for(f"{js_text(prop('mode', '.value'))} === 'auto'")
        assert await page.run("return document.getElementById('auth').open") is False

        await page.type_into(prop("mode", "input"), "manual")
        await page.click(prop("mode", "button"))
        result = prop("mode", ".result")
        refused = await page.wait_for(
            f"document.querySelector('{result}').dataset.kind === 'error' && {js_text(result)}"
        )
        assert "unauthorized" in refused
        assert await page.wait_for("document.getElementById('auth').open")
        assert not any(name == "mode" and value == "manual" for name, value in simulated.writes)

        await page.type_into("#token", TOKEN)
        await page.click("#token-form button[type=submit]")
        await page.wait_for(f"{js_text('#token-state')} === 'set'")
        await page.click(prop("mode", "button"))
        await page.wait_for(f"document.querySelector('{result}').dataset.kind === 'ok'")
        await wait_until(lambda: ("mode", "manual") in simulated.writes)

        # Devices come and go with their files; a device's state is pushed too.
        count = "document.querySelectorAll('[data-device]').length"
        (devices_dir / "thermo-2.yaml").write_text(device_yaml("thermo-2"))
        await page.wait_for(f"{count} === 2")
        (devices_dir / "thermo-2.yaml").unlink()
        await page.wait_for(f"{count} === 1")
        simulated.online = False
        await page.wait_for(f"{js_text(CARD + ' .state')} !== 'online'")

        assert await page.console_errors() == []
        await page.close_page()


async def test_an_exposed_gateway_asks_for_the_token_once_without_retrying(
    exposed: Gateway, page: Page
) -> None:
    # The guard of `exposed` requires the token for reads; it is served on loopback here.
    async with served(exposed) as base:
        await page.goto(f"{base}/")
        notice = await page.wait_for(
            "document.getElementById('auth').open && document.getElementById('notice').textContent"
        )
        assert "unauthorized" in notice
        assert await page.wait_for(f"{js_text('#conn')} === 'Disconnected'")
        failures = exposed.guard.failures
        assert failures <= 2  # the stream and the list, each once: no retry loop
        await page.type_into("#token", TOKEN)
        await page.click("#token-form button[type=submit]")
        await page.wait_for(f"{js_text(CARD + ' .state')} === 'online'")
        assert await page.wait_for(f"{js_text('#conn')} === 'Live'")
        assert await page.run("return document.getElementById('notice').hidden") is True
        assert exposed.guard.failures == failures
        await page.close_page()
