"""HTTPS and the transport rule: beyond loopback, TLS or an explicit --insecure-http.

A certificate authority and a server certificate are made in the test (``tls_kit.py``); the
clients trust only that CA, so a request that succeeds proves the gateway served the
configured certificate, for the right name, over a real TLS connection.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mapper_gateway.__main__ import main
from mapper_gateway.gateway import Gateway
from mapper_gateway.settings import GatewaySettings
from mapper_gateway.tls import check_tls
from mapper_sdk import ConfigError

from .kit import AUTH, TOKEN, free_port, make_settings, served, stop_process
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
    config.write_text(f"tls_cert: {pki.cert}\ntls_key: {pki.key}\nmqtt_url: 'off'\n")
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
    finally:
        code, stderr = stop_process(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr


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
