"""Fixtures of the sink tests: real Redis and MariaDB servers (one each per session), a
recording fake sink, and helpers to build devices with a ``pushMethod``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mapper_sdk.binding import BoundDevice
from mapper_sdk.models import Device
from mapper_sdk.sinks import Sample, SinkError
from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property

from .servers import MariaDb, RedisServer

REDIS_PASSWORD = "redis-Secret-4711"
MYSQL_PASSWORD = "mysql-Secret-0815"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A ``redis-server`` with ``requirepass``; tests use distinct keys or flush their db."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), REDIS_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDb]:
    """A ``mariadbd`` with database ``sinks`` and user ``mapper`` (password login over TCP)."""
    server = MariaDb(tmp_path_factory.mktemp("mariadb"), "sinks", "mapper", MYSQL_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RecordingSink:
    """A sink that keeps every batch; ``fail`` makes the next writes raise; ``gate`` holds
    writes until it is set."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.batches: list[list[Sample]] = []
        self.opened = 0
        self.closed = False
        self.fail: list[BaseException] = []
        self.open_fail: list[BaseException] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.attempts = 0
        self._changed = asyncio.Event()

    @property
    def samples(self) -> list[Sample]:
        return [s for batch in self.batches for s in batch]

    async def open(self) -> None:
        self.opened += 1
        if self.open_fail:
            raise self.open_fail.pop(0)

    async def write(self, batch: Sequence[Sample]) -> None:
        self.attempts += 1
        self._changed.set()
        await self.gate.wait()
        if self.fail:
            raise self.fail.pop(0)
        self.batches.append(list(batch))
        self._changed.set()

    async def aclose(self) -> None:
        self.closed = True
        self._changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


async def wait_until(condition: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Poll ``condition`` until it holds, for state that signals nothing (runner stats)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (nothing to wait on but the clock)
            await asyncio.sleep(0.01)


def failing(n: int, message: str = "server down") -> list[BaseException]:
    return [SinkError(message) for _ in range(n)]


MODEL = make_model(
    "thermo-model",
    model_property("temp", "FLOAT", "ReadOnly"),
    model_property("count", "INT", "ReadOnly"),
    model_property("label", "STRING", "ReadOnly"),
)


def device_with_push(
    name: str, push: dict[str, dict[str, Any]], namespace: str = "default"
) -> BoundDevice:
    """A bound device of ``MODEL`` whose properties get the given raw ``pushMethod`` dicts
    (CRD spelling), edited into the Device as a user would write them."""
    device = make_device(name, MODEL, namespace=namespace)
    raw = device.model_dump(by_alias=True, exclude_none=True, mode="json")
    for prop in raw["spec"]["properties"]:
        if prop["name"] in push:
            prop["pushMethod"] = push[prop["name"]]
    return bind_or_raise(Device.model_validate(raw), MODEL, None)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "samples.db"
