"""Helpers of the gateway tests: device YAML, settings, HTTP clients, condition waits.

The devices are simulated by the real built-in virtual driver; the HTTP clients go through
the real application (httpx's ASGI transport, or a real uvicorn on a free loopback port for
streaming).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from mapper_gateway.__main__ import _Server, _uvicorn_config
from mapper_gateway.app import create_app
from mapper_gateway.gateway import Gateway
from mapper_gateway.settings import GatewaySettings
from mapper_gateway.tls import CertificateReloader

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

MODEL_YAML = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermo-model
  namespace: default
spec:
  protocol: virtual
  properties:
    - name: temperature
      type: FLOAT
      accessMode: ReadOnly
      minimum: "-40"
      maximum: "85"
      unit: Celsius
    - name: setpoint
      type: FLOAT
      accessMode: ReadWrite
      minimum: "5"
      maximum: "35"
    - name: mode
      type: STRING
      accessMode: ReadWrite
"""


def device_yaml(name: str = "thermo-1", *, desired: str = "21.5", cycle: int = 100) -> str:
    return f"""\
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: {name}
  namespace: default
spec:
  deviceModelRef:
    name: thermo-model
  protocol:
    protocolName: virtual
  properties:
    - name: temperature
      visitors:
        protocolName: virtual
        configData: {{kind: random_walk, value: 21.0, min: 15, max: 28, step: 0.2}}
      collectCycle: {cycle}
      reportToCloud: true
    - name: setpoint
      desired:
        value: "{desired}"
      visitors:
        protocolName: virtual
        configData: {{kind: writable, value: 20.0}}
      collectCycle: {cycle}
      reportToCloud: true
    - name: mode
      visitors:
        protocolName: virtual
        configData: {{kind: writable, value: auto}}
      collectCycle: {cycle}
      reportToCloud: true
  methods:
    - name: SetClimate
      propertyNames: [setpoint, mode]
"""


def make_settings(tmp_path: Path, devices: Path | None, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "devices": devices,
        "mqtt_url": "off",
        "state_dir": tmp_path / "state",
        "token": TOKEN,
        **overrides,
    }
    return GatewaySettings.load(values)


def asgi_client(gw: Gateway, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(gw), client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for a condition of the running gateway, checked every 20 ms, or fail."""
    async with asyncio.timeout(timeout):
        # The conditions read runtime internals that have no event to wait on.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def served(gw: Gateway) -> AsyncIterator[str]:
    """The app on a real uvicorn on a free loopback port (HTTPS when the gateway's settings
    name a certificate, reloaded when it is renewed, as ``serve`` does); yields its base URL."""
    port = free_port()
    settings = gw.settings.model_copy(update={"api": f"127.0.0.1:{port}"})
    reloader = CertificateReloader.for_settings(settings)
    server = _Server(_uvicorn_config(settings, create_app(gw)))
    task = asyncio.create_task(server.serve())
    await asyncio.wait_for(server.listening.wait(), 10)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if reloader is not None and server.config.ssl is not None:
                await stack.enter_async_context(reloader.watch(server.config.ssl))
            yield f"{'https' if settings.tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def stop_process(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGINT a gateway started as a subprocess; its exit code and everything it logged."""
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=20)
    finally:
        process.kill()
        stderr = process.stderr.read() if process.stderr else ""
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return code, stderr
