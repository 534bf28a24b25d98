"""Binding: the model-to-instance merge (contract §1.6), cross-object checks, cycle units."""

from typing import Any

import pytest
from pydantic import Field

from mapper_sdk.binding import BindProblem, bind, cycle_ms, merge_config
from mapper_sdk.driver import DriverConfig
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.virtual import VirtualDriver


class StrictVisitor(DriverConfig):
    # "register" would shadow ABCMeta.register on a pydantic model, hence the alias.
    table: str = Field(alias="register")
    offset: int
    scale: float = 1.0


class StrictProtocol(DriverConfig):
    ip: str
    port: int
    slave_id: int = 1


class StrictDriver(VirtualDriver):
    protocol = "strict"
    protocol_config_model = StrictProtocol
    visitor_config_model = StrictVisitor


def model(**spec: Any) -> DeviceModel:
    base: dict[str, Any] = {
        "protocol": "strict",
        "properties": [
            {"name": "temp", "type": "FLOAT", "accessMode": "ReadOnly"},
            {
                "name": "sp",
                "type": "INT",
                "accessMode": "ReadWrite",
                "minimum": "0",
                "maximum": "10",
            },
        ],
    }
    base.update(spec)
    return DeviceModel.model_validate({"metadata": {"name": "m"}, "spec": base})


def device(properties: list[dict[str, Any]] | None = None, **spec: Any) -> Device:
    base: dict[str, Any] = {
        "deviceModelRef": {"name": "m"},
        "protocol": {"protocolName": "strict", "configData": {"ip": "127.0.0.1", "port": "502"}},
        "properties": properties
        if properties is not None
        else [
            {
                "name": "temp",
                "visitors": {
                    "protocolName": "strict",
                    "configData": {"register": "HR", "offset": 1},
                },
            }
        ],
    }
    base.update(spec)
    return Device.model_validate({"metadata": {"name": "d"}, "spec": base})


def errors(problems: list[BindProblem]) -> list[tuple[str, str]]:
    return [(".".join(map(str, p.path)), p.message) for p in problems if p.severity == "error"]


def test_merge_is_shallow_and_instance_wins() -> None:
    assert merge_config({"a": 1, "b": {"x": 1}}, {"b": {"y": 2}, "c": 3}) == {
        "a": 1,
        "b": {"y": 2},
        "c": 3,
    }
    assert merge_config(None, None) == {}


def test_model_defaults_are_merged_into_the_instance() -> None:
    m = model(
        protocolConfigData={"ip": "10.0.0.1", "port": 502, "slaveId": 7},
        properties=[
            {
                "name": "temp",
                "type": "FLOAT",
                "visitors": {
                    "protocolName": "strict",
                    "configData": {"register": "IR", "offset": 3, "scale": 0.1},
                },
            }
        ],
    )
    d = device(
        properties=[{"name": "temp", "visitors": {"configData": {"offset": 4}}}],
        protocol={"protocolName": "strict", "configData": {"ip": "127.0.0.1"}},
    )
    bound, problems = bind(d, m, StrictDriver)
    assert errors(problems) == []
    assert bound is not None
    assert bound.protocol_config == StrictProtocol(ip="127.0.0.1", port=502, slave_id=7)
    assert bound.properties[0].visitor == StrictVisitor(register="IR", offset=4, scale=0.1)


def test_edgecore_style_numbers_validate() -> None:
    """Contract §1.5: over DMI every number arrives as a float, and ports are often strings."""
    d = device(
        properties=[
            {"name": "temp", "visitors": {"configData": {"register": "HR", "offset": 3.0}}}
        ],
        protocol={"protocolName": "strict", "configData": {"ip": "h", "port": 502.0}},
    )
    bound, problems = bind(d, model(), StrictDriver)
    assert errors(problems) == []
    assert bound is not None
    assert bound.properties[0].visitor == StrictVisitor(register="HR", offset=3)


def test_config_data_is_validated_by_the_driver_models() -> None:
    d = device(
        properties=[{"name": "temp", "visitors": {"configData": {"register": "HR", "ofset": 1}}}],
        protocol={"protocolName": "strict", "configData": {"ip": "h", "port": "http"}},
    )
    bound, problems = bind(d, model(), StrictDriver)
    assert bound is None
    paths = [path for path, _ in errors(problems)]
    assert "spec.properties.0.visitors.configData.offset" in paths
    assert "spec.properties.0.visitors.configData.ofset" in paths
    assert "spec.protocol.configData.port" in paths


def test_unknown_property_duplicate_and_protocol_mismatch() -> None:
    d = device(
        properties=[
            {"name": "temp", "visitors": {"configData": {"register": "HR", "offset": 1}}},
            {"name": "temp", "visitors": {"configData": {"register": "HR", "offset": 2}}},
            {"name": "humidity", "visitors": {"protocolName": "modbus", "configData": {}}},
        ],
        protocol={"protocolName": "other", "configData": {"ip": "h", "port": 1}},
    )
    bound, problems = bind(d, model(), StrictDriver)
    assert bound is None
    found = dict(errors(problems))
    assert "does not match the model's protocol 'strict'" in found["spec.protocol.protocolName"]
    assert "duplicate property 'temp'" in found["spec.properties.1.name"]
    assert "not in DeviceModel m" in found["spec.properties.2.name"]


def test_desired_value_in_the_spec_is_checked_at_load() -> None:
    d = device(
        properties=[
            {
                "name": "sp",
                "desired": {"value": "11"},
                "visitors": {"configData": {"register": "HR", "offset": 1}},
            }
        ]
    )
    bound, problems = bind(d, model(), StrictDriver)
    assert bound is None
    ((path, message),) = errors(problems)
    assert path == "spec.properties.0.desired.value"
    assert "maximum" in message


def test_method_naming_a_missing_property_is_an_error() -> None:
    d = device(methods=[{"name": "Set", "propertyNames": ["temp", "nope"]}])
    _, problems = bind(d, model(), StrictDriver)
    assert errors(problems) == [
        (
            "spec.methods.0.propertyNames.1",
            "method 'Set' names property 'nope', which this device does not have",
        )
    ]


@pytest.mark.parametrize(
    ("raw", "expected_ms", "warns"),
    [(0, 1000, False), (250, 250, False), (10_000, 10_000, False), (10_000_000_000, 10_000, True)],
)
def test_cycles_are_milliseconds_and_nanoseconds_are_converted(
    raw: int, expected_ms: int, warns: bool
) -> None:
    ms, warning = cycle_ms(raw)
    assert ms == expected_ms
    assert (warning is not None) == warns


def test_nanosecond_cycles_warn_with_their_path() -> None:
    d = device(
        properties=[
            {
                "name": "temp",
                "collectCycle": 5_000_000_000,
                "visitors": {"configData": {"register": "HR", "offset": 1}},
            }
        ]
    )
    bound, problems = bind(d, model(), StrictDriver)
    assert bound is not None
    assert bound.properties[0].collect_cycle_ms == 5000
    assert bound.properties[0].report_cycle_ms == 5000  # unset reportCycle follows collectCycle
    (warning,) = [p for p in problems if p.severity == "warning"]
    assert warning.path == ("spec", "properties", 0, "collectCycle")
    assert "nanoseconds" in warning.message


def test_state_report_prefers_spec_then_legacy_status() -> None:
    bound, _ = bind(
        device(stateReport={"reportToCloud": True, "reportCycle": 2000}), model(), StrictDriver
    )
    assert bound is not None
    assert (bound.state_report_to_cloud, bound.state_report_cycle_ms) == (True, 2000)
    legacy = Device.model_validate(
        {
            **device().model_dump(by_alias=True),
            "status": {"reportToCloud": True, "reportCycle": 3000},
        }
    )
    bound, _ = bind(legacy, model(), StrictDriver)
    assert bound is not None
    assert (bound.state_report_to_cloud, bound.state_report_cycle_ms) == (True, 3000)


def test_fingerprint_ignores_desired_values_only() -> None:
    props = [{"name": "sp", "visitors": {"configData": {"register": "HR", "offset": 1}}}]
    a, _ = bind(device(properties=props), model(), StrictDriver)
    b, _ = bind(device(properties=[{**props[0], "desired": {"value": "5"}}]), model(), StrictDriver)
    c, _ = bind(device(properties=[{**props[0], "collectCycle": 5}]), model(), StrictDriver)
    assert a is not None
    assert b is not None
    assert c is not None
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()


def test_property_names_must_be_valid_twin_keys() -> None:
    m = model(properties=[{"name": "room temp", "type": "FLOAT"}])
    d = device(
        properties=[
            {"name": "room temp", "visitors": {"configData": {"register": "HR", "offset": 1}}}
        ]
    )
    bound, problems = bind(d, m, StrictDriver)
    assert bound is None
    ((path, message),) = errors(problems)
    assert path == "spec.properties.0.name"
    assert "cannot be a twin name" in message
