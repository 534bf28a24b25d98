"""Security against a real server: every policy, certificates made here, trust both ways,
and user identities with secrets from files and environment variables."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography.x509.oid import ExtendedKeyUsageOID
from mapper_opcua.driver import OpcUaDriver

from mapper_sdk.errors import DeviceConnectError

from .device import DeviceServer
from .kit import bound, opcua_device

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIENT_URI = "urn:mapper-sdk:test-client"
POLICIES = ["Basic128Rsa15", "Basic256", "Basic256Sha256", "Aes128Sha256RsaOaep"]
POLICIES += ["Aes256Sha256RsaPss"]


@dataclass(frozen=True)
class Pki:
    server_cert: Path
    server_key: Path
    client_cert: Path  # trusted by the server
    client_key: Path
    stranger_cert: Path  # not trusted by the server
    stranger_key: Path
    server_trusts: Path  # the server's trust store directory


async def _pair(directory: Path, name: str, uri: str, usage: Any) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.der", directory / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, uri, "127.0.0.1", [usage], {"commonName": name})
    return cert, key


class Users:
    """Anonymous and certificate users get in; user names need the right password."""

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, **_: Any
    ) -> User | None:
        if username is None or (username, password) == ("operator", "s3cret"):
            return User(role=UserRole.User, name=username)
        return None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    server = await _pair(
        root, "server", "urn:freeopcua:python:server", ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = await _pair(root, "client", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = await _pair(root, "stranger", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
    trusts = root / "server-trusts"
    trusts.mkdir()
    shutil.copy(client[0], trusts)
    return Pki(*server, *client, *stranger, trusts)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(pki: Pki) -> AsyncIterator[DeviceServer]:
    async def configure(server: Server) -> None:
        server.set_security_policy(
            [
                getattr(ua.SecurityPolicyType, f"{p}_{m}")
                for p in POLICIES
                for m in ("Sign", "SignAndEncrypt")
            ]
        )
        await server.load_certificate(str(pki.server_cert))
        await server.load_private_key(str(pki.server_key))
        store = TrustStore([pki.server_trusts], [])
        await store.load()
        options = (
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        )
        server.set_certificate_validator(CertificateValidator(options, store))

    device = await DeviceServer.start(configure, user_manager=Users())
    try:
        yield device
    finally:
        await device.stop()


def _config(server: DeviceServer, pki: Pki, **extra: Any) -> dict[str, Any]:
    return {
        "url": server.url,
        "securityPolicy": "Basic256Sha256",
        "securityMode": "SignAndEncrypt",
        "certificate": str(pki.client_cert),
        "privateKey": str(pki.client_key),
        "remoteCertificate": str(pki.server_cert),
        **extra,
    }


async def _read_label(server: DeviceServer, config: dict[str, Any]) -> Any:
    props = {"label": ("STRING", "ReadOnly", {"nodeID": server.node_id("label")})}
    dev, model = opcua_device("secure", props, config)
    driver = OpcUaDriver(bound(dev, model))
    async with driver:
        (value,) = await driver.read(driver.device.properties)
        assert driver._conn is not None
        policy = driver._conn.client.security_policy
        return value, policy.URI.rsplit("#", 1)[1], policy.Mode.name


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_every_policy_and_mode(
    secure: DeviceServer, pki: Pki, policy: str, mode: str
) -> None:
    config = _config(secure, pki, securityPolicy=policy, securityMode=mode)
    value, used_policy, used_mode = await _read_label(secure, config)
    assert (value, used_policy.replace("_", ""), used_mode) == ("hello", policy, mode)


async def test_the_server_refuses_an_untrusted_client_certificate(
    secure: DeviceServer, pki: Pki
) -> None:
    config = _config(
        secure, pki, certificate=str(pki.stranger_cert), privateKey=str(pki.stranger_key)
    )
    with pytest.raises(DeviceConnectError, match=r"BadCertificateUntrusted|BadSecurityChecks"):
        await _read_label(secure, config)


async def test_an_untrusted_server_is_refused_until_trusted(
    secure: DeviceServer, pki: Pki, tmp_path: Path
) -> None:
    config = _config(secure, pki, trustStore=str(tmp_path))
    del config["remoteCertificate"]
    with pytest.raises(DeviceConnectError, match=r"untrusted: trust store .* holds no cert"):
        await _read_label(secure, config)
    shutil.copy(pki.stranger_cert, tmp_path)  # trusting someone else does not help
    with pytest.raises(DeviceConnectError, match="BadCertificateUntrusted"):
        await _read_label(secure, config)
    shutil.copy(pki.server_cert, tmp_path)
    assert (await _read_label(secure, config))[0] == "hello"


async def test_a_pinned_certificate_that_is_not_the_servers_is_refused(
    secure: DeviceServer, pki: Pki
) -> None:
    config = _config(secure, pki, remoteCertificate=str(pki.stranger_cert), timeout=1000)
    with pytest.raises(DeviceConnectError):
        await _read_label(secure, config)


async def test_allow_untrusted_server_takes_the_advertised_certificate(
    secure: DeviceServer, pki: Pki
) -> None:
    config = _config(secure, pki, allowUntrustedServer=True)
    del config["remoteCertificate"]
    assert (await _read_label(secure, config))[0] == "hello"


async def test_user_name_with_password_from_file_or_environment(
    secure: DeviceServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")  # a trailing newline, as editors write it
    from_file = _config(secure, pki, userName="operator", password=str(secret))
    assert (await _read_label(secure, from_file))[0] == "hello"
    monkeypatch.setenv("OPCUA_PASSWORD", "s3cret")
    from_env = _config(secure, pki, userName="operator", passwordEnv="OPCUA_PASSWORD")
    assert (await _read_label(secure, from_env))[0] == "hello"
    monkeypatch.setenv("OPCUA_PASSWORD", "wrong")
    with pytest.raises(DeviceConnectError, match=r"BadUserAccessDenied|BadIdentityToken"):
        await _read_label(secure, from_env)


async def test_certificate_user_identity(secure: DeviceServer, pki: Pki) -> None:
    config = _config(secure, pki, userIdentity="certificate")
    assert (await _read_label(secure, config))[0] == "hello"
