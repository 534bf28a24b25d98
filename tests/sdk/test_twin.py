"""Twin engine rules, table-driven and without I/O."""

import pytest

from mapper_sdk._twin import TwinEngine
from mapper_sdk.binding import BoundDevice
from mapper_sdk.errors import DesiredValueError, DeviceTimeoutError
from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property
from mapper_sdk.virtual import VirtualDriver


def _device(report_cycle_ms: int = 0, report_to_cloud: bool = True) -> BoundDevice:
    model = make_model(
        "thermo",
        model_property("temp", "FLOAT", "ReadOnly"),
        model_property("setpoint", "FLOAT", "ReadWrite", minimum="5", maximum="35"),
        model_property("on", "BOOLEAN", "ReadWrite"),
        model_property("label", "STRING", "ReadOnly"),
    )
    device = make_device(
        "t1",
        model,
        collect_cycle_ms=1000,
        report_cycle_ms=report_cycle_ms,
        report_to_cloud=report_to_cloud,
        desired={"setpoint": "21.5"},
    )
    return bind_or_raise(device, model, VirtualDriver)


def test_first_reading_reports_every_property_in_one_report() -> None:
    device = _device()
    engine = TwinEngine(device)
    report = engine.on_readings(device.properties, [20.25, 21.5, True, "abc"], 0.0, 1000)
    assert report is not None
    assert report.timestamp_ms == 1000
    assert [(t.name, t.value, t.type) for t in report.twins] == [
        ("temp", "20.25", "float"),
        ("setpoint", "21.5", "float"),
        ("on", "true", "boolean"),
        ("label", "abc", "string"),
    ]
    assert report.twins[1].desired == "21.5"


def test_unchanged_values_wait_for_the_report_cycle() -> None:
    device = _device(report_cycle_ms=10_000)
    engine = TwinEngine(device)
    engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 0.0, 0)
    report = engine.on_readings(device.properties, [20.0, 22.0, True, "a"], 1.0, 1000)
    assert report is not None
    assert [t.name for t in report.twins] == ["setpoint"]  # only the change
    assert engine.on_readings(device.properties, [20.0, 22.0, True, "a"], 2.0, 2000) is None
    heartbeat = engine.on_readings(device.properties, [20.0, 22.0, True, "a"], 10.0, 10_000)
    assert heartbeat is not None
    assert [t.name for t in heartbeat.twins] == ["temp", "on", "label"]


def test_default_report_cycle_reports_every_read() -> None:
    device = _device()
    engine = TwinEngine(device)
    engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 0.0, 0)
    report = engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 1.0, 1000)
    assert report is not None
    assert len(report.twins) == 4


def test_an_unchanged_value_reported_again_carries_the_current_desired_value() -> None:
    device = _device()
    engine = TwinEngine(device)
    engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 0.0, 0)
    again = engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 1.0, 1000)
    assert again is not None
    assert again.twins[1].desired == "21.5"
    engine.check_desired("setpoint", "25")
    report = engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 2.0, 2000)
    assert report is not None
    assert [(t.name, t.value, t.desired) for t in report.twins[:2]] == [
        ("temp", "20.0", None),
        ("setpoint", "21.5", "25"),
    ]


def test_the_heartbeat_comes_half_a_collect_cycle_early_at_most() -> None:
    device = _device(report_cycle_ms=10_000)  # collect cycle 1 s: 0.5 s of slack
    engine = TwinEngine(device)
    engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 0.0, 0)
    assert engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 9.49, 9490) is None
    heartbeat = engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 9.5, 9500)
    assert heartbeat is not None
    assert len(heartbeat.twins) == 4


def test_report_to_cloud_false_keeps_values_but_reports_nothing() -> None:
    device = _device(report_to_cloud=False)
    engine = TwinEngine(device)
    assert engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 0.0, 0) is None
    assert engine.states[0].text == "20.0"


def test_errors_and_unrepresentable_values_are_recorded_not_reported() -> None:
    device = _device()
    engine = TwinEngine(device)
    results = [DeviceTimeoutError("no answer"), 21.5, True, "has space"]
    report = engine.on_readings(device.properties, results, 0.0, 0)
    assert report is not None
    assert [t.name for t in report.twins] == ["setpoint", "on"]
    assert engine.states[0].error == "no answer"
    assert engine.states[3].error is not None
    assert "space" in engine.states[3].error.lower() or "refuse" in engine.states[3].error.lower()


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("temp", "20", "read_only"),
        ("setpoint", "36", "out_of_range"),
        ("setpoint", "4.9", "out_of_range"),
        ("setpoint", "warm", "bad_type"),
        ("nope", "1", "unknown_property"),
    ],
)
def test_desired_values_are_refused_with_a_reason(name: str, text: str, reason: str) -> None:
    engine = TwinEngine(_device())
    with pytest.raises(DesiredValueError) as info:
        engine.check_desired(name, text)
    assert info.value.reason == reason
    assert str(info.value)


def test_desired_versions_apply_at_most_once_newest_wins() -> None:
    engine = TwinEngine(_device())
    first = engine.check_desired("setpoint", "22", version=5)
    assert (first.value, first.version) == (22.0, 5)
    with pytest.raises(DesiredValueError) as info:
        engine.check_desired("setpoint", "23", version=5)
    assert info.value.reason == "stale"
    assert engine.check_desired("setpoint", "24", version=6).value == 24.0
    assert engine.states[1].desired == "24"


def test_pending_desired_lists_values_the_device_does_not_have() -> None:
    device = _device()
    engine = TwinEngine(device)
    assert [d.point.name for d in engine.pending_desired()] == ["setpoint"]  # from the spec
    engine.on_readings(device.properties, [20.0, 21.5, True, "a"], 0.0, 0)
    assert engine.pending_desired() == []  # the device already holds 21.5
    engine.check_desired("on", "false")
    assert [(d.point.name, d.value) for d in engine.pending_desired()] == [("on", False)]


def test_force_report_resends_known_values() -> None:
    device = _device()
    engine = TwinEngine(device)
    assert engine.force_report(0) is None
    engine.on_readings(device.properties[:1], [19.5], 0.0, 0)
    report = engine.force_report(5)
    assert report is not None
    assert [(t.name, t.value) for t in report.twins] == [("temp", "19.5")]


def test_twin_values_built_by_the_engine_equal_the_dataclass() -> None:
    from mapper_sdk._twin import _twin_value
    from mapper_sdk.bus import TwinValue

    built = _twin_value("temp", "20.5", "float", "21")
    assert built == TwinValue("temp", "20.5", "float", "21")
    assert hash(built) == hash(TwinValue("temp", "20.5", "float", "21"))
    assert _twin_value("temp", "20.5", "float", None).desired is None
    with pytest.raises(AttributeError):
        built.value = "1"  # type: ignore[misc]  # still frozen
