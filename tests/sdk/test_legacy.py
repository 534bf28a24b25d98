"""v1alpha2 -> v1beta1 conversion of legacy DeviceModel and Device documents (contract §1.7)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mapper_sdk.errors import ConfigError
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.models.legacy import (
    DATA_ANNOTATION,
    DEFAULTS_ANNOTATION,
    device_from_v1alpha2,
    legacy_default_values,
    model_from_v1alpha2,
)

KUBEEDGE = Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "kubeedge"
SAMPLES = KUBEEDGE / "samples" / "v1alpha2"


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((SAMPLES / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _v1beta1_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((KUBEEDGE / "crds" / f"devices_v1beta1_{kind.lower()}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _problem_paths(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [p.path for p in exc.value.problems]


@pytest.fixture
def modbus_model() -> dict[str, Any]:
    return model_from_v1alpha2(_load("modbus-model.yaml"))


@pytest.fixture
def opcua_model() -> dict[str, Any]:
    return model_from_v1alpha2(_load("opcua-model.yaml"))


def _device(**spec: Any) -> dict[str, Any]:
    """A minimal v1alpha2 Device; ``spec`` keys replace the defaults."""
    base: dict[str, Any] = {
        "deviceModelRef": {"name": "m"},
        "protocol": {"modbus": {"slaveID": 2}},
        "propertyVisitors": [{"propertyName": "p", "modbus": {"register": "HoldingRegister"}}],
    }
    base.update(spec)
    return {
        "apiVersion": "devices.kubeedge.io/v1alpha2",
        "kind": "Device",
        "metadata": {"name": "d"},
        "spec": base,
    }


# --- the upstream samples ---------------------------------------------------------------------


def test_modbus_model_types_bounds_and_defaults(modbus_model: dict[str, Any]) -> None:
    assert modbus_model["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert modbus_model["spec"] == {
        "properties": [
            {
                "name": "temperature",
                "description": "temperature in degree celsius",
                "type": "INT",
                "accessMode": "ReadWrite",
                "maximum": "100",
                "unit": "degree celsius",
            },
            {
                "name": "temperature-enable",
                "description": "enable data collection of temperature sensor",
                "type": "INT",
                "accessMode": "ReadWrite",
            },
        ]
    }
    assert json.loads(modbus_model["metadata"]["annotations"][DEFAULTS_ANNOTATION]) == {
        "temperature-enable": "1"
    }
    model = DeviceModel.model_validate(modbus_model)
    assert model.spec.protocol == ""  # no protocol on a v1alpha2 model: binding reads "any"


def test_opcua_model_keeps_no_default_of_a_read_only_property(
    opcua_model: dict[str, Any],
) -> None:
    types = {p["name"]: (p["type"], p["accessMode"]) for p in opcua_model["spec"]["properties"]}
    assert types == {"temperature": ("INT", "ReadOnly"), "switcher": ("BOOLEAN", "ReadWrite")}
    assert legacy_default_values(opcua_model) == {}  # temperature's default 1 is ReadOnly
    assert "annotations" not in opcua_model["metadata"]
    DeviceModel.model_validate(opcua_model)


def test_modbus_tcp_device(modbus_model: dict[str, Any]) -> None:
    out = device_from_v1alpha2(_load("modbustcp-instance.yaml"), modbus_model)
    spec = out["spec"]
    assert out["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert out["metadata"]["labels"]["manufacturer"] == "TexasInstruments"
    assert spec["deviceModelRef"] == {"name": "modbus-sample-model"}
    assert spec["nodeName"] == "test"
    assert spec["protocol"] == {
        "protocolName": "modbus",
        "configData": {"slaveID": 1, "communicateMode": "TCP", "ip": "192.168.33.1", "port": "502"},
    }
    temperature, enable = spec["properties"]
    assert temperature == {
        "name": "temperature",
        "visitors": {
            "protocolName": "modbus",
            "configData": {
                "register": "CoilRegister",
                "offset": 0,
                "limit": 1,
                "scale": 1,
                "isSwap": True,
                "isRegisterSwap": True,
            },
        },
        "collectCycle": 5000,
        "reportToCloud": True,
    }
    assert enable["visitors"]["configData"]["offset"] == 3
    assert "collectCycle" not in enable
    # The twin's desired "0" wins over the model's defaultValue 1.
    assert enable["desired"] == {
        "value": "0",
        "metadata": {"timestamp": "1550049403598", "type": "integer"},
    }
    assert out["status"]["twins"] == [
        {
            "propertyName": "temperature-enable",
            "reported": {
                "value": "0",
                "metadata": {"timestamp": "1550049403598", "type": "integer"},
            },
        }
    ]
    device = Device.model_validate(out)
    assert device.id == "default/modbustcp-device"
    assert device.spec.properties[0].collect_cycle == 5000


def test_opcua_device(opcua_model: dict[str, Any]) -> None:
    out = device_from_v1alpha2(_load("opcua-instance.yaml"), opcua_model)
    spec = out["spec"]
    assert spec["nodeName"] == "test"
    assert spec["protocol"] == {
        "protocolName": "opcua",
        "configData": {
            "url": "opc.tcp://192.168.56.103:4840",
            "userName": "testuser",
            "password": "/ca/pass",
            "certificate": "/ca/clientcert.pem",
            "privateKey": "/ca/clientkey.pem",
            "securityMode": "Sign",
            "securityPolicy": "Basic256Sha256",
            "remoteCertificate": "/ca/servercert.pem",
        },
    }
    by_name = {p["name"]: p for p in spec["properties"]}
    assert list(by_name) == ["temperature", "switcher"]
    assert by_name["temperature"]["visitors"] == {
        "protocolName": "opcua",
        "configData": {"nodeID": "ns=2;i=2"},
    }
    assert by_name["switcher"]["visitors"]["configData"] == {"nodeID": "ns=2;i=3"}
    assert by_name["switcher"]["desired"]["value"] == "false"
    assert "desired" not in by_name["temperature"]  # ReadOnly: its defaultValue is not used
    assert all(p["reportToCloud"] is True for p in spec["properties"])
    reported = {t["propertyName"]: t["reported"]["value"] for t in out["status"]["twins"]}
    assert reported == {"switcher": "false", "temperature": "0"}
    Device.model_validate(out)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.yaml")))
def test_every_sample_converts_to_a_valid_v1beta1_object(name: str) -> None:
    doc = _load(name)
    original = copy.deepcopy(doc)
    if doc["kind"] == "DeviceModel":
        out = model_from_v1alpha2(doc)
        DeviceModel.model_validate(out)
    else:
        out = device_from_v1alpha2(doc)
        Device.model_validate(out)
    assert doc == original  # the input is not modified
    validator = jsonschema.Draft7Validator(_v1beta1_schema(doc["kind"]))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(out)]
    assert errors == []


# --- conversion rules beyond the samples ------------------------------------------------------


def test_model_default_is_the_initial_desired_value_of_a_writable_property() -> None:
    model = {
        "apiVersion": "devices.kubeedge.io/v1alpha2",
        "kind": "DeviceModel",
        "metadata": {"name": "m"},
        "spec": {
            "properties": [
                {"name": "p", "type": {"double": {"accessMode": "ReadWrite", "defaultValue": 2.5}}},
                {"name": "q", "type": {"boolean": {"defaultValue": True}}},
                {"name": "r", "type": {"int": {"accessMode": "ReadOnly", "defaultValue": 3}}},
            ]
        },
    }
    doc = _device(
        propertyVisitors=[
            {"propertyName": "p", "modbus": {"register": "HoldingRegister"}},
            {"propertyName": "r", "modbus": {"register": "InputRegister"}},
        ]
    )
    assert legacy_default_values(model) == {"p": "2.5", "q": "true"}
    for given in (model, model_from_v1alpha2(model)):  # the v1alpha2 model or its conversion
        props = device_from_v1alpha2(doc, given)["spec"]["properties"]
        # q has no visitor in this device, so it is not added; r is ReadOnly.
        assert [(p["name"], p.get("desired")) for p in props] == [
            ("p", {"value": "2.5"}),
            ("r", None),
        ]


def test_serial_modbus_becomes_rtu() -> None:
    com = {"serialPort": "/dev/ttyS0", "baudRate": 9600, "dataBits": 8, "parity": "even"}
    doc = _device(protocol={"modbus": {"slaveID": 3}, "common": {"com": {**com, "stopBits": 1}}})
    assert device_from_v1alpha2(doc)["spec"]["protocol"]["configData"] == {
        "slaveID": 3,
        "communicateMode": "RTU",
        "serialName": "/dev/ttyS0",
        "baudRate": 9600,
        "dataBits": 8,
        "parity": "even",
        "stopBits": 1,
    }


def test_common_scalars_and_customized_values_are_merged_flat() -> None:
    common = {
        "tcp": {"ip": "10.0.0.1", "port": 1502},
        "collectType": "async",
        "reconnRetryTimes": 3,
        "customizedValues": {"serialType": "RS485"},
    }
    doc = _device(protocol={"modbus": {"slaveID": 1}, "common": common})
    config = device_from_v1alpha2(doc)["spec"]["protocol"]["configData"]
    assert config == {
        "slaveID": 1,
        "communicateMode": "TCP",
        "ip": "10.0.0.1",
        "port": "1502",
        "collectType": "async",
        "reconnRetryTimes": 3,
        "serialType": "RS485",
    }


def test_customized_protocol_and_visitor_customized_values() -> None:
    doc = _device(
        protocol={"customizedProtocol": {"protocolName": "virtual", "configData": {"seed": 4}}},
        propertyVisitors=[
            {
                "propertyName": "p",
                "reportCycle": 2000,
                "customizedProtocol": {"protocolName": "virtual", "configData": {"kind": "sine"}},
                "customizedValues": {"period_ms": 500},
            }
        ],
    )
    spec = device_from_v1alpha2(doc)["spec"]
    assert spec["protocol"] == {"protocolName": "virtual", "configData": {"seed": 4}}
    assert spec["properties"][0]["visitors"] == {
        "protocolName": "virtual",
        "configData": {"kind": "sine", "period_ms": 500},
    }
    assert spec["properties"][0]["reportCycle"] == 2000


def test_bluetooth_visitor_keeps_data_write_and_converter_nested() -> None:
    converter = {
        "startIndex": 1,
        "endIndex": 0,
        "orderOfOperations": [{"operationType": "Multiply", "operationValue": 0.5}],
    }
    visitor = {
        "characteristicUUID": "f000aa0104514000b000000000000000",
        "dataWrite": {"ON": "AQ==", "OFF": "AA=="},
        "dataConverter": converter,
    }
    doc = _device(
        protocol={"bluetooth": {"macAddress": "A0:E6:F8:C3:26:8D"}},
        propertyVisitors=[{"propertyName": "p", "bluetooth": visitor}],
    )
    out = device_from_v1alpha2(doc)
    assert out["spec"]["protocol"]["configData"] == {"macAddress": "A0:E6:F8:C3:26:8D"}
    assert out["spec"]["properties"][0]["visitors"] == {
        "protocolName": "bluetooth",
        "configData": visitor,
    }
    Device.model_validate(out)


def test_twin_without_visitor_adds_a_property_and_node_selector_absent() -> None:
    doc = _device()
    doc["status"] = {"twins": [{"propertyName": "extra", "desired": {"value": 7}}]}
    out = device_from_v1alpha2(doc)
    assert out["spec"]["properties"][1] == {
        "name": "extra",
        "reportToCloud": True,
        "desired": {"value": "7"},
    }
    assert "nodeName" not in out["spec"]
    assert "status" not in out  # no reported values


def test_data_section_is_kept_in_an_annotation() -> None:
    data = {"dataProperties": [{"propertyName": "p"}], "dataTopic": "$ke/events/device/+/data"}
    doc = _device(data=data)
    doc["metadata"]["annotations"] = {"owner": "ops"}
    annotations = device_from_v1alpha2(doc)["metadata"]["annotations"]
    assert annotations["owner"] == "ops"
    assert json.loads(annotations[DATA_ANNOTATION]) == data
    assert doc["metadata"]["annotations"] == {"owner": "ops"}  # the input is not modified


def test_driver_level_values_pass_through_unchecked() -> None:
    doc = _device(propertyVisitors=[{"propertyName": "p", "modbus": {"register": "Bogus"}}])
    visitors = device_from_v1alpha2(doc)["spec"]["properties"][0]["visitors"]
    assert visitors["configData"] == {"register": "Bogus"}


# --- errors, located in the original document -------------------------------------------------


def test_two_protocol_members_is_an_error_naming_the_path() -> None:
    doc = _device(protocol={"modbus": {"slaveID": 1}, "opcua": {"url": "opc.tcp://h:4840"}})
    with pytest.raises(ConfigError) as exc:
        device_from_v1alpha2(doc)
    assert _problem_paths(exc) == ["spec.protocol.opcua"]
    assert "modbus" in str(exc.value)


def test_visitor_without_property_name_is_an_error_with_path() -> None:
    doc = _device(
        propertyVisitors=[
            {"propertyName": "p", "modbus": {"register": "CoilRegister"}},
            {"modbus": {"register": "CoilRegister", "offset": 1}},
        ]
    )
    with pytest.raises(ConfigError) as exc:
        device_from_v1alpha2(doc)
    assert _problem_paths(exc) == ["spec.propertyVisitors[1].propertyName"]


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (
            {
                "propertyVisitors": [
                    {"propertyName": "p", "modbus": {}, "opcua": {"nodeID": "ns=1;i=1"}}
                ]
            },
            "spec.propertyVisitors[0].opcua",
        ),
        (
            {"propertyVisitors": [{"propertyName": "p", "opcua": {"nodeID": "ns=1;i=1"}}]},
            "spec.propertyVisitors[0].opcua",
        ),
        (
            {
                "propertyVisitors": [
                    {"propertyName": "p", "modbus": {"offset": 1}},
                    {"propertyName": "p", "modbus": {"offset": 2}},
                ]
            },
            "spec.propertyVisitors[1].propertyName",
        ),
        (
            {
                "propertyVisitors": [
                    {
                        "propertyName": "p",
                        "modbus": {"offset": 1},
                        "customizedValues": {"offset": 2},
                    }
                ]
            },
            "spec.propertyVisitors[0].customizedValues.offset",
        ),
        (
            {
                "protocol": {
                    "modbus": {"slaveID": 1},
                    "common": {"tcp": {"ip": "h"}, "com": {"serialPort": "/dev/ttyS0"}},
                }
            },
            "spec.protocol.common.com",
        ),
        (
            {
                "protocol": {
                    "modbus": {"slaveID": 1},
                    "common": {"customizedValues": {"slaveID": 2}},
                }
            },
            "spec.protocol.common.customizedValues.slaveID",
        ),
        ({"protocol": {"common": {"tcp": {"ip": "h"}}}}, "spec.protocol"),
        ({"protocol": {"modbus": {}, "http": {}}}, "spec.protocol.http"),
        ({"propertyVisitors": {"propertyName": "p"}}, "spec.propertyVisitors"),
        ({"nodeName": "n"}, "spec.nodeName"),
    ],
)
def test_device_errors_are_located(spec: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as exc:
        device_from_v1alpha2(_device(**spec))
    assert _problem_paths(exc) == [path]


def test_all_problems_of_a_document_are_reported_together() -> None:
    doc = _device(propertyVisitors=[{"modbus": {}}, {"propertyName": "q", "opcua": {}}])
    doc["apiVersion"] = "devices.kubeedge.io/v1beta1"
    doc["status"] = {"twins": [{"propertyName": "q", "desired": {"metadata": {}}}]}
    with pytest.raises(ConfigError) as exc:
        device_from_v1alpha2(doc)
    assert sorted(_problem_paths(exc)) == [
        "apiVersion",
        "spec.propertyVisitors[0].propertyName",
        "spec.propertyVisitors[1].opcua",
        "status.twins[0].desired",
    ]


@pytest.mark.parametrize(
    ("prop", "path"),
    [
        ({"name": "p", "type": {"int": {}, "float": {}}}, "spec.properties[0].type.float"),
        ({"name": "p", "type": {"decimal": {}}}, "spec.properties[0].type.decimal"),
        ({"type": {"int": {}}}, "spec.properties[0].name"),
        ({"name": "p", "type": {"int": {"maximum": [1]}}}, "spec.properties[0].type.int.maximum"),
        ({"name": "p", "visitors": {}}, "spec.properties[0].visitors"),
    ],
)
def test_model_errors_are_located(prop: dict[str, Any], path: str) -> None:
    doc = {
        "apiVersion": "devices.kubeedge.io/v1alpha2",
        "kind": "DeviceModel",
        "metadata": {"name": "m"},
        "spec": {"properties": [prop]},
    }
    with pytest.raises(ConfigError) as exc:
        model_from_v1alpha2(doc)
    assert path in _problem_paths(exc)


def test_wrong_kind_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        model_from_v1alpha2(_device())
    assert _problem_paths(exc)[0] == "kind"
