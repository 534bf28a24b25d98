"""A real mosquitto broker for tests, on a free loopback port with a generated config.

    broker = Mosquitto(tmp_path)
    broker.start()           # returns once the port accepts connections
    ... broker.port ...
    broker.restart()         # same port; broker.kill() is SIGKILL, broker.stop() SIGTERM
    broker.stop()

The default config is the one environment.md §4 recommends for tests::

    listener <port> 127.0.0.1
    allow_anonymous true
    persistence false
    max_queued_messages 0        # the default (1000) silently drops QoS 1 bursts

Options add persistence (``persistence=True``; kept across ``restart()``), a password file
(``users={"name": "password"}``, which turns anonymous access off), an ACL file, a TLS listener
(``tls=TlsFiles(...)``; :func:`make_tls_files` creates a CA and server certificate with openssl),
``message_size_limit`` and raw ``extra_config`` lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_accepts(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a TLS listener. ``require_certificate`` asks clients for a certificate
    signed by ``cafile``."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


def make_tls_files(directory: Path, *, hostname: str = "localhost", days: int = 2) -> TlsFiles:
    """Create a throw-away CA and a server certificate for ``hostname`` and 127.0.0.1 (openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName=DNS:{hostname},IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca_crt), "-days", str(days), "-subj", "/CN=mapper-sdk test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={hostname}")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", str(days), "-extfile", str(ext))  # fmt: skip
    return TlsFiles(ca_crt, crt, key)


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def ensure_available(binary: str = MOSQUITTO) -> None:
    """Skip the calling test if ``binary`` is missing, or fail it under CI (``CI=true``), where
    the broker tests must run."""
    import pytest  # only needed when called from a test

    if os.access(binary, os.X_OK):
        return
    message = (
        f"{binary} not found: install the Debian package 'mosquitto' (apt-get install mosquitto)"
    )
    if running_in_ci():
        pytest.fail(message + "; under CI the broker tests must run, not skip", pytrace=False)
    pytest.skip(message)


class MosquittoError(RuntimeError):
    """The broker did not start or stop as asked; the message ends with its log."""


class Mosquitto:
    """One mosquitto process; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        users: Mapping[str, str] | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
        message_size_limit: int | None = None,
        max_queued_messages: int = 0,
        extra_config: str = "",
        binary: str = MOSQUITTO,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.tls_port = tls_port if tls_port is not None or tls is None else free_port()
        self.persistence = persistence
        self.users = dict(users or {})
        self.password_file = password_file
        self.acl_file = acl_file
        self.message_size_limit = message_size_limit
        self.max_queued_messages = max_queued_messages
        self.extra_config = extra_config
        self.binary = binary
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        if self.users:
            self.password_file = self._write_password_file()

    # --- config ------------------------------------------------------------------------------

    def _write_password_file(self) -> Path:
        path = self.directory / "passwd"
        path.write_text("")
        path.chmod(0o600)
        for user, password in self.users.items():
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True, capture_output=True
            )
        return path

    def config_text(self) -> str:
        anonymous = self.password_file is None
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            f"max_queued_messages {self.max_queued_messages}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto drops to the 'mosquitto' user, which cannot read the test's
            # private tmp dir (password file, certificates, persistence). Stay as the caller.
            lines.append("user root")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                "persistence_file mosquitto.db",
            ]
        else:
            lines.append("persistence false")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.message_size_limit is not None:
            lines.append(f"message_size_limit {self.message_size_limit}")
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
            ]
            if self.tls.require_certificate:
                lines.append("require_certificate true")
        if self.extra_config:
            lines.append(self.extra_config.strip())
        return "\n".join(lines) + "\n"

    # --- process control ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once every listener accepts TCP connections."""
        if self.running:
            raise MosquittoError("mosquitto is already running")
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except MosquittoError:
                # The auto-picked port may have been taken between free_port() and bind();
                # pick new ones (only before the first successful start).
                if attempt == attempts - 1 or "Address already in use" not in self.log_text():
                    raise
                self.port = free_port()
                if self.tls is not None:
                    self.tls_port = free_port()

    def _start_once(self, timeout: float) -> None:
        self.config_path.write_text(self.config_text())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while pending:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise MosquittoError(
                    f"mosquitto exited with {code} while starting:\n{self._tail()}"
                )
            if port_accepts(pending[0]):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                self.kill()
                raise MosquittoError(
                    f"mosquitto did not open {pending} in {timeout}s\n{self._tail()}"
                )
            time.sleep(0.005)
        # Once started on these ports, keep them for restart().
        self._fixed_port = True

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit within ``timeout``)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case pause() stopped it
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, losing anything not yet saved."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self, *, hard: bool = False, timeout: float = 10.0) -> None:
        """Stop (``hard=True``: SIGKILL) and start again on the same port(s)."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (a hung broker)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.resume()
        self.stop()
