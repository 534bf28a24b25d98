"""The ``mapper-sdk`` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mapper_sdk"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_version_lists_the_installed_drivers() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.startswith("mapper-sdk ")
    assert "virtual" in result.stdout


def test_validate_accepts_the_samples() -> None:
    result = run("validate", "device_models/virtual")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout


def test_validate_reports_file_line_column_and_path(tmp_path: Path) -> None:
    bad = tmp_path / "thermo.yaml"
    bad.write_text(
        "apiVersion: devices.kubeedge.io/v1beta1\n"
        "kind: DeviceModel\n"
        "metadata:\n"
        "  name: thermo\n"
        "spec:\n"
        "  properties:\n"
        "    - name: temp\n"
        "      type: FLOATING\n"
    )
    result = run("validate", str(bad))
    assert result.returncode == 1
    assert f"{bad}:8:7: spec.properties[0].type: " in result.stderr
    assert "1 error(s)" in result.stdout


def test_run_needs_a_device_source() -> None:
    result = run("run")
    assert result.returncode == 2
    assert "--devices" in result.stderr


def test_run_prints_twin_reports_within_five_seconds_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "run", "--devices", "device_models/virtual", "--log-level", "WARNING"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = _read_until(proc, lambda line: "/twin/update " in line, timeout=5.0)
        topic, payload = lines[-1].split(" ", 1)
        assert topic.startswith("$hw/events/device/default/")
        body = json.loads(payload)
        assert set(body) == {"event_id", "timestamp", "twin"}
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    offline = [line for line in out.splitlines() if line.endswith('"state":"offline"}')]
    assert len(offline) == 2  # both sample devices closed and reported offline


def _read_until(proc: subprocess.Popen[str], done, timeout: float) -> list[str]:  # type: ignore[no-untyped-def]
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        if not selector.select(deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if done(lines[-1]):
            return lines
    raise AssertionError(f"no matching line within {timeout} s; got {lines[-5:]}")
