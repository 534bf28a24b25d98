"""MySQL / MariaDB (``dbMethod.mysql``, extra ``mysql``): one table per device.

Upstream creates one table per *property*, named `` `ns/name/property` `` with columns
``(id, ts DATETIME, field TEXT)`` (contract §5.6), so a device with 20 properties makes 20
tables and the type is lost. We make one table per device, named `` `namespace/name` ``::

    id BIGINT AUTO_INCREMENT, ts DATETIME(3) (UTC), property VARCHAR(255), value TEXT,
    type VARCHAR(32), KEY (property, ts)

A name longer than MySQL's 64-character limit keeps its first 53 characters and gets a hash
suffix. Tables are created on first use (``CREATE TABLE IF NOT EXISTS``); the database must
exist. ``addr`` is ``host[:port]`` (3306), ``userName`` from the CRD, the password from the
``PASSWORD`` environment variable only; it never appears in a log line or a ``repr``.

The driver is aiomysql (pure Python on PyMySQL); a batch is one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import MysqlClientConfig
from mapper_sdk.sinks._base import Sample, SinkError, SinkRejected, require, secret, split_host_port

TIMEOUT = 5
NO_SUCH_TABLE = 1146
"""ER_NO_SUCH_TABLE: someone dropped the table; the retry creates it again."""
MAX_IDENTIFIER = 64


@dataclass(frozen=True, slots=True)
class MysqlSettings:
    """One database on one server, as one user. Equal settings share one sink and pool."""

    host: str
    port: int = 3306
    database: str = ""
    user: str = ""
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_crd(
        cls, crd: MysqlClientConfig, env: Mapping[str, str] | None = None
    ) -> MysqlSettings:
        if not crd.addr.strip() or not crd.database:
            raise ConfigError("dbMethod.mysql.mysqlClientConfig needs addr and database")
        host, port = split_host_port(crd.addr, 3306)
        return cls(host, port, crd.database, crd.user_name, secret(env, "PASSWORD"))

    def build(self) -> MysqlSink:
        return MysqlSink(self)


def table_name(namespace: str, name: str) -> str:
    """The device's table: ``namespace/name``, shortened with a hash when over 64 characters."""
    full = f"{namespace}/{name}"
    if len(full) <= MAX_IDENTIFIER:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: MAX_IDENTIFIER - 11]}~{digest}"


def quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def utc_datetime(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).replace(tzinfo=None)


def create_table_sql(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {quote(table)} ("
        "`id` BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, "
        "`ts` DATETIME(3) NOT NULL, "
        "`property` VARCHAR(255) NOT NULL, "
        "`value` TEXT NOT NULL, "
        "`type` VARCHAR(32) NOT NULL, "
        "KEY `property_ts` (`property`, `ts`)"
        ") DEFAULT CHARSET=utf8mb4"
    )


class MysqlSink:
    """Inserts each batch in one transaction, one multi-row INSERT per device table."""

    def __init__(self, settings: MysqlSettings) -> None:
        self._aiomysql = require("aiomysql", "mysql")
        self._errors = require("pymysql.err", "mysql")
        self.settings = settings
        self.name = f"mysql {settings.host}:{settings.port}/{settings.database}"
        self._pool: Any = None
        self._tables: set[str] = set()

    async def open(self) -> None:
        await self._ensure_pool()

    async def _ensure_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        s = self.settings
        try:
            self._pool = await self._aiomysql.create_pool(
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password or "",
                db=s.database,
                minsize=1,
                maxsize=2,
                autocommit=False,
                connect_timeout=TIMEOUT,
                charset="utf8mb4",
                pool_recycle=3600,
                # "Table already exists" from CREATE TABLE IF NOT EXISTS is a note; aiomysql
                # would turn it into a Python warning in the host application.
                init_command="SET SESSION sql_notes = 0",
            )
        except Exception as exc:
            raise self._error(exc) from exc
        return self._pool

    async def write(self, batch: Sequence[Sample]) -> None:
        by_table: dict[str, list[tuple[datetime, str, str, str]]] = defaultdict(list)
        for s in batch:
            row = (utc_datetime(s.timestamp_ms), s.property, s.value, s.type)
            by_table[table_name(s.namespace, s.name)].append(row)
        pool = await self._ensure_pool()
        try:
            async with pool.acquire() as conn:
                try:
                    async with conn.cursor() as cursor:
                        for table, rows in by_table.items():
                            if table not in self._tables:
                                await cursor.execute(create_table_sql(table))
                                self._tables.add(table)
                            # The table name is quoted by quote(); values are parameters.
                            sql = f"INSERT INTO {quote(table)} (`ts`, `property`, `value`, `type`)"
                            await cursor.executemany(sql + " VALUES (%s, %s, %s, %s)", rows)
                    await conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await conn.rollback()
                    raise
        except Exception as exc:
            # A dropped table must be created again: forget what we believed existed.
            self._tables.clear()
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> SinkError:
        errors = self._errors
        text = f"{self.name}: {type(exc).__name__}: {exc}"
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if (
            isinstance(exc, errors.MySQLError)
            and not isinstance(
                exc, errors.OperationalError | errors.InterfaceError | errors.InternalError
            )
            and code != NO_SUCH_TABLE
        ):
            # Data and syntax errors (ProgrammingError, DataError, IntegrityError): the batch
            # itself is bad, retrying it cannot help.
            return SinkRejected(text)
        return SinkError(text)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()
