"""What every sink shares: the ``Sample`` it stores, the ``Sink`` protocol, its errors.

A sink is one destination (an HTTP endpoint, a broker, a database). It knows nothing about
queues, batching or retries: ``SinkRunner`` owns those and calls ``write`` with a batch. A sink
raises ``SinkError`` when a batch may succeed later (the runner backs off and retries it) and
``SinkRejected`` when it never will (the runner drops it and counts it as ``rejected``).

Optional libraries (httpx, redis, aiomysql) are imported by ``require`` inside the sink that
needs them, so importing ``mapper_sdk.sinks`` costs nothing and a missing library is reported
with the extra that provides it.
"""

from __future__ import annotations

import builtins
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import orjson

from mapper_sdk.errors import ConfigError, MapperError


@dataclass(frozen=True, slots=True)
class Sample:
    """One reported property value, as the sinks store it.

    ``value`` is the twin string (exactly what went to EdgeCore), ``type`` the twin type
    (``int``, ``float``, ``string``, ``boolean``...) and ``timestamp_ms`` the report's wall-clock
    time. ``route`` carries the per-property settings of the sink it is queued for (an MQTT
    topic, an InfluxDB measurement); the hub sets it, custom sinks may ignore it.
    """

    namespace: str
    name: str
    property: str
    value: str
    type: str
    timestamp_ms: int
    route: object = None

    @builtins.property  # the field ``property`` shadows the builtin in this class body
    def device_id(self) -> str:
        """The KubeEdge device id, ``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object our HTTP and MQTT sinks send for one sample."""
        return {
            "device": self.device_id,
            "namespace": self.namespace,
            "name": self.name,
            "property": self.property,
            "value": self.value,
            "type": self.type,
            "timestamp": self.timestamp_ms,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@runtime_checkable
class Sink(Protocol):
    """A destination for samples. ``SinkRunner`` calls these one at a time, never concurrently.

    ``write`` must work again after it raised: reconnect lazily on the next call rather than
    giving up, because the runner keeps retrying the batch with backoff.
    """

    name: str
    """Where the sink writes, for logs and metrics; never carries a secret."""

    async def open(self) -> None:
        """Connect and prepare (create tables...). Raise ``SinkError`` to be retried."""

    async def write(self, batch: Sequence[Sample]) -> None:
        """Store every sample of ``batch`` or raise; a partial write is retried whole."""

    async def aclose(self) -> None:
        """Release connections; never raises."""


class SinkError(MapperError):
    """Writing failed but may work later (server down, timeout): the batch is retried.

    ``written`` is how many samples at the head of the batch were stored before the failure;
    only the rest is retried (sinks that send one request per sample set it).
    """

    def __init__(self, message: str, *, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class SinkRejected(SinkError):
    """The destination refused the batch for good (bad request): it is dropped, not retried."""


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import an optional library, or raise ``ConfigError`` naming the extra that installs it
    (``package`` is the distribution's name when it differs from the module's)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise ConfigError(
            f"this sink needs the Python package {name!r}: pip install 'mapper-sdk[{extra}]'"
        ) from exc


def secret(env: Mapping[str, str] | None, key: str) -> str | None:
    """A credential from the environment (contract §1.3: never from the CRD). Empty is unset."""
    source = os.environ if env is None else env
    return source.get(key) or None


def split_host_port(addr: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (or ``[v6]:port``), as the CRD's ``addr`` fields carry it."""
    addr = addr.strip()
    if "://" in addr:
        addr = addr.split("://", 1)[1]
    addr = addr.rstrip("/")
    host, port = addr, default_port
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], addr)
    elif addr.count(":") == 1:
        host, raw = addr.split(":")
        port = _port(raw, addr)
    return host or "127.0.0.1", port


def _port(raw: str, addr: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"address {addr!r}: bad port {raw!r}")
    return port
