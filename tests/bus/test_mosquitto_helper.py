"""The real-broker test infrastructure: the ``mosquitto`` fixture and ``helpers.mosquitto``."""

from __future__ import annotations

import shutil
import ssl

import pytest
from helpers.mosquitto import (
    Mosquitto,
    ensure_available,
    make_tls_files,
    port_accepts,
)
from helpers.mqtt import AsyncMqttClient

pytestmark = pytest.mark.integration


def test_fixture_config_and_port(mosquitto):
    config = mosquitto.config_text().splitlines()
    assert f"listener {mosquitto.port} 127.0.0.1" in config
    assert "allow_anonymous true" in config
    assert "persistence false" in config
    assert "max_queued_messages 0" in config
    assert mosquitto.config_path.read_text() == mosquitto.config_text()
    assert mosquitto.running
    assert port_accepts(mosquitto.port)


def test_kill_stop_and_restart_on_the_same_port(mosquitto):
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running
    assert not port_accepts(port)
    mosquitto.start()
    assert mosquitto.port == port
    assert port_accepts(port)
    mosquitto.restart()
    assert (mosquitto.port, mosquitto.running) == (port, True)
    mosquitto.restart(hard=True)
    assert (mosquitto.port, mosquitto.running) == (port, True)
    mosquitto.stop()
    assert not port_accepts(port)


async def test_clients_work_across_a_restart(mosquitto):
    async with AsyncMqttClient(mosquitto.host, mosquitto.port, auto_reconnect=True) as client:
        await client.subscribe("t/#")
        mosquitto.restart()
        await client.wait_until(
            lambda: client.connect_count >= 2 and client.session_ready.is_set(), timeout=15
        )
        await client.publish("t/x", b"after")
        msg = await client.wait_for("t/#")
        assert msg.payload == b"after"


async def test_persistence_keeps_retained_messages_across_a_graceful_restart(tmp_path):
    with Mosquitto(tmp_path / "persist", persistence=True) as broker:
        async with AsyncMqttClient(broker.host, broker.port) as client:
            await client.publish("keep/me", b"1", retain=True)
        broker.restart()  # SIGTERM saves the database
        async with AsyncMqttClient(broker.host, broker.port) as client:
            await client.subscribe("keep/#")
            assert (await client.wait_for("keep/#")).payload == b"1"
        assert (tmp_path / "persist" / "mosquitto.db").is_file()


async def test_without_persistence_retained_messages_die_with_the_broker(mosquitto):
    async with AsyncMqttClient(mosquitto.host, mosquitto.port) as client:
        await client.publish("keep/me", b"1", retain=True)
    mosquitto.restart()
    async with AsyncMqttClient(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("keep/#", "barrier")
        await client.publish("barrier", b"b")
        await client.wait_for("barrier")
        assert client.drain("keep/#") == []


async def test_password_file_refuses_anonymous_and_wrong_passwords(tmp_path):
    with Mosquitto(tmp_path / "auth", users={"mapper": "s3cret"}) as broker:
        assert "allow_anonymous false" in broker.config_text()
        async with AsyncMqttClient(
            broker.host, broker.port, username="mapper", password="s3cret"
        ) as ok:
            await ok.publish("a", b"1")
        for username, password in ((None, None), ("mapper", "wrong")):
            client = AsyncMqttClient(broker.host, broker.port, username=username, password=password)
            with pytest.raises(ConnectionError, match="refused"):
                await client.connect()
            await client.disconnect()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_listener_with_generated_certificates(tmp_path):
    files = make_tls_files(tmp_path / "certs")
    with Mosquitto(tmp_path / "tls", tls=files) as broker:
        assert broker.tls_port is not None
        assert f"listener {broker.tls_port} 127.0.0.1" in broker.config_text()
        context = ssl.create_default_context(cafile=str(files.cafile))
        import socket

        with (
            socket.create_connection((broker.host, broker.tls_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        # Hostname verification is on: a name not in the certificate is refused.
        with (
            socket.create_connection((broker.host, broker.tls_port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            context.wrap_socket(raw, server_hostname="not-the-broker")


def test_bad_config_fails_with_the_log(tmp_path):
    broker = Mosquitto(tmp_path / "bad", extra_config="no_such_option 1")
    with pytest.raises(RuntimeError, match="exited") as info:
        broker.start()
    assert "no_such_option" in str(info.value)
    assert not broker.running


def test_missing_binary_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    missing = str(tmp_path / "no-mosquitto")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package 'mosquitto'"):
        ensure_available(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Debian package 'mosquitto'"):
        ensure_available(missing)
    ensure_available()  # the real one is installed here
