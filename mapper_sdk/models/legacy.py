"""Read v1alpha2 ``DeviceModel`` and ``Device`` documents as legacy input (contract §1.7).

KubeEdge has no conversion webhook between v1alpha2 and v1beta1, so the cluster never translates
v1alpha2 objects. mapper-sdk reads them read-only: each function here takes one document (a plain
dict, as parsed from YAML) and returns a v1beta1 dict that ``DeviceModel`` / ``Device`` validate.
The input is never modified. Every problem found is raised at once in a ``ConfigError`` whose
``Problem.path`` is the dotted path in the *original* document (``spec.propertyVisitors[1].opcua``)
so the loader can point at the line.

DeviceModel
    ``properties[].type.<int|string|double|float|boolean|bytes>: {accessMode, minimum, maximum,
    unit}`` becomes ``type: INT|STRING|...`` with ``accessMode``, ``unit`` and string
    ``minimum``/``maximum`` beside it. v1beta1 has no ``defaultValue``; the defaults of writable
    properties (an unset ``accessMode`` counts as ReadWrite, as in binding) are kept, as JSON
    ``{property: text}``, in the annotation ``DEFAULTS_ANNOTATION``, and ``device_from_v1alpha2``
    uses them as the initial desired value of a device property whose twin has none.
    ``spec.protocol`` is copied when set and otherwise left empty, which binding reads as "any
    protocol".

Device
    - ``spec.protocol``, a typed union, becomes ``{protocolName, configData}`` with a flat
      configData (EdgeCore only carries flat scalars, contract §1.5): the union member's keys keep
      their names (``slaveID``; ``url``, ``securityPolicy``, ``certificate``...; ``macAddress``; a
      ``customizedProtocol``'s own ``configData``); ``common.tcp`` adds ``communicateMode: TCP``,
      ``ip`` and ``port`` (as a string, like the v1beta1 Modbus example); ``common.com`` adds
      ``communicateMode: RTU``, ``serialName`` (from ``serialPort``), ``baudRate``, ``dataBits``,
      ``parity`` (``none|even|odd`` as written) and ``stopBits``; the other ``common`` scalars
      (``commType``, ``reconnTimeout``, ``collectType``...) keep their names, and the keys of
      ``common.customizedValues`` (OPC-UA's ``remoteCertificate``) are merged in. A key set twice
      is an error, as are two union members, or both ``tcp`` and ``com``.
    - ``spec.propertyVisitors[]`` become ``spec.properties[]`` in the same order: the union member
      (``modbus``, ``opcua``, ``bluetooth``, ``customizedProtocol``) plus ``customizedValues`` is
      flattened into ``visitors.configData``; ``reportCycle``/``collectCycle`` are copied as written
      (binding warns about nanosecond-era values); ``reportToCloud`` is ``true`` because v1alpha2
      always synced twins. Bluetooth's ``dataWrite`` and ``dataConverter`` stay nested: EdgeCore
      would refuse them, but legacy devices are only read by our own runtime, which accepts them.
    - ``status.twins[].desired`` becomes ``spec.properties[].desired`` (value and metadata; a twin
      without a visitor adds a property with no visitors); ``reported`` stays in
      ``status.twins[].reported``.
    - The first value of the first ``nodeSelector`` match expression becomes ``nodeName``.
    - ``spec.data`` (``dataProperties``/``dataTopic``) has no v1beta1 equivalent and our runtime
      does not publish it; it is kept verbatim, as JSON, in the annotation ``DATA_ANNOTATION``.
    - Metadata (labels, annotations, namespace) is copied; ``apiVersion`` becomes v1beta1.

Unknown keys where v1alpha2 has a fixed set (the document, ``spec``, ``spec.protocol``, a
property visitor, a model property) are errors: the CRD's structural schema prunes them in a
cluster, so in a file they are typos. Keys inside a union member are copied through unchecked;
whether ``register: Foo`` makes sense is for the driver's config model to say.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from mapper_sdk.errors import ConfigError, Problem
from mapper_sdk.models._base import _scalar_to_str
from mapper_sdk.models.device_model import API_VERSION, GROUP

V1ALPHA2 = f"{GROUP}/v1alpha2"
DEFAULTS_ANNOTATION = "mapper-sdk/v1alpha2-default-values"
"""Annotation of a converted DeviceModel: JSON ``{property: default}`` of writable properties."""
DATA_ANNOTATION = "mapper-sdk/v1alpha2-data"
"""Annotation of a converted Device: the v1alpha2 ``spec.data`` section as JSON."""

_MODEL_TYPES = {
    "int": "INT",
    "string": "STRING",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "bytes": "BYTES",
}
_PROTOCOLS = ("modbus", "opcua", "bluetooth", "customizedProtocol")
_SERIAL_KEYS = {"serialPort": "serialName"}  # renamed; baudRate, parity... keep their names
_BOUNDS = ("minimum", "maximum", "unit")  # strings in v1beta1

_TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
_MODEL_SPEC_KEYS = ("protocol", "properties")
_MODEL_PROPERTY_KEYS = ("name", "description", "type")
_DEVICE_SPEC_KEYS = ("deviceModelRef", "protocol", "nodeSelector", "propertyVisitors", "data")
_PROTOCOL_KEYS = (*_PROTOCOLS, "common")
_VISITOR_KEYS = ("propertyName", "reportCycle", "collectCycle", "customizedValues", *_PROTOCOLS)


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


class _Problems:
    """Collects every problem of one document, then raises them together."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(Problem(message, path=path))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)

    def mapping(self, parent: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        """``parent[key]`` as a dict; ``{}`` when it is absent, null or not a mapping."""
        value = parent.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(_at(path, key), f"must be a mapping, not {type(value).__name__}")
            return {}
        return value

    def sequence(self, parent: Mapping[str, Any], key: str, path: str) -> list[Any]:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(_at(path, key), f"must be a list, not {type(value).__name__}")
            return []
        return value

    def known(self, mapping: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
        allowed = tuple(allowed)
        for key in mapping:
            if key not in allowed:
                self.add(
                    _at(path, str(key)),
                    f"unknown v1alpha2 field {key!r} (expected one of: {', '.join(allowed)})",
                )

    def name(self, parent: Mapping[str, Any], key: str, path: str) -> str:
        value = parent.get(key)
        if not isinstance(value, str) or not value:
            self.add(_at(path, key), "is required (a non-empty string)")
            return ""
        return value

    def text(self, value: object, path: str) -> str:
        if not _is_scalar(value):
            self.add(path, f"must be a scalar, not {type(value).__name__}")
            return ""
        return str(_scalar_to_str(value))  # the same text the models give a YAML number

    def one_of(
        self, parent: Mapping[str, Any], members: Iterable[str], path: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The one union member set in ``parent`` (name and fields), or ``None``."""
        members = tuple(members)
        found = [m for m in members if m in parent]
        for extra in found[1:]:
            self.add(
                _at(path, extra),
                f"only one of {', '.join(members)} may be set; found {found[0]!r} and {extra!r}",
            )
        if not found:
            return None
        return found[0], self.mapping(parent, found[0], path)

    def merge(self, target: dict[str, Any], extra: Mapping[str, Any], path: str) -> None:
        """Add ``extra``'s keys to the flat ``target``; a key already there is an error."""
        for key, value in extra.items():
            if key in target:
                self.add(_at(path, key), f"{key!r} is already set by another field")
            else:
                target[key] = value


def _check_header(doc: Mapping[str, Any], kind: str, problems: _Problems) -> None:
    if doc.get("apiVersion") != V1ALPHA2:
        problems.add("apiVersion", f"must be {V1ALPHA2}, not {doc.get('apiVersion')!r}")
    if doc.get("kind") != kind:
        problems.add("kind", f"must be {kind}, not {doc.get('kind')!r}")
    problems.known(doc, _TOP_KEYS, "")


def _metadata(
    doc: Mapping[str, Any], annotations: Mapping[str, str], problems: _Problems
) -> dict[str, Any]:
    metadata = copy.deepcopy(problems.mapping(doc, "metadata", ""))
    if annotations:
        metadata["annotations"] = {**problems.mapping(metadata, "annotations", "metadata")}
        metadata["annotations"].update(annotations)
    return metadata


# --- DeviceModel -----------------------------------------------------------------------------


def _model_property(prop: Any, path: str, problems: _Problems) -> tuple[dict[str, Any], str | None]:
    """One v1beta1 model property and its v1alpha2 default (``None`` unless writable)."""
    if not isinstance(prop, dict):
        problems.add(path, "must be a mapping")
        return {}, None
    problems.known(prop, _MODEL_PROPERTY_KEYS, path)
    out: dict[str, Any] = {"name": problems.name(prop, "name", path)}
    if "description" in prop:
        out["description"] = prop["description"]
    type_path = _at(path, "type")
    types = problems.mapping(prop, "type", path)
    problems.known(types, _MODEL_TYPES, type_path)
    member = problems.one_of(types, _MODEL_TYPES, type_path)
    if member is None:
        return out, None
    kind, fields = member
    out["type"] = _MODEL_TYPES[kind]
    for key, value in fields.items():
        if key in _BOUNDS:
            out[key] = problems.text(value, _at(_at(type_path, kind), key))
        elif key != "defaultValue":
            out[key] = copy.deepcopy(value)
    default = fields.get("defaultValue")
    if default is None or fields.get("accessMode") == "ReadOnly":
        return out, None
    return out, problems.text(default, _at(_at(type_path, kind), "defaultValue"))


def model_from_v1alpha2(doc: dict[str, Any]) -> dict[str, Any]:
    """Convert a v1alpha2 ``DeviceModel`` document to a v1beta1 one (see the module docstring).

    Raises ``ConfigError`` listing every problem, each located in ``doc``.
    """
    problems = _Problems()
    _check_header(doc, "DeviceModel", problems)
    spec = problems.mapping(doc, "spec", "")
    problems.known(spec, _MODEL_SPEC_KEYS, "spec")
    properties: list[dict[str, Any]] = []
    defaults: dict[str, str] = {}
    for i, prop in enumerate(problems.sequence(spec, "properties", "spec")):
        converted, default = _model_property(prop, f"spec.properties[{i}]", problems)
        properties.append(converted)
        if default is not None:
            defaults[converted["name"]] = default
    new_spec: dict[str, Any] = {"properties": properties}
    if spec.get("protocol"):
        new_spec["protocol"] = spec["protocol"]
    annotations = {DEFAULTS_ANNOTATION: json.dumps(defaults, sort_keys=True)} if defaults else {}
    metadata = _metadata(doc, annotations, problems)
    problems.raise_if_any()
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceModel",
        "metadata": metadata,
        "spec": new_spec,
    }


def legacy_default_values(model: Mapping[str, Any] | None) -> dict[str, str]:
    """The v1alpha2 ``defaultValue`` of each writable property of ``model``, as text.

    ``model`` is a v1alpha2 DeviceModel document or its conversion; ``None`` gives ``{}``.
    """
    if model is None:
        return {}
    if model.get("apiVersion") == V1ALPHA2:
        model = model_from_v1alpha2(dict(model))
    annotations = (model.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(DEFAULTS_ANNOTATION)
    if raw is None:
        return {}
    try:
        defaults = json.loads(raw)
    except (TypeError, ValueError):
        defaults = None
    if not isinstance(defaults, dict) or not all(isinstance(v, str) for v in defaults.values()):
        path = f"metadata.annotations.{DEFAULTS_ANNOTATION}"
        raise ConfigError([Problem("must be a JSON object of strings", path=path)])
    return defaults


# --- Device: protocol ------------------------------------------------------------------------


def _member_config(
    kind: str, fields: Mapping[str, Any], path: str, problems: _Problems
) -> tuple[str, dict[str, Any]]:
    """``(protocolName, flat config)`` of one protocol or visitor union member."""
    if kind != "customizedProtocol":
        return kind, copy.deepcopy(dict(fields))
    member_path = _at(path, kind)
    name = problems.name(fields, "protocolName", member_path)
    return name, copy.deepcopy(problems.mapping(fields, "configData", member_path))


def _transport(common: Mapping[str, Any], path: str, problems: _Problems) -> dict[str, Any]:
    """``common.tcp`` or ``common.com`` as the flat keys of the v1beta1 Modbus example."""
    tcp = problems.mapping(common, "tcp", path)
    com = problems.mapping(common, "com", path)
    if tcp and com:
        problems.add(_at(path, "com"), "set either common.tcp or common.com, not both")
    if com:
        return {"communicateMode": "RTU", **{_SERIAL_KEYS.get(k, k): v for k, v in com.items()}}
    if not tcp:
        return {}
    out = {"communicateMode": "TCP", **tcp}
    if "port" in out:
        out["port"] = problems.text(out["port"], _at(_at(path, "tcp"), "port"))
    return out


def _protocol(spec: Mapping[str, Any], problems: _Problems) -> dict[str, Any]:
    path = "spec.protocol"
    protocol = problems.mapping(spec, "protocol", "spec")
    problems.known(protocol, _PROTOCOL_KEYS, path)
    member = problems.one_of(protocol, _PROTOCOLS, path)
    if member is None:
        problems.add(path, f"names no protocol: set one of {', '.join(_PROTOCOLS)}")
        return {"protocolName": "", "configData": {}}
    name, config = _member_config(*member, path, problems)
    common_path = _at(path, "common")
    common = problems.mapping(protocol, "common", path)
    problems.merge(config, _transport(common, common_path, problems), common_path)
    scalars = {k: v for k, v in common.items() if k not in ("tcp", "com", "customizedValues")}
    problems.merge(config, copy.deepcopy(scalars), common_path)
    values = problems.mapping(common, "customizedValues", common_path)
    problems.merge(config, copy.deepcopy(values), _at(common_path, "customizedValues"))
    return {"protocolName": name, "configData": config}


# --- Device: properties ----------------------------------------------------------------------


def _visitor(
    item: Mapping[str, Any], path: str, device_protocol: str, problems: _Problems
) -> dict[str, Any]:
    member = problems.one_of(item, _PROTOCOLS, path)
    name, config = device_protocol, dict[str, Any]()
    if member is not None:
        name, config = _member_config(*member, path, problems)
        if name and device_protocol and name != device_protocol:
            problems.add(
                _at(path, member[0]),
                f"a {name!r} visitor on a device whose protocol is {device_protocol!r}",
            )
    values = problems.mapping(item, "customizedValues", path)
    problems.merge(config, copy.deepcopy(values), _at(path, "customizedValues"))
    return {"protocolName": name, "configData": config}


def _visitor_properties(
    spec: Mapping[str, Any], device_protocol: str, problems: _Problems
) -> dict[str, dict[str, Any]]:
    """``spec.propertyVisitors`` as v1beta1 properties, by name, in document order."""
    properties: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(problems.sequence(spec, "propertyVisitors", "spec")):
        path = f"spec.propertyVisitors[{i}]"
        if not isinstance(item, dict):
            problems.add(path, "must be a mapping")
            continue
        problems.known(item, _VISITOR_KEYS, path)
        name = problems.name(item, "propertyName", path)
        if name in properties:
            problems.add(_at(path, "propertyName"), f"duplicate property {name!r}")
        prop: dict[str, Any] = {"name": name}
        prop["visitors"] = _visitor(item, path, device_protocol, problems)
        for key in ("reportCycle", "collectCycle"):
            if key in item:
                prop[key] = item[key]
        prop["reportToCloud"] = True
        properties[name or path] = prop
    return properties


def _twin_value(value: Any, path: str, problems: _Problems) -> dict[str, Any]:
    if not isinstance(value, dict) or "value" not in value:
        problems.add(path, "must be a mapping with a 'value'")
        return {"value": ""}
    out: dict[str, Any] = {"value": problems.text(value["value"], _at(path, "value"))}
    metadata = problems.mapping(value, "metadata", path)
    if metadata:
        meta_path = _at(path, "metadata")
        out["metadata"] = {k: problems.text(v, _at(meta_path, k)) for k, v in metadata.items()}
    return out


def _apply_twins(
    doc: Mapping[str, Any], properties: dict[str, dict[str, Any]], problems: _Problems
) -> list[dict[str, Any]]:
    """Move twin ``desired`` values into ``properties``; return the ``reported`` status twins."""
    status = problems.mapping(doc, "status", "")
    reported: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, twin in enumerate(problems.sequence(status, "twins", "status")):
        path = f"status.twins[{i}]"
        if not isinstance(twin, dict):
            problems.add(path, "must be a mapping")
            continue
        name = problems.name(twin, "propertyName", path)
        if not name:
            continue
        if name in seen:
            problems.add(_at(path, "propertyName"), f"duplicate twin {name!r}")
        seen.add(name)
        prop = properties.setdefault(name, {"name": name, "reportToCloud": True})
        if twin.get("desired") is not None:
            prop["desired"] = _twin_value(twin["desired"], _at(path, "desired"), problems)
        if twin.get("reported") is not None:
            value = _twin_value(twin["reported"], _at(path, "reported"), problems)
            reported.append({"propertyName": name, "reported": value})
    return reported


def _node_name(spec: Mapping[str, Any], problems: _Problems) -> str | None:
    path = "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values[0]"
    try:
        value = spec["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(value, str):
        problems.add(path, "must be a string (the node name)")
        return None
    return value


def device_from_v1alpha2(
    doc: dict[str, Any], model: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Convert a v1alpha2 ``Device`` document to a v1beta1 one (see the module docstring).

    ``model`` (the v1alpha2 DeviceModel or its conversion) supplies the ``defaultValue`` of
    writable properties, used as ``desired`` where no twin has a desired value. Raises
    ``ConfigError`` listing every problem, each located in ``doc``.
    """
    problems = _Problems()
    _check_header(doc, "Device", problems)
    spec = problems.mapping(doc, "spec", "")
    problems.known(spec, _DEVICE_SPEC_KEYS, "spec")
    protocol = _protocol(spec, problems)
    properties = _visitor_properties(spec, protocol["protocolName"], problems)
    reported = _apply_twins(doc, properties, problems)
    for name, default in legacy_default_values(model).items():
        if name in properties and "desired" not in properties[name]:
            properties[name]["desired"] = {"value": default}
    new_spec: dict[str, Any] = {
        "deviceModelRef": copy.deepcopy(problems.mapping(spec, "deviceModelRef", "spec")),
        "protocol": protocol,
        "properties": list(properties.values()),
    }
    node_name = _node_name(spec, problems)
    if node_name is not None:
        new_spec["nodeName"] = node_name
    data = problems.mapping(spec, "data", "spec")
    annotations = {DATA_ANNOTATION: json.dumps(data, sort_keys=True, default=str)} if data else {}
    metadata = _metadata(doc, annotations, problems)
    problems.raise_if_any()
    out = {"apiVersion": API_VERSION, "kind": "Device", "metadata": metadata, "spec": new_spec}
    if reported:
        out["status"] = {"twins": reported}
    return out
