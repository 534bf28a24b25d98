"""Debian's ``chromium`` driven by its ``chromedriver`` over the W3C WebDriver protocol.

The protocol is plain JSON over HTTP, so an ``httpx.AsyncClient`` speaks it without blocking
the event loop that also serves the gateway under test (a blocking client would freeze the
server it is waiting on). Waits for the page run inside the page: a ``MutationObserver``
re-checks the condition on every DOM change until it holds or the timeout passes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from ..kit import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference

# Headless, and nothing that reaches out to the network or shares state between runs.
ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--window-size=1280,900",
]

_WAIT = """
const [timeoutMs, done] = [arguments[0], arguments[arguments.length - 1]];
const check = () => { try { return (%s); } catch (err) { return null; } };
const first = check();
if (first) { done({ok: true, value: first}); return; }
let timer = 0;
const observer = new MutationObserver(() => {
  const value = check();
  if (value) finish({ok: true, value});
});
const finish = (result) => { observer.disconnect(); clearTimeout(timer); done(result); };
timer = setTimeout(() => finish({ok: false, value: check()}), timeoutMs);
observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


def require_chromium() -> None:
    """Skip, naming the Debian packages, when the browser is missing; under CI=true, fail."""
    missing = [
        package
        for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver"))
        if shutil.which(binary) is None
    ]
    if not missing:
        return
    message = f"needs the Debian packages {' '.join(missing)} (scripts/system-deps installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class WebDriverError(AssertionError):
    pass


class Page:
    """One browser session; every method is one or two WebDriver commands."""

    def __init__(self, http: httpx.AsyncClient, session: str) -> None:
        self.http = http
        self.base = f"/session/{session}"

    async def command(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, self.base + path, json=body)
        value = response.json().get("value")
        if response.status_code >= 400:
            raise WebDriverError(f"{method} {path}: {value}")
        return value

    async def goto(self, url: str) -> None:
        await self.command("POST", "/url", {"url": url})

    async def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``return`` gives the result) in the page."""
        return await self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        """Wait until the JavaScript ``expression`` is truthy in the page; return its value."""
        body = {"script": _WAIT % expression, "args": [int(timeout * 1000)]}
        result = await self.command("POST", "/execute/async", body)
        if not result["ok"]:
            raise AssertionError(f"not true within {timeout} s: {expression} -> {result['value']}")
        return result["value"]

    async def find(self, css: str) -> str:
        found = await self.command("POST", "/element", {"using": "css selector", "value": css})
        return str(found[ELEMENT])

    async def type_into(self, css: str, text: str) -> None:
        element = await self.find(css)
        await self.command("POST", f"/element/{element}/clear", {})
        await self.command("POST", f"/element/{element}/value", {"text": text})

    async def click(self, css: str) -> None:
        element = await self.find(css)
        await self.command("POST", f"/element/{element}/click", {})

    async def resize(self, width: int, height: int) -> None:
        await self.command("POST", "/window/rect", {"width": width, "height": height})

    async def screenshot(self, path: Path) -> Path:
        png = await self.command("GET", "/screenshot")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(png))
        return path

    async def console_errors(self) -> list[str]:
        """Errors the page logged: uncaught exceptions, CSP violations, missing files. A
        response the page asked for and handles (a refused write's 4xx) is not one."""
        entries = await self.command("POST", "/se/log", {"type": "browser"})
        return [
            e["message"]
            for e in entries
            if e.get("level") == "SEVERE" and "/api/" not in e["message"].split(" ", 1)[0]
        ]

    async def close_page(self) -> None:
        """Leave the page, closing its event stream before the server under test stops."""
        await self.goto("about:blank")


@contextlib.asynccontextmanager
async def chromium(workdir: Path) -> AsyncIterator[Page]:
    """Start chromedriver and one fresh headless Chromium profile under ``workdir``."""
    require_chromium()
    port = free_port()
    driver = await _launch(workdir, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await wait_until(lambda: driver.returncode is not None or _listening(port), 30)
            if driver.returncode is not None:
                raise WebDriverError(f"chromedriver exited, see {workdir / 'chromedriver.log'}")
            session = await _new_session(http, workdir / "profile")
            page = Page(http, session)
            try:
                yield page
            finally:
                with contextlib.suppress(httpx.HTTPError, WebDriverError):
                    await page.command("DELETE", "")
    finally:
        if driver.returncode is None:
            driver.terminate()
        try:
            await asyncio.wait_for(driver.wait(), 10)
        except TimeoutError:
            driver.kill()
            await driver.wait()


async def _launch(workdir: Path, port: int) -> asyncio.subprocess.Process:
    def log_file() -> BinaryIO:
        workdir.mkdir(parents=True, exist_ok=True)
        return (workdir / "chromedriver.log").open("wb")

    # Chromium writes its profile and crash database under HOME: keep both in the tmp dir.
    env = {**os.environ, "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir / "config")}
    with await asyncio.to_thread(log_file) as log:
        return await asyncio.create_subprocess_exec(
            CHROMEDRIVER, f"--port={port}", stdout=log, stderr=subprocess.STDOUT, env=env
        )


async def _new_session(http: httpx.AsyncClient, profile: Path) -> str:
    capabilities = {
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": CHROMIUM, "args": [*ARGS, f"--user-data-dir={profile}"]},
        "goog:loggingPrefs": {"browser": "ALL"},
        "timeouts": {"script": 60_000, "pageLoad": 60_000, "implicit": 0},
    }
    response = await http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
    value = response.json()["value"]
    if response.status_code >= 400:
        raise WebDriverError(f"cannot start Chromium: {json.dumps(value)[:2000]}")
    return str(value["sessionId"])


def _listening(port: int) -> bool:
    """Whether chromedriver accepts connections (a loopback connect answers at once)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
