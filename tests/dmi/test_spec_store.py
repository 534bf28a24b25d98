"""``SpecStore``: the last known Devices and DeviceModels, saved atomically, loaded validated."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import orjson
import pytest

from mapper_sdk._spec_store import SpecStore
from mapper_sdk.models import Device
from mapper_sdk.testing import make_device, make_model, model_property

MODEL = make_model("thermo-model", model_property("setpoint", "INT", "ReadWrite"))


def device(name: str, setpoint: str = "20") -> Device:
    config = {"seed": 1, "ratio": 0.5}  # an int and a float must both come back as written
    return make_device(
        name, MODEL, config, {"setpoint": {"kind": "writable"}}, desired={"setpoint": setpoint}
    )


def test_a_saved_set_loads_back_equal(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "state" / "specs.json")
    devices = [device("one"), device("two", setpoint="42")]
    store.save(devices, [MODEL])
    loaded = store.load()
    assert loaded is not None
    assert loaded.devices == devices  # desired values included
    assert loaded.models == [MODEL]
    assert loaded.saved_at_ms > 0


def test_the_file_holds_each_object_as_its_crd_is_written(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "specs.json")
    store.save([device("one")], [MODEL])
    doc = orjson.loads(store.path.read_bytes())
    assert doc["format"] == 1
    assert doc["devices"][0] == device("one").model_dump(
        by_alias=True, exclude_none=True, mode="json"
    )
    assert doc["devices"][0]["spec"]["properties"][0]["desired"]["value"] == "20"
    assert doc["models"][0]["metadata"]["name"] == "thermo-model"


def test_saving_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "specs.json")
    store.save([device("one")], [MODEL])
    store.save([device("two")], [MODEL])
    loaded = store.load()
    assert loaded is not None
    assert [d.metadata.name for d in loaded.devices] == ["two"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs.json"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600  # configData may hold secrets


def test_no_file_is_no_set(tmp_path: Path) -> None:
    assert SpecStore(tmp_path / "missing" / "specs.json").load() is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x00\xffnot json", "json"),
        (b'{"format": 1, "savedAtMs": 1, "models": [], "devices": [{"kind": "Device"}]', "json"),
        (b'{"format": 1, "savedAtMs": 1, "models": [], "devices": [{"spec": {}}]}', "metadata"),
        (b'{"format": 2, "savedAtMs": 1, "models": [], "devices": []}', "format"),
        (b"[]", "input"),
    ],
)
def test_an_unusable_file_is_quarantined_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    store = SpecStore(tmp_path / "specs.json")
    store.path.write_bytes(content)
    caplog.set_level(logging.WARNING, logger="mapper_sdk.spec_store")
    assert store.load() is None
    assert not store.path.exists()
    (aside,) = tmp_path.glob("specs.json.corrupt-*")
    assert aside.read_bytes() == content
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert reason in record.getMessage().lower()
    assert str(aside) in record.getMessage()
    # The next save starts a fresh file beside the quarantined one.
    store.save([device("one")], [MODEL])
    assert store.load() is not None


def test_a_temp_file_left_by_a_killed_writer_is_removed(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "specs.json")
    store.save([device("one")], [MODEL])
    leftover = tmp_path / ".specs.json.abc123.tmp"
    leftover.write_bytes(b'{"format": 1, "sav')
    loaded = store.load()
    assert loaded is not None
    assert [d.metadata.name for d in loaded.devices] == ["one"]
    assert not leftover.exists()


def test_a_failed_save_raises_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SpecStore(tmp_path / "specs.json")
    store.save([device("one")], [MODEL])

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save([device("two")], [MODEL])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs.json"]  # temp file removed
    loaded = store.load()
    assert loaded is not None
    assert [d.metadata.name for d in loaded.devices] == ["one"]


def test_in_dir_names_the_file_after_the_link_safely(tmp_path: Path) -> None:
    assert SpecStore.in_dir(tmp_path, "dmi-modbus").path == tmp_path / "specs-dmi-modbus.json"
    assert SpecStore.in_dir(tmp_path, "dmi-a/../b").path == tmp_path / "specs-dmi-a_.._b.json"
