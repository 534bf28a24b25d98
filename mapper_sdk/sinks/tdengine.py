"""TDengine (``dbMethod.TDEngine``, extra ``tdengine``): SQL over TDengine's REST API.

Each request is ``POST http://<addr>/rest/sql/<dbName>`` with the SQL text as the body and
``Authorization: Basic base64(USERNAME:PASSWORD)``, both from the environment (never from the
CRD; TDengine's default user ``root`` when ``USERNAME`` is unset). taosAdapter answers JSON
``{"code": 0, ...}`` on success and ``{"code": <n>, "desc": "..."}`` on failure, by default
with HTTP 200 in both cases, so the ``code`` decides.

Layout, TDengine's recommended "one table per data collection point": one super table
``mapper_sdk_samples (ts TIMESTAMP, data VARCHAR(4096), type VARCHAR(32)) TAGS (deviceid
VARCHAR(512), propertyname VARCHAR(256))`` with a sub-table per device property, named
``t_<hash of namespace/name/property>`` and created on first insert (``USING ... TAGS``).
Upstream makes one super table per device named after it (contract §5.6); a hash name avoids
its character-replacement rules, and the tags keep the readable ids. A retried batch
overwrites rows with the same timestamp instead of duplicating them. Timestamps are integer
milliseconds: the database must use the default ``ms`` precision.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import TdEngineClientConfig
from mapper_sdk.sinks import _httpclient
from mapper_sdk.sinks._base import Sample, SinkError, SinkRejected, secret, split_host_port

STABLE = "mapper_sdk_samples"
CREATE_STABLE = (
    f"CREATE STABLE IF NOT EXISTS {STABLE} (ts TIMESTAMP, data VARCHAR(4096), type VARCHAR(32))"
    " TAGS (deviceid VARCHAR(512), propertyname VARCHAR(256))"
)
PARSE_ERRORS = frozenset({0x0216, 0x021B, 0x2600, 0x060B, 0x0224})
"""TDengine's documented syntax and value-range codes: the batch is bad, not the server."""


@dataclass(frozen=True, slots=True)
class TdengineSettings:
    """One database behind one taosAdapter. Equal settings share one sink."""

    host: str
    port: int = 6041
    database: str = ""
    username: str = "root"
    password: str | None = field(default=None, repr=False)
    timeout: float = _httpclient.DEFAULT_TIMEOUT

    @classmethod
    def from_crd(
        cls, crd: TdEngineClientConfig, env: Mapping[str, str] | None = None
    ) -> TdengineSettings:
        if not crd.addr.strip() or not crd.db_name:
            raise ConfigError("dbMethod.TDEngine.TDEngineClientConfig needs addr and dbName")
        host, port = split_host_port(crd.addr, 6041)
        username = secret(env, "USERNAME") or "root"
        return cls(host, port, crd.db_name, username, secret(env, "PASSWORD"))

    @property
    def sql_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/rest/sql/{self.database}"

    def build(self) -> TdengineSink:
        return TdengineSink(self)


def quote(text: str) -> str:
    """A TDengine string literal (backslash escapes, as its SQL parser reads them)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def table_of(sample: Sample) -> str:
    key = f"{sample.namespace}/{sample.name}/{sample.property}".encode()
    return "t_" + hashlib.sha256(key).hexdigest()[:24]


def insert_sql(batch: Sequence[Sample]) -> str:
    """One multi-table INSERT that creates missing sub-tables on the way."""
    parts = ["INSERT INTO"]
    groups: dict[str, list[Sample]] = {}
    for sample in batch:
        groups.setdefault(table_of(sample), []).append(sample)
    for table, samples in groups.items():
        first = samples[0]
        parts.append(
            f"{table} USING {STABLE} TAGS ({quote(first.device_id)}, {quote(first.property)})"
            " VALUES"
        )
        parts.extend(f"({s.timestamp_ms}, {quote(s.value)}, {quote(s.type)})" for s in samples)
    return " ".join(parts)


class TdengineSink:
    """Creates the super table on open, then writes each batch as one INSERT statement."""

    def __init__(self, settings: TdengineSettings) -> None:
        self.settings = settings
        self.name = f"tdengine {settings.host}:{settings.port}/{settings.database}"
        credentials = f"{settings.username}:{settings.password or ''}".encode()
        headers = {
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
            "Content-Type": "text/plain; charset=utf-8",
        }
        self._http: Any = _httpclient.client("tdengine", settings.timeout, headers)

    async def open(self) -> None:
        await self._execute(CREATE_STABLE)

    async def write(self, batch: Sequence[Sample]) -> None:
        await self._execute(insert_sql(batch))

    async def _execute(self, sql: str) -> Any:
        url = self.settings.sql_url
        response = await _httpclient.post(self._http, self.name, url, sql.encode())
        try:
            answer = orjson.loads(response.content)
            code = int(answer.get("code", -1))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise SinkError(f"{self.name}: not a TDengine REST answer") from exc
        if code == 0:
            return answer
        detail = f"{self.name}: TDengine error 0x{code & 0xFFFF:04X}: {answer.get('desc', '')}"
        if code & 0xFFFF in PARSE_ERRORS:
            raise SinkRejected(detail)
        raise SinkError(detail)

    async def aclose(self) -> None:
        await self._http.aclose()
