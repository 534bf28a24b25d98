"""MySQL sink against a real MariaDB: one table per device, exact rows, password handling."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime

import aiomysql
import pytest

from mapper_sdk.models.device import MysqlClientConfig
from mapper_sdk.sinks import RunnerSettings, Sample, SinkError, SinkRejected, SinkRunner
from mapper_sdk.sinks.mysql import MysqlSettings, MysqlSink, table_name

from .conftest import MYSQL_PASSWORD
from .servers import MariaDb

TS = 1_700_000_000_123  # 2023-11-14 22:13:20.123 UTC


def settings(server: MariaDb, password: str | None = MYSQL_PASSWORD) -> MysqlSettings:
    crd = MysqlClientConfig(addr=f"127.0.0.1:{server.port}", database="sinks", user_name="mapper")
    return MysqlSettings.from_crd(crd, {"PASSWORD": password} if password else {})


@pytest.fixture
async def conn(mariadb: MariaDb) -> AsyncIterator[aiomysql.Connection]:
    """A connection to the test database, emptied of tables first."""
    connection = await aiomysql.connect(
        host="127.0.0.1", port=mariadb.port, user="mapper", password=MYSQL_PASSWORD,
        db="sinks", autocommit=True,
    )  # fmt: skip
    async with connection.cursor() as cursor:
        await cursor.execute("SHOW TABLES")
        for (table,) in await cursor.fetchall():
            await cursor.execute(f"DROP TABLE `{table}`")
    yield connection
    connection.close()


async def query(conn: aiomysql.Connection, sql: str) -> list[tuple[object, ...]]:
    async with conn.cursor() as cursor:
        await cursor.execute(sql)
        return list(await cursor.fetchall())


async def test_one_table_per_device_with_exact_rows(
    mariadb: MariaDb, conn: aiomysql.Connection
) -> None:
    sink = MysqlSink(settings(mariadb))
    await sink.open()
    await sink.write(
        [
            Sample("default", "thermo-1", "temp", "21.5", "float", TS),
            Sample("default", "thermo-1", "label", "it's `odd` \\ text", "string", TS + 1),
            Sample("plant", "meter", "count", "7", "int", TS + 2),
        ]
    )
    await sink.write([Sample("default", "thermo-1", "temp", "22", "float", TS + 1000)])
    tables = sorted(row[0] for row in await query(conn, "SHOW TABLES"))
    assert tables == ["default/thermo-1", "plant/meter"]
    rows = await query(
        conn, "SELECT id, ts, property, value, type FROM `default/thermo-1` ORDER BY id"
    )
    assert rows == [
        (1, datetime(2023, 11, 14, 22, 13, 20, 123000), "temp", "21.5", "float"),
        (2, datetime(2023, 11, 14, 22, 13, 20, 124000), "label", "it's `odd` \\ text", "string"),
        (3, datetime(2023, 11, 14, 22, 13, 21, 123000), "temp", "22", "float"),
    ]
    assert await query(conn, "SELECT ts, property, value, type FROM `plant/meter`") == [
        (datetime(2023, 11, 14, 22, 13, 20, 125000), "count", "7", "int")
    ]
    await sink.aclose()


async def test_a_dropped_table_is_created_again(
    mariadb: MariaDb, conn: aiomysql.Connection
) -> None:
    sink = MysqlSink(settings(mariadb))
    await sink.write([Sample("ns", "d", "p", "1", "int", TS)])
    await query(conn, "DROP TABLE `ns/d`")
    with pytest.raises(SinkError, match="doesn't exist") as info:
        await sink.write([Sample("ns", "d", "p", "2", "int", TS + 1)])
    assert not isinstance(info.value, SinkRejected)  # retried, not dropped
    await sink.write([Sample("ns", "d", "p", "3", "int", TS + 2)])  # the runner's retry
    assert await query(conn, "SELECT value FROM `ns/d`") == [("3",)]
    await sink.aclose()


async def test_long_device_names_get_a_hashed_table(
    mariadb: MariaDb, conn: aiomysql.Connection
) -> None:
    name = "sensor-" + "x" * 80
    table = table_name("default", name)
    assert len(table) == 64
    assert table.startswith("default/sensor-xxx")
    assert table != table_name("default", name + "y")
    sink = MysqlSink(settings(mariadb))
    await sink.write([Sample("default", name, "p", "1", "int", TS)])
    assert await query(conn, f"SELECT value FROM `{table}`") == [("1",)]
    await sink.aclose()


async def test_password_only_from_env_and_never_shown(
    mariadb: MariaDb, conn: aiomysql.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = settings(mariadb)
    assert good.password == MYSQL_PASSWORD
    assert MYSQL_PASSWORD not in repr(good)
    wrong_password = "wrong-Secret-1234"
    wrong = settings(mariadb, wrong_password)
    assert wrong_password not in repr(wrong)
    fast = RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.02, close_timeout=0.5)
    runner = SinkRunner(wrong.build(), fast)
    runner.start()
    runner.offer(Sample("ns", "d", "p", "1", "int", TS))
    sink = runner.sink
    assert isinstance(sink, MysqlSink)
    with pytest.raises(SinkError, match="Access denied"):
        await sink.open()
    await runner.aclose()
    assert runner.stats.failures >= 1
    assert "Access denied" in (runner.stats.last_error or "")
    assert "sink mysql 127.0.0.1" in caplog.text
    for secret in (wrong_password, MYSQL_PASSWORD):
        assert secret not in caplog.text
        assert secret not in (runner.stats.last_error or "")
    assert await query(conn, "SHOW TABLES") == []


async def test_bad_data_is_rejected(mariadb: MariaDb, conn: aiomysql.Connection) -> None:
    sink = MysqlSink(settings(mariadb))
    too_long = "p" * 300  # the property column is VARCHAR(255); strict mode refuses it
    with pytest.raises(SinkRejected, match="Data too long"):
        await sink.write([Sample("ns", "d", too_long, "1", "int", TS)])
    await sink.write([Sample("ns", "d", "p", "1", "int", TS)])  # the sink carries on
    assert await query(conn, "SELECT property, value FROM `ns/d`") == [("p", "1")]
    await sink.aclose()
