"""HTTPS and the transport rule: beyond loopback, TLS or an explicit --insecure-http.

A certificate authority and a server certificate are made in the test (``tls_kit.py``); the
clients trust only that CA, so a request that succeeds proves the gateway served the
configured certificate, for the right name, over a real TLS connection. Renewals are new
certificates of the same CA, told apart by their serial on new connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from mapper_gateway.__main__ import main
from mapper_gateway.gateway import Gateway
from mapper_gateway.settings import GatewaySettings
from mapper_gateway.tls import CertificateReloader, check_tls, fingerprint, load_pair
from mapper_sdk import ConfigError

from .kit import AUTH, TOKEN, free_port, make_settings, served, stop_process, wait_until
from .test_cli import _read_until
from .tls_kit import Pki, make_pki

WRITE = "/api/v1/devices/default/thermo-1/properties/mode"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


def trusting(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


async def test_the_api_serves_https_with_the_configured_certificate(
    tmp_path: Path, devices_dir: Path, pki: Pki
) -> None:
    settings = make_settings(tmp_path, devices_dir, tls_cert=pki.cert, tls_key=pki.key)
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        async with served(gw) as base:
            assert base.startswith("https://127.0.0.1:")
            async with httpx.AsyncClient(base_url=base, verify=trusting(pki)) as https:
                assert (await https.get("/healthz")).status_code == 200
                devices = await https.get("/api/v1/devices", headers=AUTH)
                assert devices.json()["total"] == 1
                write = await https.put(WRITE, json={"value": "heat"}, headers=AUTH)
                assert write.status_code == 200, write.text
            # A client that does not trust the CA refuses the server: the certificate is real.
            async with httpx.AsyncClient(base_url=base) as stranger:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await stranger.get("/healthz")
            # Plain HTTP on the HTTPS port gets no answer at all.
            plain = base.replace("https://", "http://")
            async with httpx.AsyncClient(base_url=plain) as cleartext:
                with pytest.raises(httpx.TransportError):
                    await cleartext.get("/healthz")


def test_cert_and_key_go_together_and_bad_files_are_named(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        GatewaySettings.load({"tls_cert": pki.cert})
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")  # a key that is not the certificate's
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (tmp_path / "missing.pem", pki.key, r"tls_cert .*missing\.pem: no such file"),
        (pki.cert, other.key, r"tls_cert .* / tls_key .*: .*KEY_VALUES_MISMATCH"),
        (garbage, pki.key, r"both must be PEM"),
        (pki.cert, pki.encrypted_key, r"tls_key .* is encrypted: .*openssl pkey"),
    ]
    for cert, key, message in cases:
        settings = GatewaySettings.load({"tls_cert": cert, "tls_key": key})
        with pytest.raises(ConfigError, match=message):
            check_tls(settings)
    check_tls(GatewaySettings.load({"tls_cert": pki.cert, "tls_key": pki.key}))  # the good pair


def test_plain_http_beyond_loopback_needs_tls_or_the_explicit_flag(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    for api in ("0.0.0.0:7777", "[::]:7777", "192.0.2.10:7777", "gateway.local:7777"):
        assert main(["run", "--api", api, "--mqtt-url", "off"]) == 2
        error = capsys.readouterr().err
        assert f"api {api} is not loopback" in error
        assert "--tls-cert" in error
        assert "--insecure-http" in error
        assert "Traceback" not in error
    tls = GatewaySettings.load({"api": "0.0.0.0:7777", "tls_cert": pki.cert, "tls_key": pki.key})
    assert tls.tls
    assert not tls.loopback_only
    assert GatewaySettings.load({"api": "0.0.0.0:7777", "insecure_http": True}).insecure_http
    assert not GatewaySettings.load({"api": "127.0.0.1:7777"}).tls  # loopback: HTTP is fine


def _gateway_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPPER_GATEWAY_")}
    env["MAPPER_GATEWAY_TOKEN"] = TOKEN
    return env


@pytest.mark.slow
def test_the_command_serves_https_from_its_config_file(
    tmp_path: Path, pki: Pki, devices_dir: Path
) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"tls_cert: {pki.cert}\ntls_key: {pki.key}\nmqtt_url: 'off'\ntls_reload_interval: 0\n"
    )
    command = [sys.executable, "-m", "mapper_gateway", "run", "--config", str(config)]
    command += ["--api", f"127.0.0.1:{port}", "--devices", str(devices_dir)]
    command += ["--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_gateway_env(), text=True
    )
    try:
        text = "\n".join(_read_until(process, "devices:", timeout=60))
        assert f"API on https://127.0.0.1:{port}" in text
        assert TOKEN not in text  # a configured token is never printed
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusting(pki)) as https:
            assert https.get("/healthz").status_code == 200
            assert https.get("/api/v1/devices", headers=AUTH).status_code == 200
        # Renewed on disk; with no polling (interval 0), SIGHUP loads it.
        first = _sync_served_serial(port, pki)
        renewed = tmp_path / "renewed"
        renewed.mkdir()
        second = pki.issue(renewed / "server.pem", renewed / "server.key")
        os.replace(renewed / "server.key", pki.key)
        os.replace(renewed / "server.pem", pki.cert)
        assert _sync_served_serial(port, pki) == first
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while _sync_served_serial(port, pki) != second:
            assert time.monotonic() < deadline, "SIGHUP did not load the renewed certificate"
            time.sleep(0.02)  # then a new connection: the condition is its certificate
    finally:
        code, stderr = stop_process(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert re.search(r"INFO mapper_gateway: TLS certificate reloaded from .*server\.pem", stderr)


@pytest.mark.slow
def test_an_exposed_gateway_on_plain_http_warns_and_fails_closed(
    tmp_path: Path, devices_dir: Path
) -> None:
    port = free_port()
    command = [sys.executable, "-m", "mapper_gateway", "run", "--api", f"0.0.0.0:{port}"]
    command += ["--insecure-http", "--mqtt-url", "off", "--devices", str(devices_dir)]
    command += ["--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_gateway_env(), text=True
    )
    try:
        _read_until(process, "devices:", timeout=60)
        # Only loopback traffic in tests: the wildcard address answers there too.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert http.get("/healthz").status_code == 200
            for path in ("/readyz", "/metrics", "/api/v1/devices", "/openapi.json", "/docs"):
                assert http.get(path).status_code == 401, path
                assert http.get(path, headers=AUTH).status_code in (200, 503), path
    finally:
        code, stderr = stop_process(process)
    assert code == 0, stderr
    assert re.search(r"WARNING mapper_gateway: the API on 0\.0\.0\.0:\d+ is plain HTTP", stderr)
    assert TOKEN not in stderr


def _serial(der: bytes | None) -> int:
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def _connect(port: int, pki: Pki) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A new TLS connection to the gateway, and the serial of the certificate it was served."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting(pki))
    return reader, writer, _serial(writer.get_extra_info("ssl_object").getpeercert(True))


async def _served_serial(port: int, pki: Pki) -> int:
    _, writer, serial = await _connect(port, pki)
    writer.close()
    await writer.wait_closed()
    return serial


async def _until_served(port: int, pki: Pki, serial: int) -> None:
    """Wait until a new connection is served the certificate ``serial`` (10 s), or fail."""
    async with asyncio.timeout(10):
        # Each attempt is a new TLS connection: what it is served is the condition.
        while await _served_serial(port, pki) != serial:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _healthz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """GET /healthz on an open connection; the status line."""
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return head.split(b"\r\n", 1)[0]


def _mount(directory: Path, cert: Path, key: Path) -> None:
    """Point the Secret-style mount ``directory`` (tls.crt -> ..data/tls.crt, ..data -> a
    version directory) at a copy of ``cert`` and ``key``: one atomic symlink swap, as the
    kubelet renews a Secret volume."""
    version = directory / f"..{time.monotonic_ns()}"
    version.mkdir()
    (version / "tls.crt").write_bytes(cert.read_bytes())
    (version / "tls.key").write_bytes(key.read_bytes())
    (version / "tls.key").chmod(0o600)
    staged = directory / "..data_tmp"
    staged.symlink_to(version.name)
    os.replace(staged, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, devices_dir: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mapper_gateway")
    mount = tmp_path / "mount"
    mount.mkdir()
    _mount(mount, pki.cert, pki.key)
    settings = make_settings(
        tmp_path,
        devices_dir,
        tls_cert=mount / "tls.crt",
        tls_key=mount / "tls.key",
        tls_reload_interval=0.1,
    )
    first = _serial_of(pki.cert)
    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        async with served(gw) as base:
            port = int(base.rsplit(":", 1)[1])
            reader, writer, before = await _connect(port, pki)
            assert before == first
            assert await _healthz(reader, writer) == b"HTTP/1.1 200 OK"
            renewed = tmp_path / "renewed"
            renewed.mkdir()
            second = pki.issue(renewed / "server.pem", renewed / "server.key")
            assert second != first
            _mount(mount, renewed / "server.pem", renewed / "server.key")
            await _until_served(port, pki, second)
            # The connection opened before keeps its session and still answers.
            assert await _healthz(reader, writer) == b"HTTP/1.1 200 OK"
            assert _serial(writer.get_extra_info("ssl_object").getpeercert(True)) == first
            writer.close()
            await writer.wait_closed()
    reloaded = [r.getMessage() for r in caplog.records if "TLS certificate reloaded" in r.message]
    assert len(reloaded) == 1, reloaded
    assert str(mount / "tls.crt") in reloaded[0]
    renewed_print = fingerprint(renewed / "server.pem")
    assert renewed_print is not None
    assert renewed_print in reloaded[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    key_text = (renewed / "server.key").read_text()
    assert all(key_text not in r.getMessage() for r in caplog.records)


async def test_a_broken_renewal_keeps_the_old_certificate_until_a_good_pair_arrives(
    tmp_path: Path, devices_dir: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mapper_gateway")
    settings = make_settings(
        tmp_path, devices_dir, tls_cert=pki.cert, tls_key=pki.key, tls_reload_interval=0.1
    )
    first = _serial_of(pki.cert)
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    second = pki.issue(renewed / "server.pem", renewed / "server.key")

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.WARNING]

    async with Gateway(settings) as gw:
        await gw.wait_loaded(10)
        async with served(gw) as base:
            port = int(base.rsplit(":", 1)[1])
            # Half-written: the key cut short, then the renewed certificate (each by rename).
            half = tmp_path / "half.key"
            key_bytes = (renewed / "server.key").read_bytes()
            half.write_bytes(key_bytes[: len(key_bytes) // 2])
            os.replace(half, pki.key)
            staged = tmp_path / "staged.pem"
            staged.write_bytes((renewed / "server.pem").read_bytes())
            os.replace(staged, pki.cert)
            await wait_until(failures)
            assert await _served_serial(port, pki) == first  # still the old pair
            assert await _served_serial(port, pki) == first
            # The key arrives: the next check loads the pair.
            staged_key = tmp_path / "staged.key"
            staged_key.write_bytes(key_bytes)
            staged_key.chmod(0o600)
            os.replace(staged_key, pki.key)
            await _until_served(port, pki, second)
    warned = [r.getMessage() for r in failures()]
    assert len(warned) == 1, warned  # once, though every poll in between failed again
    assert "TLS reload failed" in warned[0]
    assert "still serving the previous certificate" in warned[0]
    assert str(pki.key) in warned[0]
    assert key_bytes.decode() not in warned[0]
    assert len([r for r in caplog.records if "TLS certificate reloaded" in r.message]) == 1


def test_the_reloader_warns_once_per_distinct_failure(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mapper_gateway")
    live = load_pair(pki.cert, pki.key)
    reloader = CertificateReloader(pki.cert, pki.key, interval=0)
    assert not reloader.check(live)  # unchanged: nothing to do
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    os.replace(garbage, pki.key)
    for _ in range(3):
        assert not reloader.check(live)
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")  # a key that is not the certificate's
    os.replace(other.key, pki.key)
    for _ in range(3):
        assert not reloader.check(live)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "KEY_VALUES_MISMATCH" in warnings[1]
    os.replace(other.cert, pki.cert)
    assert reloader.check(live)
    assert reloader.reloads == 1
    assert not reloader.check(live)  # loaded: quiet until the next change
    reloader.request()  # SIGHUP: loads again even though nothing changed
    assert reloader.check(live)
    assert reloader.reloads == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_the_reload_interval_is_a_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert GatewaySettings.load({}).tls_reload_interval == 30
    assert GatewaySettings.load({"tls_reload_interval": 0}).tls_reload_interval == 0
    with pytest.raises(ValueError, match="tls_reload_interval"):
        GatewaySettings.load({"tls_reload_interval": -1})
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--tls-reload-interval SECONDS" in capsys.readouterr().out


def _sync_served_serial(port: int, pki: Pki) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        trusting(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return _serial(tls.getpeercert(True))
