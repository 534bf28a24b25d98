"""``mapper-sdk run`` killed with SIGKILL and restarted: nothing accepted is lost.

A real mosquitto and the EdgeCore emulator (tests/helpers/edgecore_emulator.py, emulating
EdgeCore's devicetwin per contract §3.4/§3.5a) in the test process; the mapper in a
subprocess with its outbox and desired-value store in a state directory.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
from helpers.edgecore_emulator import EdgeCoreEmulator
from helpers.mosquitto import Mosquitto

MODEL = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: crash-model}
spec:
  protocol: virtual
  properties:
    - {name: count, type: INT, accessMode: ReadOnly}
    - {name: setpoint, type: FLOAT, accessMode: ReadWrite, minimum: "5", maximum: "35"}
"""
DEVICE = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: crash-1}
spec:
  deviceModelRef: {name: crash-model}
  nodeName: edge-1
  protocol: {protocolName: virtual, configData: {seed: 1}}
  properties:
    - name: count
      collectCycle: 20
      reportToCloud: true
      visitors: {protocolName: virtual, configData: {kind: counter, value: 0, max: 1000000000}}
    - name: setpoint
      collectCycle: 200
      reportToCloud: true
      visitors: {protocolName: virtual, configData: {kind: writable, value: 20}}
"""


def start_mapper(devices: Path, state: Path, port: int) -> subprocess.Popen[bytes]:
    log = (state.parent / "mapper.log").open("ab")  # the child keeps its own descriptor
    with log:
        return subprocess.Popen(
        [
            sys.executable, "-m", "mapper_sdk", "run", "--devices", str(devices),
            "--mqtt-url", f"tcp://127.0.0.1:{port}", "--node", "edge-1",
            "--state-dir", str(state), "--confirm", "result", "--log-level", "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip


def unconfirmed_event_ids(state: Path) -> set[str]:
    db = sqlite3.connect(state / "outbox.sqlite3")
    try:
        return {row[0] for row in db.execute("SELECT event_id FROM outbox WHERE kind = 'twin'")}
    finally:
        db.close()


def received_event_ids(edgecore: EdgeCoreEmulator) -> set[str]:
    ids = set()
    for message in edgecore.received:
        if message.topic.endswith("/twin/update"):
            ids.add(orjson.loads(message.payload)["event_id"])
    return ids


async def test_sigkill_loses_no_accepted_report_and_restores_desired(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    devices, state = tmp_path / "devices", tmp_path / "state"
    devices.mkdir()
    (devices / "model.yaml").write_text(MODEL)
    (devices / "device.yaml").write_text(DEVICE)
    async with EdgeCoreEmulator(
        "127.0.0.1", mosquitto.port, node="edge-1", devices=["default/crash-1"]
    ) as edgecore:
        mapper = start_mapper(devices, state, mosquitto.port)
        try:
            await edgecore.wait_for_reports(20, timeout=15)
            edgecore.set_expected("default", "crash-1", "setpoint", "12", type="float")
            await edgecore.wait_until(
                lambda: ("setpoint", "12.0") in edgecore.reported("default/crash-1"), timeout=10
            )
            # Hold EdgeCore's answers back for a moment so reports pile up unconfirmed.
            mosquitto.pause()
            os.kill(mapper.pid, signal.SIGKILL)
            mapper.wait(10)
            mosquitto.resume()
            pending = unconfirmed_event_ids(state)
            assert pending, "the kill should leave unconfirmed reports in the outbox"
            mapper = start_mapper(devices, state, mosquitto.port)
            # Every report accepted into the outbox before the kill reaches EdgeCore.
            await edgecore.wait_until(lambda: pending <= received_event_ids(edgecore), timeout=20)
            # The restarted device forgot its setpoint; the persisted desired value is applied.
            before = len(edgecore.reports)
            await edgecore.wait_until(
                lambda: (
                    ("setpoint", "12.0")
                    in [(r.property, r.value) for r in edgecore.reports[before:]]
                ),
                timeout=15,
            )
            assert edgecore.errors == []
        finally:
            mapper.send_signal(signal.SIGINT)
            try:
                mapper.wait(10)
            except subprocess.TimeoutExpired:
                mapper.kill()
