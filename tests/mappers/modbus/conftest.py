"""Fixtures of the Modbus driver tests: a serial line without hardware, and TLS material."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.mosquitto import make_tls_files, running_in_ci


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals from socat: what one end writes, the other reads.

    Skips when socat is missing (Debian package ``socat``; ``scripts/system-deps`` installs
    it), except under CI (``CI=true``), where the serial tests must run.
    """
    socat = shutil.which("socat")
    if socat is None:
        message = "socat not found: install the Debian package 'socat' (scripts/system-deps)"
        if running_in_ci():
            pytest.fail(message + "; under CI the serial tests must run", pytrace=False)
        pytest.skip(message)
    server, client = tmp_path / "ttyServer", tmp_path / "ttyClient"
    links = [f"pty,raw,echo=0,link={server}", f"pty,raw,echo=0,link={client}"]
    process = subprocess.Popen([socat, *links], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (server.exists() and client.exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"socat did not create the pty pair (exit {process.poll()})")
            time.sleep(0.01)
        yield str(server), str(client)
    finally:
        process.terminate()
        process.wait(timeout=5)


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """Modbus/TLS servers authenticate their clients: a certificate from our CA is required."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        context.load_verify_locations(self.ca)
        context.verify_mode = ssl.CERT_REQUIRED
        return context


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    directory = tmp_path_factory.mktemp("modbus-tls")
    server = make_tls_files(directory)
    key, csr, crt = directory / "client.key", directory / "client.csr", directory / "client.crt"
    ext = directory / "client.ext"
    ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    ca_key = directory / "ca.key"
    for args in (
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=mapper"],
        ["x509", "-req", "-in", csr, "-CA", server.cafile, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return TlsMaterial(server.cafile, server.certfile, server.keyfile, crt, key)
