"""``/docs``: Swagger UI served by the gateway itself, so it works on a box without internet.

The page must name only the gateway's own URLs, each of them served; and in a real Chromium
the page must render the API's operations while every request it made stayed on the
gateway's origin (its policy would block anything else, and the test checks both).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from mapper_gateway.api.docs import ASSETS
from mapper_gateway.dashboard import STATIC
from mapper_gateway.gateway import Gateway

from .browser.webdriver import chromium
from .kit import AUTH, TOKEN, asgi_client, make_settings, served

VENDORED = STATIC / "swagger-ui"


def referenced_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


async def test_the_page_names_only_local_files_and_each_is_served(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = referenced_urls(page.text)
    assert len(urls) == 4  # icon, stylesheet, Swagger UI, its start-up script
    assert "cdn" not in page.text.lower()
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    for url in urls:
        assert url.startswith("/docs/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
        # Revalidation is a 304 without the body (the bundle is 1.7 MB).
        again = await client.get(url, headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
    bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert (
        (await client.get("/docs/assets/swagger-ui.css"))
        .headers["content-type"]
        .startswith("text/css")
    )
    for bad in ("/docs/assets/LICENSE", "/docs/assets/..%2Fdocs.js", "/docs/assets/x.js"):
        assert (await client.get(bad)).status_code == 404


def test_the_vendored_files_carry_their_license_and_source() -> None:
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    assert "SmartBear" in (VENDORED / "NOTICE").read_text()
    source = (VENDORED / "SOURCE").read_text()
    assert re.search(r"swagger-ui-dist \d+\.\d+\.\d+", source)
    for path, _ in ASSETS.values():
        assert (STATIC / path).is_file(), path
    # Swagger UI 5 or later: FastAPI's documents are OpenAPI 3.1, which 4.x cannot render.
    version = re.search(r"swagger-ui-dist (\d+)\.", source)
    assert version is not None
    assert int(version.group(1)) >= 5


async def test_beyond_loopback_the_page_needs_the_token_but_its_files_do_not(
    tmp_path: Path, devices_dir: Path
) -> None:
    settings = make_settings(tmp_path, devices_dir, api="0.0.0.0:7777", insecure_http=True)
    async with Gateway(settings) as gw, asgi_client(gw, ("192.0.2.7", 40000)) as http:
        assert (await http.get("/docs")).status_code == 401
        assert (await http.get("/openapi.json")).status_code == 401
        assert (await http.get("/docs", params={"token": TOKEN})).status_code == 200
        assert (await http.get("/openapi.json", headers=AUTH)).status_code == 200
        assert (await http.get("/docs/assets/swagger-ui.css")).status_code == 200


async def test_swagger_ui_renders_in_chromium_from_the_gateway_alone(
    tmp_path: Path, devices_dir: Path
) -> None:
    # Beyond loopback, so the page only works if it hands its token to the spec request.
    settings = make_settings(tmp_path, devices_dir, api="0.0.0.0:7777", insecure_http=True)
    async with (
        Gateway(settings) as gw,
        served(gw) as base,
        chromium(tmp_path / "chromium") as page,
    ):
        await gw.wait_loaded(10)
        await page.goto(f"{base}/docs?token={TOKEN}")
        paths = await page.wait_for(
            "document.querySelectorAll('.opblock-summary-path').length > 10 && "
            "[...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)",
            timeout=60,
        )
        assert any("/api/v1/devices" in path for path in paths)
        assert "token" not in await page.run("return location.href")
        title = await page.run("return document.querySelector('.info .title')?.textContent")
        assert "mapper-gateway" in title
        loaded = await page.run("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any(url.endswith("/openapi.json") for url in loaded)
        assert all(url.startswith(base + "/") for url in loaded), loaded
        await page.screenshot(tmp_path / "docs.png")
        assert await page.console_errors() == []
        await page.close_page()
