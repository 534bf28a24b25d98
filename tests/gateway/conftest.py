"""Fixtures of the gateway tests: a devices directory, a started gateway, an HTTP client.

The devices are simulated by the real built-in virtual driver; the HTTP client goes through
the real application (httpx's ASGI transport). Helpers live in ``kit.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from mapper_gateway.gateway import Gateway
from mapper_sdk.virtual import VirtualDriver

from .kit import MODEL_YAML, asgi_client, device_yaml, make_settings


@pytest.fixture(autouse=True)
def fresh_world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


@pytest.fixture
def devices_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "devices"
    directory.mkdir()
    (directory / "model.yaml").write_text(MODEL_YAML)
    (directory / "thermo-1.yaml").write_text(device_yaml())
    return directory


@pytest.fixture
async def gateway(tmp_path: Path, devices_dir: Path) -> AsyncIterator[Gateway]:
    async with Gateway(make_settings(tmp_path, devices_dir)) as gw:
        await gw.wait_loaded(10)
        yield gw


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(gateway) as http:
        yield http
