"""Redis (``dbMethod.redis``, extra ``redis``): one sorted set per device.

Layout, as KubeEdge's framework writes it (contract §5.6) except for the key::

    ZADD <namespace>/<name> <timestamp ms> '{"DeviceName": ..., "PropertyName": ...,
         "Namespace": ..., "Value": ..., "Type": ..., "TimeStamp": <ms>}'

Upstream's key is the bare device name, so two devices of the same name in different
namespaces share one set; ours is ``namespace/name``. The member JSON keeps upstream's field
names, so readers written for it parse ours. A retried batch adds nothing twice: a member
that is already in the set only has its (equal) score set again.

``addr`` is ``host[:port]`` (6379 by default), ``db`` the database number, ``poolsize`` the
connection limit. The password comes from the ``PASSWORD`` environment variable, never from
the CRD, and never appears in a log line or a ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import RedisClientConfig
from mapper_sdk.sinks._base import Sample, SinkError, SinkRejected, require, secret, split_host_port

TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """One Redis database. Equal settings share one sink and one connection pool."""

    host: str
    port: int = 6379
    db: int = 0
    pool_size: int = 0
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_crd(
        cls, crd: RedisClientConfig, env: Mapping[str, str] | None = None
    ) -> RedisSettings:
        if not crd.addr.strip():
            raise ConfigError("dbMethod.redis.redisClientConfig.addr is empty")
        host, port = split_host_port(crd.addr, 6379)
        return cls(host, port, crd.db, max(crd.poolsize, 0), secret(env, "PASSWORD"))

    def build(self) -> RedisSink:
        return RedisSink(self)


def member(sample: Sample) -> bytes:
    """The sorted-set member: upstream's ``DataModel`` JSON."""
    return orjson.dumps(
        {
            "DeviceName": sample.name,
            "PropertyName": sample.property,
            "Namespace": sample.namespace,
            "Value": sample.value,
            "Type": sample.type,
            "TimeStamp": sample.timestamp_ms,
        }
    )


class RedisSink:
    """ZADDs each batch in one pipelined round trip."""

    def __init__(self, settings: RedisSettings) -> None:
        self._redis_mod = require("redis.asyncio", "redis")
        self._errors = require("redis.exceptions", "redis")
        retry = require("redis.asyncio.retry", "redis")
        backoff = require("redis.backoff", "redis")
        self.settings = settings
        self.name = f"redis {settings.host}:{settings.port}/{settings.db}"
        s = settings
        self._client: Any = self._redis_mod.Redis(
            host=s.host,
            port=s.port,
            db=s.db,
            password=s.password,
            max_connections=s.pool_size or None,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            # One attempt per call: SinkRunner owns retries (redis-py's own default backs off
            # for seconds inside a single write, holding up close and the error report).
            retry=retry.Retry(backoff.NoBackoff(), 0),
        )

    async def open(self) -> None:
        await self._run(self._client.ping())

    async def write(self, batch: Sequence[Sample]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for sample in batch:
            pipe.zadd(f"{sample.namespace}/{sample.name}", {member(sample): sample.timestamp_ms})
        await self._run(pipe.execute())

    async def _run(self, call: Any) -> Any:
        errors = self._errors
        try:
            return await call
        except errors.ResponseError as exc:
            # WRONGTYPE and the like: the key holds something else; retrying cannot help.
            raise SinkRejected(f"{self.name}: {exc}") from exc
        except (errors.RedisError, OSError) as exc:
            raise SinkError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
