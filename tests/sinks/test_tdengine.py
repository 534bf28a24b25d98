"""TDengine sink against a local server speaking taosAdapter's documented REST wire format:
``POST /rest/sql/<db>``, Basic auth, SQL body, ``{"code": 0, ...}`` / ``{"code", "desc"}``
answers (HTTP 200 either way by default). The fake runs the SQL our sink emits (a super table,
multi-table INSERT ... USING ... TAGS ... VALUES), so the test checks the stored rows."""

from __future__ import annotations

import base64
import logging
import re

import orjson
import pytest

from mapper_sdk.models.device import TdEngineClientConfig
from mapper_sdk.sinks import RunnerSettings, Sample, SinkError, SinkRejected, SinkRunner
from mapper_sdk.sinks.tdengine import CREATE_STABLE, STABLE, TdengineSettings, TdengineSink

from .servers import FakeHttpServer, Request, Response

USER, PASSWORD = "writer", "td-Secret-99"
TS = 1_700_000_000_123
TOKEN = re.compile(r"'(?:\\.|[^'\\])*'|-?\d+|[A-Za-z_][A-Za-z0-9_]*|[(),]|\S")


def ok(affected: int) -> Response:
    body = {"code": 0, "column_meta": [["affected_rows", "INT", 4]], "data": [[affected]],
            "rows": 1}  # fmt: skip
    return Response(200, orjson.dumps(body))


def error(code: int, desc: str) -> Response:
    return Response(200, orjson.dumps({"code": code, "desc": desc}))


def unquote(token: str) -> str:
    assert token.startswith("'"), token
    return re.sub(r"\\(.)", r"\1", token[1:-1])


class FakeTaos:
    """A database of super tables and sub-tables, driven over REST."""

    def __init__(self, database: str = "metrics") -> None:
        self.database = database
        self.stables: set[str] = set()
        self.tags: dict[str, tuple[str, str]] = {}  # sub-table -> (deviceid, propertyname)
        self.rows: dict[str, dict[int, tuple[str, str]]] = {}  # sub-table -> ts -> row
        self.statements: list[str] = []

    def __call__(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return Response(401, orjson.dumps({"code": 0x0357, "desc": "Authentication failure"}))
        if request.method != "POST" or request.path != f"/rest/sql/{self.database}":
            return Response(404, b"")
        sql = request.body.decode()
        self.statements.append(sql)
        tokens = TOKEN.findall(sql)
        if sql == CREATE_STABLE:
            self.stables.add(STABLE)
            return ok(0)
        if tokens[:2] != ["INSERT", "INTO"]:
            return error(0x2600, f"syntax error near {tokens[:3]}")
        return self.insert(tokens[2:])

    def insert(self, tokens: list[str]) -> Response:
        affected, i = 0, 0
        pending: list[tuple[str, tuple[str, str], list[tuple[int, str, str]]]] = []
        while i < len(tokens):
            table = tokens[i]
            if tokens[i + 1 : i + 4] != ["USING", STABLE, "TAGS"] or tokens[i + 4] != "(":
                return error(0x2600, f"syntax error near {table}")
            if STABLE not in self.stables:
                return error(0x2662, "Fail to get table info")
            tags = (unquote(tokens[i + 5]), unquote(tokens[i + 7]))
            assert tokens[i + 6 : i + 10 : 2] == [",", ")"], tokens[i : i + 10]
            assert tokens[i + 9] == "VALUES"
            i += 10
            values: list[tuple[int, str, str]] = []
            while i < len(tokens) and tokens[i] == "(":
                ts, comma1, data, comma2, kind, close = tokens[i + 1 : i + 7]
                assert (comma1, comma2, close) == (",", ",", ")")
                values.append((int(ts), unquote(data), unquote(kind)))
                i += 7
            pending.append((table, tags, values))
        for table, tags, values in pending:
            self.tags.setdefault(table, tags)
            for ts, data, kind in values:
                self.rows.setdefault(table, {})[ts] = (data, kind)  # same ts overwrites
                affected += 1
        return ok(affected)

    def stored(self) -> list[tuple[str, str, int, str, str]]:
        return sorted(
            (*self.tags[table], ts, data, kind)
            for table, rows in self.rows.items()
            for ts, (data, kind) in rows.items()
        )


def settings(url_port: int, env: dict[str, str] | None = None) -> TdengineSettings:
    crd = TdEngineClientConfig.model_validate(
        {"addr": f"127.0.0.1:{url_port}", "dbName": "metrics"}
    )
    return TdengineSettings.from_crd(
        crd, {"USERNAME": USER, "PASSWORD": PASSWORD} if env is None else env
    )


async def test_rows_land_in_one_sub_table_per_property() -> None:
    taos = FakeTaos()
    async with FakeHttpServer(respond=taos) as server:
        sink = TdengineSink(settings(server.port))
        await sink.open()
        batch = [
            Sample("default", "thermo-1", "temp", "21.5", "float", TS),
            Sample("default", "thermo-1", "temp", "21.7", "float", TS + 1000),
            Sample("default", "thermo-1", "label", "it's \\ odd", "string", TS),
            Sample("plant", "thermo-1", "temp", "19", "float", TS),
        ]
        await sink.write(batch)
        await sink.write(batch[:1])  # a retry overwrites the same timestamp
        await sink.aclose()
    assert taos.statements[0] == CREATE_STABLE
    assert taos.stored() == [
        ("default/thermo-1", "label", TS, "it's \\ odd", "string"),
        ("default/thermo-1", "temp", TS, "21.5", "float"),
        ("default/thermo-1", "temp", TS + 1000, "21.7", "float"),
        ("plant/thermo-1", "temp", TS, "19", "float"),
    ]
    assert len(taos.tags) == 3
    assert all(re.fullmatch(r"t_[0-9a-f]{24}", table) for table in taos.tags)


async def test_error_codes_decide_retry_or_drop() -> None:
    answers = [error(0x2603, "Table does not exist"), error(9728, 'syntax error near "x"')]
    async with FakeHttpServer(respond=lambda request: answers.pop(0)) as server:
        sink = TdengineSink(settings(server.port))
        with pytest.raises(SinkError, match="0x2603: Table does not exist") as retry:
            await sink.write([Sample("ns", "d", "p", "1", "int", TS)])
        assert not isinstance(retry.value, SinkRejected)
        with pytest.raises(SinkRejected, match="0x2600"):
            await sink.write([Sample("ns", "d", "p", "1", "int", TS)])
        await sink.aclose()


async def test_credentials_only_from_env_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    taos = FakeTaos()
    async with FakeHttpServer(respond=taos) as server:
        wrong = settings(server.port, {"USERNAME": USER, "PASSWORD": "wrong-pw-777"})
        assert "wrong-pw-777" not in repr(wrong)
        assert PASSWORD not in repr(settings(server.port))
        fast = RunnerSettings(max_delay=0.0, backoff_base=0.01, backoff_cap=0.02)
        runner = SinkRunner(TdengineSink(wrong), fast)
        runner.start()
        runner.offer(Sample("ns", "d", "p", "1", "int", TS))
        await server.wait_for(2)  # open refused (401), retried
        await runner.aclose(flush_within=0.2)
    assert "HTTP 401" in (runner.stats.last_error or "")
    assert "wrong-pw-777" not in caplog.text
    assert taos.statements == []
    default_user = TdengineSettings.from_crd(
        TdEngineClientConfig(addr="td", db_name="x"), {"PASSWORD": "p"}
    )
    assert (default_user.username, default_user.port) == ("root", 6041)
    assert default_user.sql_url == "http://td:6041/rest/sql/x"


def test_string_literals_round_trip() -> None:
    from mapper_sdk.sinks.tdengine import insert_sql, quote

    for text in ["plain", "it's", "back\\slash", "\\'", "''"]:
        assert unquote(TOKEN.findall(quote(text))[0]) == text
    sql = insert_sql([Sample("ns", "d", "p", "1", "int", TS)])
    assert sql.startswith("INSERT INTO t_")
    assert sql.endswith(f"USING {STABLE} TAGS ('ns/d', 'p') VALUES ({TS}, '1', 'int')")
