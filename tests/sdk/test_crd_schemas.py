"""Our YAML samples and our models against the upstream CRD schemas (openAPIV3Schema, v1beta1).

Kubernetes prunes fields a structural schema does not declare, so a misspelt key in a sample would
be dropped silently by a cluster. ``_strict`` makes that an error here: every object schema with
``properties`` and without ``x-kubernetes-preserve-unknown-fields`` gets
``additionalProperties: false``. Other ``x-kubernetes-*`` keywords and OpenAPI formats
(``int64``, ``byte``) are ignored by jsonschema, as they should be.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from mapper_sdk.models import Device, DeviceModel, DeviceStatus

ROOT = Path(__file__).resolve().parents[2]
KUBEEDGE = ROOT / ".." / "shared" / "conformance" / "kubeedge"
SAMPLES_DIR = ROOT / "device_models"
API_VERSION = "devices.kubeedge.io/v1beta1"
MODELS: dict[str, type[BaseModel]] = {
    "Device": Device,
    "DeviceModel": DeviceModel,
    "DeviceStatus": DeviceStatus,
}


def _schemas() -> dict[str, dict[str, Any]]:
    """The v1beta1 ``openAPIV3Schema`` of each upstream CRD, by kind."""
    schemas = {}
    for path in sorted((KUBEEDGE / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
        schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


SCHEMAS = _schemas()


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with undeclared fields refused where Kubernetes would prune them."""
    schema = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        props = node.get("properties")
        if props and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for child in (props or {}).values():
            walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(schema)
    return schema


def _errors(doc: Any, kind: str, *, strict: bool = True) -> list[str]:
    schema = _strict(SCHEMAS[kind]) if strict else SCHEMAS[kind]
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def _documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _extras(model: BaseModel, path: str = "") -> Iterator[str]:
    """Fields our models kept as unknown (``extra="allow"``): names we do not model."""
    for key in model.model_extra or {}:
        yield f"{path}{key}"
    for name, value in model:
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                suffix = f"[{i}]" if isinstance(value, list) else ""
                yield from _extras(item, f"{path}{name}{suffix}.")


def _assert_contains(big: Any, small: Any, path: str = "") -> None:
    """Every key and value of ``small`` is in ``big`` (defaults may add keys to ``big``)."""
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for key, value in small.items():
            assert key in big, f"{path}{key} was dropped"
            _assert_contains(big[key], value, f"{path}{key}.")
    elif isinstance(small, list):
        assert isinstance(big, list), path
        assert len(big) == len(small), path
        for i, (b, s) in enumerate(zip(big, small, strict=True)):
            _assert_contains(b, s, f"{path}[{i}].")
    else:
        assert big == small, f"{path}: {big!r} != {small!r}"


# --- our samples in device_models/ ------------------------------------------------------------

SAMPLE_FILES = sorted(
    p for p in SAMPLES_DIR.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
)


def test_samples_exist() -> None:
    kinds = [d["kind"] for p in SAMPLE_FILES for d in _documents(p)]
    assert kinds.count("Device") >= 2
    assert kinds.count("DeviceModel") >= 2


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: str(p.relative_to(SAMPLES_DIR)))
def test_sample_is_valid_against_the_upstream_schema(path: Path) -> None:
    problems = []
    for n, doc in enumerate(_documents(path)):
        where = f"{path.relative_to(ROOT)} (document {n + 1})"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind not in SCHEMAS or doc.get("apiVersion") != API_VERSION:
            problems.append(f"{where}: not a {API_VERSION} {'/'.join(SCHEMAS)}")
            continue
        problems += [f"{where}: {error}" for error in _errors(doc, kind)]
        obj = MODELS[kind].model_validate(doc)
        problems += [f"{where}: {name}: unknown to our models" for name in _extras(obj)]
    assert problems == []


def test_strict_schema_catches_a_misspelt_field() -> None:
    doc = {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": {"name": "d"},
        "spec": {"properties": [{"name": "p", "collectcycle": 1000}]},
    }
    assert _errors(doc, "Device", strict=False) == []
    assert _errors(doc, "Device") == [
        "spec.properties.0: Additional properties are not allowed ('collectcycle' was unexpected)"
    ]


def test_samples_bind_with_their_protocols_driver() -> None:
    """Every sample device binds cleanly with the installed driver of its protocol."""
    from mapper_sdk._registry import Registry
    from mapper_sdk.binding import bind

    registry = Registry.from_entry_points()
    docs = [d for p in SAMPLE_FILES for d in _documents(p)]
    models = {
        (m.metadata.namespace, m.metadata.name): m
        for m in (DeviceModel.model_validate(d) for d in docs if d["kind"] == "DeviceModel")
    }
    devices = [Device.model_validate(d) for d in docs if d["kind"] == "Device"]
    assert devices
    for device in devices:
        assert device.spec.node_name == "edge-node"
        driver = registry.get(device.spec.protocol.protocol_name)
        assert driver is not None, registry.why_unavailable(device.spec.protocol.protocol_name)
        bound, problems = bind(device, models[device.model_key], driver)
        assert problems == [], f"{device.id}: {problems}"
        assert bound is not None


# --- upstream v1beta1 samples round-trip through our models -----------------------------------

UPSTREAM = sorted((KUBEEDGE / "samples" / "v1beta1").glob("*.yaml"))


@pytest.mark.parametrize("path", UPSTREAM, ids=lambda p: p.name)
def test_upstream_sample_round_trips_schema_valid(path: Path) -> None:
    (doc,) = _documents(path)
    assert _errors(doc, doc["kind"]) == []  # the input is valid, so a failure below is ours
    obj = MODELS[doc["kind"]].model_validate(doc)
    assert list(_extras(obj)) == []
    dumped = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert _errors(dumped, doc["kind"]) == []
    _assert_contains(dumped, doc)


# --- a generated object with every field of the schema ----------------------------------------


def _fill(schema: dict[str, Any], name: str) -> Any:
    """A value for ``schema`` with every declared field set; values derived from ``name``."""
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            return {k: _fill(v, k) for k, v in schema["properties"].items()}
        if isinstance(schema.get("additionalProperties"), dict):
            return {f"{name}-key": _fill(schema["additionalProperties"], name)}
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return {"text": f"{name}-text", "number": 2.5, "flag": True}
        return {}
    if kind == "array":
        return [_fill(schema["items"], name)]
    return {"string": f"{name}-value", "integer": 2, "number": 1.5, "boolean": True}[str(kind)]


def _full(kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = _fill(SCHEMAS[kind], kind)
    doc["apiVersion"] = API_VERSION
    doc["kind"] = kind
    doc["metadata"] = {
        "name": "full",
        "namespace": "ns",
        "labels": {"app": "x"},
        "annotations": {"note": "y"},
        "uid": "0b1c",
        "resourceVersion": "42",
        "generation": 3,
        "ownerReferences": [{"kind": "Device", "name": "full", "controller": True}],
    }
    if kind == "Device":
        twin = {"value": "1", "metadata": {"timestamp": "1700000000000", "type": "int"}}
        doc["status"].update(
            twins=[{"propertyName": "name-value", "reported": twin, "observedDesired": twin}],
            state="online",
            lastOnlineTime="2026-11-25T10:00:00Z",
        )
    return doc


def test_generated_device_fills_every_field_we_care_about() -> None:
    spec = _full("Device")["spec"]
    push = spec["properties"][0]["pushMethod"]
    assert set(push) == {"http", "mqtt", "otel", "dbMethod", "anomalyDetection"}
    assert set(push["dbMethod"]) == {"influxdb2", "redis", "TDEngine", "mysql"}
    assert push["dbMethod"]["TDEngine"]["TDEngineClientConfig"]["dbName"] == "dbName-value"
    assert push["otel"] == {"endpointURL": "endpointURL-value"}
    assert set(spec) >= {"methods", "stateReport", "nodeName", "protocol", "deviceModelRef"}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_schema_field_round_trips_with_the_same_keys(kind: str) -> None:
    doc = _full(kind)
    assert _errors(doc, kind) == []
    obj = MODELS[kind].model_validate(doc)
    assert list(_extras(obj)) == []  # every schema field is a declared field of our models
    dumped = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert _errors(dumped, kind) == []
    assert dumped == doc
