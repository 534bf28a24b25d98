"""The ``mapper-gateway`` command: settings from flags, environment and file, ``--help``,
and the demo as a user runs it (a subprocess, stopped with SIGINT)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mapper_gateway.__main__ import _parser, load_settings, main
from mapper_gateway.settings import GatewaySettings

from .kit import free_port, stop_process


def test_help_lists_every_setting_with_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for name in GatewaySettings.model_fields:
        if name == "token":  # never a flag
            assert "--token " not in text
            continue
        assert "--" + name.replace("_", "-") in text
        assert "MAPPER_GATEWAY_" + name.upper() in text
    assert "MAPPER_GATEWAY_TOKEN" in text


def test_flags_beat_environment_beats_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('node = "from-file"\napi = "127.0.0.1:9000"\nmembership = true\n')
    monkeypatch.setenv("MAPPER_GATEWAY_NODE", "from-env")
    monkeypatch.setenv("MAPPER_GATEWAY_CONFIG", str(config))
    settings = load_settings(_parser().parse_args(["run", "--api", "127.0.0.1:9001"]))
    assert settings.node == "from-env"
    assert settings.api_port == 9001
    assert settings.membership is True
    yaml_config = tmp_path / "gateway.yaml"
    yaml_config.write_text("node: yaml-node\nmax_body_bytes: 1024\n")
    monkeypatch.delenv("MAPPER_GATEWAY_NODE")
    args = _parser().parse_args(["run", "--config", str(yaml_config)])
    assert load_settings(args).node == "yaml-node"


def test_unknown_keys_and_bad_values_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("nod: typo\n")
    assert main(["run", "--config", str(config)]) == 2
    assert main(["run", "--api", "no-port"]) == 2


def test_loopback_is_the_default_binding() -> None:
    settings = GatewaySettings.load({})
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 7777)
    assert settings.loopback_only
    assert not GatewaySettings.load({"api": "0.0.0.0:7777", "insecure_http": True}).loopback_only
    assert GatewaySettings.load({"api": "[::1]:7777"}).loopback_only


@pytest.mark.slow
def test_the_demo_prints_its_urls_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    pytest.importorskip("amqtt")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPPER_GATEWAY_")}
    command = [sys.executable, "-m", "mapper_gateway", "demo", "--api", f"127.0.0.1:{port}"]
    command += ["--state-dir", str(tmp_path / "state"), "--broker-port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True
    )
    try:
        lines = _read_until(process, "devices:", timeout=30)
        text = "\n".join(lines)
        url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/\?token=\S+)", text)
        assert url is not None, text
        assert re.search(r"mosquitto_sub -h 127\.0\.0\.1 -p \d+ -t '\$hw/events/device/#' -v", text)
        token = url.group(1).split("token=")[1]
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the demo never got ready"
            time.sleep(0.1)
        devices = httpx.get(f"{base}/api/v1/devices").json()
        assert devices["total"] >= 3
        write = httpx.put(
            f"{base}/api/v1/devices/default/thermostat-01/properties/mode",
            json={"value": "heat"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert write.status_code == 200, write.text
    finally:
        code, stderr = stop_process(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """stdout lines up to the one starting with ``marker`` (a thread reads; we wait on it)."""
    assert process.stdout is not None
    stream = process.stdout
    found: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            found.put(line.rstrip("\n"))
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(line.startswith(marker) for line in lines):
        line = found.get(timeout=max(0.01, deadline - time.monotonic()))
        assert line is not None, f"the demo ended before printing {marker!r}: {lines}"
        lines.append(line)
    return lines


def test_an_unusable_state_dir_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAPPER_GATEWAY_TOKEN", "a-token-for-this-test")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state = blocker / "state"
    assert main(["run", "--mqtt-url", "off", "--state-dir", str(state)]) == 2
    error = capsys.readouterr().err
    assert f"state_dir {state}: Not a directory; set --state-dir" in error
    assert "Traceback" not in error
