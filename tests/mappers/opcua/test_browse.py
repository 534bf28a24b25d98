"""The browse tool against the test server: YAML that the CRD schemas and the loader accept."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from mapper_opcua.browse import main

from mapper_sdk import cli, loader
from mapper_sdk._registry import Registry

from .device import VARIABLES, DeviceServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

SCHEMA_TESTS = Path(__file__).resolve().parents[2] / "sdk" / "test_crd_schemas.py"


def _schema_helper() -> ModuleType:
    """tests/sdk/test_crd_schemas.py, whose ``_errors`` checks a document against the CRDs."""
    spec = importlib.util.spec_from_file_location("crd_schemas", SCHEMA_TESTS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _browse(argv: list[str]) -> int:
    # The command runs its own event loop; keep ours (and the server in it) running meanwhile.
    return await asyncio.to_thread(cli.main, ["opcua", "browse", *argv])


async def test_browse_writes_a_model_and_device_that_validate(
    device: DeviceServer, tmp_path: Path
) -> None:
    code = await _browse([device.url, "--out", str(tmp_path), "--name", "plant-1"])
    assert code == 0
    model_file, device_file = tmp_path / "plant-1-model.yaml", tmp_path / "plant-1-instance.yaml"
    model: dict[str, Any] = yaml.safe_load(model_file.read_text())
    instance: dict[str, Any] = yaml.safe_load(device_file.read_text())
    schemas = _schema_helper()
    assert schemas._errors(model, "DeviceModel") == []
    assert schemas._errors(instance, "Device") == []
    assert loader.validate_paths([tmp_path], Registry.from_entry_points()) == []
    types = {p["name"]: (p["type"], p["accessMode"]) for p in model["spec"]["properties"]}
    for var in VARIABLES:
        assert types[f"device-{var.name}"] == (var.model_type, "ReadWrite")
    visitors = {p["name"]: p["visitors"]["configData"] for p in instance["spec"]["properties"]}
    assert visitors["device-small"] == {
        "nodeID": device.node_id("small"),
        "browseName": f"{device.ns}:Device/{device.ns}:small",
    }
    assert "device-add" not in types  # methods are not variables


async def test_browse_filter_depth_and_namespace(device: DeviceServer, tmp_path: Path) -> None:
    argv = [device.url, "--out", str(tmp_path), "--filter", "count", "--namespace", str(device.ns)]
    assert await _browse(argv) == 0
    model = yaml.safe_load((tmp_path / "opcua-device-model.yaml").read_text())
    assert [p["name"] for p in model["spec"]["properties"]] == ["device-count32", "device-counter"]
    assert await _browse([device.url, "--out", str(tmp_path / "shallow"), "--depth", "1"]) == 0
    shallow = yaml.safe_load((tmp_path / "shallow" / "opcua-device-model.yaml").read_text())
    assert shallow["spec"]["properties"] == []  # the variables are two levels down


async def test_browse_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["opc.tcp://127.0.0.1:1", "--timeout", "1"]) == 1
    assert "mapper-sdk opcua browse:" in capsys.readouterr().err
