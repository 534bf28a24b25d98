"""``pushMethod`` and the local store in the gateway: a YAML device's values reach a real HTTP
receiver on loopback and the SQLite file, and ``/metrics`` counts them per sink."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from mapper_gateway.gateway import Gateway

from .kit import MODEL_YAML, asgi_client, device_yaml, make_settings, wait_until


class Receiver(ThreadingHTTPServer):
    """An HTTP server on a free loopback port that keeps every POSTed body."""

    def __init__(self) -> None:
        self.bodies: queue.Queue[tuple[str, bytes]] = queue.Queue()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.bodies.put((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def pushing_device(port: int) -> str:
    """thermo-1, whose temperature is also pushed to ``127.0.0.1:port/values``."""
    text = device_yaml()
    first = "      reportToCloud: true\n"
    push = (
        "      pushMethod:\n"
        "        http:\n"
        "          hostName: http://127.0.0.1\n"
        f"          port: {port}\n"
        "          requestPath: /values\n"
    )
    return text.replace(first, first + push, 1)


async def test_push_method_and_local_store_get_the_values(
    tmp_path: Path, receiver: Receiver
) -> None:
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "model.yaml").write_text(MODEL_YAML)
    (devices / "thermo-1.yaml").write_text(pushing_device(receiver.port))
    settings = make_settings(tmp_path, devices, local_store=True)
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        # Waited for in a thread: the gateway runs on this loop. A batch fills for up to 1 s.
        path, body = await asyncio.to_thread(receiver.bodies.get, timeout=20)
        assert path == "/values"
        samples = orjson.loads(body)["samples"]
        assert {s["property"] for s in samples} == {"temperature"}  # only the pushed one
        assert {(s["namespace"], s["name"]) for s in samples} == {("default", "thermo-1")}
        assert all(15 <= float(s["value"]) <= 28 for s in samples)

        store = settings.state_dir / "values.sqlite3"

        def stored() -> set[str]:
            with sqlite3.connect(store) as db:  # the store is WAL: readers never block it
                rows = db.execute(
                    "SELECT DISTINCT v.key FROM reports AS r, json_each(r.vals) AS v "
                    "WHERE r.name = 'thermo-1'"
                )
                return {row[0] for row in rows}

        # The local store keeps every reported property, pushed or not.
        await wait_until(lambda: store.exists() and stored() == {"temperature", "setpoint", "mode"})
        async with asgi_client(gw) as http:
            metrics = (await http.get("/metrics")).text
        url = f"http://127.0.0.1:{receiver.port}/values"
        assert f'mapper_sink_healthy{{sink="http {url}"}} 1.0' in metrics
        assert f'mapper_sink_written_total{{sink="http {url}"}}' in metrics
        assert f'mapper_sink_written_total{{sink="sqlite {store}"}}' in metrics


async def test_the_local_store_is_on_by_default_and_can_be_turned_off(
    tmp_path: Path, devices_dir: Path
) -> None:
    assert make_settings(tmp_path, devices_dir).local_store
    settings = make_settings(tmp_path, devices_dir, local_store=False)
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        supervisor = next(iter(gw.require_runtime().devices.values()))
        await wait_until(lambda: supervisor.stats.reads >= 2)
        assert gw.sinks is not None
        assert gw.sinks.stats() == {}
    assert not (settings.state_dir / "values.sqlite3").exists()
