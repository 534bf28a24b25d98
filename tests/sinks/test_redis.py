"""Redis sink against a real redis-server (``requirepass``): ZADD layout, password handling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from mapper_sdk.models.device import RedisClientConfig
from mapper_sdk.sinks import RunnerSettings, Sample, SinkError, SinkRunner
from mapper_sdk.sinks.redis import RedisSettings, RedisSink

from .conftest import REDIS_PASSWORD
from .servers import RedisServer

TS = 1_700_000_000_000


@pytest.fixture
async def db(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """Database 3 of the session's server, empty at the start of the test."""
    client = aioredis.Redis(port=redis_server.port, password=REDIS_PASSWORD, db=3)
    await client.flushdb()
    yield client
    await client.aclose()


def settings(server: RedisServer, password: str | None = REDIS_PASSWORD) -> RedisSettings:
    crd = RedisClientConfig(addr=f"127.0.0.1:{server.port}", db=3, poolsize=4)
    return RedisSettings.from_crd(crd, {"PASSWORD": password} if password else {})


async def test_zadd_per_device_with_upstream_member_json(
    redis_server: RedisServer, db: aioredis.Redis
) -> None:
    sink = RedisSink(settings(redis_server))
    await sink.open()
    batch = [
        Sample("default", "thermo-1", "temp", "21.5", "float", TS),
        Sample("default", "thermo-1", "count", "7", "int", TS + 5),
        Sample("plant", "thermo-1", "temp", "19", "float", TS + 9),  # same name, other ns
    ]
    await sink.write(batch)
    await sink.write(batch[:1])  # a retried sample is not stored twice
    assert sorted(await db.keys()) == [b"default/thermo-1", b"plant/thermo-1"]
    stored = await db.zrange("default/thermo-1", 0, -1, withscores=True)
    assert [(orjson.loads(member), score) for member, score in stored] == [
        ({"DeviceName": "thermo-1", "PropertyName": "temp", "Namespace": "default",
          "Value": "21.5", "Type": "float", "TimeStamp": TS}, float(TS)),
        ({"DeviceName": "thermo-1", "PropertyName": "count", "Namespace": "default",
          "Value": "7", "Type": "int", "TimeStamp": TS + 5}, float(TS + 5)),
    ]  # fmt: skip
    other = await db.zrange("plant/thermo-1", 0, -1, withscores=True)
    assert [(orjson.loads(m)["Namespace"], s) for m, s in other] == [("plant", float(TS + 9))]
    await sink.aclose()


async def test_password_stays_secret(
    redis_server: RedisServer, db: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = settings(redis_server)
    assert good.password == REDIS_PASSWORD
    assert REDIS_PASSWORD not in repr(good)
    wrong = settings(redis_server, "not-the-password")
    fast = RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.02, close_timeout=0.5)
    runner = SinkRunner(wrong.build(), fast)
    runner.start()
    runner.offer(Sample("ns", "d", "p", "1", "int", TS))
    sink = runner.sink
    assert isinstance(sink, RedisSink)
    assert "not-the-password" not in repr(sink.settings)
    with pytest.raises(SinkError):
        await sink.open()
    await runner.aclose()
    assert runner.stats.failures >= 1
    assert runner.stats.last_error is not None
    assert "not-the-password" not in runner.stats.last_error
    assert "sink redis 127.0.0.1" in caplog.text  # the outage was logged...
    assert "not-the-password" not in caplog.text  # ...without the password
    assert REDIS_PASSWORD not in caplog.text
    assert await db.dbsize() == 0


async def test_server_down_is_retried_then_written(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = RedisServer(tmp_path_factory.mktemp("redis-restart"), REDIS_PASSWORD)
    sink = RedisSink(settings(server))  # nothing listens on the port yet
    with pytest.raises(SinkError, match="ConnectionError"):
        await sink.write([Sample("ns", "d", "p", "1", "int", TS)])
    runner = SinkRunner(sink, RunnerSettings(max_delay=0.0, backoff_base=0.02, backoff_cap=0.1))
    runner.start()
    runner.offer(Sample("ns", "d", "p", "2", "int", TS + 1))
    server.start()
    try:
        async with asyncio.timeout(20):
            await runner.flush()
        assert runner.stats.written == 1
        check = aioredis.Redis(port=server.port, password=REDIS_PASSWORD, db=3)
        assert await check.zrange("ns/d", 0, -1) == [
            b'{"DeviceName":"d","PropertyName":"p","Namespace":"ns","Value":"2","Type":"int",'
            b'"TimeStamp":1700000000001}'
        ]
        await check.aclose()
    finally:
        await runner.aclose()
        server.stop()


async def test_wrong_type_key_is_rejected(redis_server: RedisServer, db: aioredis.Redis) -> None:
    from mapper_sdk.sinks import SinkRejected

    await db.set("ns/d", "a string, not a sorted set")
    sink = RedisSink(settings(redis_server))
    with pytest.raises(SinkRejected, match="WRONGTYPE"):
        await sink.write([Sample("ns", "d", "p", "1", "int", TS)])
    await sink.aclose()
