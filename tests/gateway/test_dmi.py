"""The gateway with EdgeCore over DMI (the emulator in tests/helpers, contract §4) next to a
YAML directory: each source runs its own devices, reports go back only for EdgeCore's."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("grpc")

from helpers.dmi_emulator import DmiEmulator

from mapper_gateway.gateway import Gateway
from mapper_sdk import DeviceRef, Registry
from mapper_sdk.testing import make_device, make_model, model_property
from mapper_sdk.virtual import VirtualDriver

from .kit import asgi_client, make_settings, wait_until

MODEL = make_model("edge-model", model_property("temp", "FLOAT", "ReadOnly"))
EDGE = make_device("edge-1", MODEL, {"seed": 1}, {"temp": {"kind": "counter"}})
# The same name as the YAML device: the local file keeps it.
CLASH = make_device("thermo-1", MODEL, {"seed": 2}, {"temp": {"kind": "counter"}})


async def test_yaml_and_dmi_devices_run_side_by_side(tmp_path: Path, devices_dir: Path) -> None:
    registry = Registry()
    registry.add(VirtualDriver)
    socket = tmp_path / "edgecore" / "dmi.sock"
    settings = make_settings(
        tmp_path, devices_dir, dmi=str(socket), dmi_socket_dir=tmp_path / "mappers"
    )
    emulator = DmiEmulator(socket, [(EDGE, MODEL), (CLASH, MODEL)])
    async with emulator, Gateway(settings, registry=registry) as gateway:
        await gateway.wait_loaded(10)
        runtime = gateway.require_runtime()
        edge, local = DeviceRef("default", "edge-1"), DeviceRef("default", "thermo-1")
        await wait_until(lambda: edge in runtime.devices)
        assert gateway.sources is not None
        assert gateway.sources.owner[edge] == "dmi:virtual"
        assert gateway.sources.owner[local] == "files"
        assert gateway.sources.conflicts[local] == ("files", "dmi:virtual")
        await emulator.wait_for(lambda: bool(emulator.reports_of(edge.id)))
        assert emulator.reports_of(local.id) == []  # EdgeCore only hears of its own devices
        async with asgi_client(gateway) as http:
            ready = (await http.get("/readyz")).json()
            assert ready["ready"], ready
            listed = (await http.get("/api/v1/devices")).json()
            assert {d["id"]: d["source"] for d in listed["items"]} == {
                edge.id: "dmi:virtual",
                local.id: "files",
            }
        await emulator.remove_device(EDGE)
        await wait_until(lambda: edge not in runtime.devices)
        assert local in runtime.devices  # the YAML device is untouched
