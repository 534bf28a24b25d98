"""What keeps 10,000 devices small: identical property blocks and visitor configs are shared
between devices, and the file text is dropped once a file is bound."""

from __future__ import annotations

from pathlib import Path

from mapper_gateway.files import DeviceFiles
from mapper_sdk import Registry
from mapper_sdk.virtual import VirtualDriver

from .kit import MODEL_YAML, device_yaml


def test_a_fleet_from_one_template_shares_its_property_objects(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(MODEL_YAML)
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(device_yaml(name))
    (tmp_path / "c.yaml").write_text(device_yaml("c", desired="30"))
    registry = Registry()
    registry.add(VirtualDriver)
    files = DeviceFiles(tmp_path, registry)
    files.load_all()
    a, b, c = sorted(files.devices, key=lambda d: d.ref.name)
    for index in range(3):
        assert a.device.spec.properties[index] is b.device.spec.properties[index]
        assert a.properties[index].visitor is b.properties[index].visitor
    # Different input stays its own object: c's setpoint has another desired value.
    assert c.device.spec.properties[1] is not a.device.spec.properties[1]
    assert c.device.spec.properties[1].desired is not None
    assert c.device.spec.properties[1].desired.value == "30"
    assert c.device.spec.properties[0] is a.device.spec.properties[0]
    for state in files.files.values():
        assert state.good is not None
        assert all(loaded.source._locator is None for loaded in state.good.devices)
