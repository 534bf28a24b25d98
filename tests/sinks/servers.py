"""Servers the sink tests write to.

- ``FakeHttpServer``: a small HTTP/1.1 server on loopback (asyncio streams) that records every
  request and answers with a programmable ``respond`` function. It stands in for the
  destinations Debian packages no server for (InfluxDB 2, TDengine, an OTLP collector, an
  HTTP receiver); each test checks the documented wire format against what it recorded.
- ``RedisServer`` and ``MariaDb``: real ``redis-server`` and ``mariadbd`` processes on free
  loopback ports, with configs and data in a temporary directory (no system service).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from helpers.mosquitto import free_port, port_accepts, running_in_ci

HOST = "127.0.0.1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Response:
    status: int = 204
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0


Responder = Callable[[Request], Response | Awaitable[Response]]

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}


@dataclass
class FakeHttpServer:
    """Records requests; ``respond`` decides each answer (default: 204 No Content)."""

    respond: Responder = field(default=lambda request: Response())
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    errors: list[BaseException] = field(default_factory=list)
    """Assertions that failed in ``respond``; re-raised when the server exits."""
    _server: asyncio.Server | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def __aenter__(self) -> FakeHttpServer:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Keep-alive connections stay open until the client closes them; don't wait on them.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        if self.errors:
            raise self.errors[0]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:  # noqa: ASYNC109
        """Wait until ``count`` requests were recorded; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.requests

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await self._read(reader)
                if request is None:
                    return
                self.requests.append(request)
                self._changed.set()
                try:
                    answer = self.respond(request)
                    response = answer if isinstance(answer, Response) else await answer
                except AssertionError as exc:
                    self.errors.append(exc)
                    response = Response(500, str(exc).encode())
                if response.delay:
                    await asyncio.sleep(response.delay)
                reason = _REASONS.get(response.status, "Status")
                head = (
                    f"HTTP/1.1 {response.status} {reason}\r\n"
                    f"Content-Type: {response.content_type}\r\n"
                    f"Content-Length: {len(response.body)}\r\n\r\n"
                )
                writer.write(head.encode() + response.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        parts = urlsplit(target)
        return Request(method, parts.path, dict(parse_qsl(parts.query)), headers, body)


# --- real servers ---------------------------------------------------------------------------


def require_binary(binary: str, package: str) -> str:
    """The binary's path; skip naming the Debian package when it is missing (fail under CI)."""
    import pytest

    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = (
            f"{binary} not found: install the Debian package {package!r} "
            f"(apt-get install {package}, or scripts/system-deps)"
        )
        if running_in_ci():
            pytest.fail(message + "; under CI these tests must run, not skip", pytrace=False)
        pytest.skip(message)
    return path


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_accepts(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"server on port {port} did not start:\n{text[-3000:]}")
        time.sleep(0.02)


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class RedisServer:
    """``redis-server`` with ``requirepass``, no persistence, on a free loopback port."""

    def __init__(self, directory: Path, password: str) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        config = self.directory / "redis.conf"
        config.write_text(
            f'port {self.port}\nbind {HOST}\nprotected-mode yes\nsave ""\nappendonly no\n'
            f"dir {self.directory}\nlogfile {log}\nrequirepass {self.password}\ndaemonize no\n"
        )
        config.chmod(0o600)
        self.process = subprocess.Popen([self.binary, str(config)], stdout=subprocess.DEVNULL)
        _wait_port(self.port, self.process, log, 10.0)

    def stop(self) -> None:
        _stop(self.process)


class MariaDb:
    """``mariadbd`` with a fresh data directory; ``init.sql`` creates a database and a user
    that may only log in with a password over TCP."""

    def __init__(self, directory: Path, database: str, user: str, password: str) -> None:
        self.server = require_binary("mariadbd", "mariadb-server")
        self.install = require_binary("mariadb-install-db", "mariadb-server")
        self.directory = directory
        self.database, self.user, self.password = database, user, password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = self.directory / "data"
        log = self.directory / "mariadb.log"
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(
            [self.install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
             "--auth-root-authentication-method=socket", *as_root],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        init = self.directory / "init.sql"
        init.write_text(
            f"CREATE DATABASE IF NOT EXISTS `{self.database}`;\n"
            f"CREATE USER IF NOT EXISTS '{self.user}'@'127.0.0.1' "
            f"IDENTIFIED BY '{self.password}';\n"
            f"GRANT ALL ON `{self.database}`.* TO '{self.user}'@'127.0.0.1';\n"
        )
        init.chmod(0o600)
        self.process = subprocess.Popen(
            [self.server, "--no-defaults", f"--datadir={data}",
             f"--socket={self.directory / 'mysqld.sock'}", f"--port={self.port}",
             f"--bind-address={HOST}", f"--pid-file={self.directory / 'mysqld.pid'}",
             f"--log-error={log}", f"--init-file={init}", "--skip-name-resolve",
             "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--performance-schema=OFF",
             "--max-connections=50", *as_root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, self.process, log, 60.0)
        # The port opens before init.sql has run: wait until our user can log in.
        self._wait_login(time.monotonic() + 30.0, log)

    def _wait_login(self, deadline: float, log: Path) -> None:
        import pymysql

        while True:
            try:
                pymysql.connect(
                    host=HOST, port=self.port, user=self.user, password=self.password,
                    database=self.database, connect_timeout=2,
                ).close()  # fmt: skip
                return
            except pymysql.err.OperationalError as exc:
                if time.monotonic() > deadline:
                    text = log.read_text()
                    raise RuntimeError(f"mariadb never accepted the test user:\n{text}") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        _stop(self.process, 30.0)
