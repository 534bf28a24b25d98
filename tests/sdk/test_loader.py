"""loader: files to validated objects, every problem as ``file:line:column: path: message``.

Items of a ``kind: List`` are reported with paths from the document root
(``items[1].spec...``), so that the path and the line number agree.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import Field

from mapper_sdk._registry import Registry
from mapper_sdk.binding import BoundProperty
from mapper_sdk.driver import Driver, DriverConfig, Value
from mapper_sdk.errors import DriverError, Problem
from mapper_sdk.loader import (
    LoadResult,
    bind_all,
    format_path,
    load_paths,
    load_text,
    parse_path,
    validate_paths,
)

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared/conformance/kubeedge"

MODEL = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: thermo-model
spec:
  protocol: tiny
  properties:
    - name: temperature
      type: FLOAT
      accessMode: ReadOnly
    - name: humidity
      type: FLOAT
      accessMode: ReadOnly
    - name: setpoint
      type: INT
      accessMode: ReadWrite
      minimum: "0"
      maximum: "40"
"""

DEVICE = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: thermo
spec:
  deviceModelRef: {name: thermo-model}
  protocol: {protocolName: tiny, configData: {host: 10.0.0.1}}
  properties:
      - name: temperature
        visitors: {protocolName: tiny, configData: {register: 1}}
      - name: humidity
        visitors: {protocolName: tiny, configData: {register: 2}}
      - name: setpoint
        collectCycle: 1000
        visitors: {protocolName: tiny, configData: {register: 3}}
        desired: {value: "20"}
"""


class TinyProtocol(DriverConfig):
    host: str


class TinyVisitor(DriverConfig):
    address: int = Field(alias="register")  # "register" would shadow ABCMeta.register


class TinyDriver(Driver[TinyProtocol, TinyVisitor]):
    protocol = "tiny"
    protocol_config_model = TinyProtocol
    visitor_config_model = TinyVisitor

    async def connect(self) -> None:
        pass

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        return [0 for _ in points]


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.add(TinyDriver)
    return registry


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with ``models/thermo-model.yaml`` and ``devices/thermo.yaml``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "devices").mkdir()
    (tmp_path / "models/thermo-model.yaml").write_text(MODEL)
    (tmp_path / "devices/thermo.yaml").write_text(DEVICE)
    return tmp_path


def write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def check(registry: Registry) -> list[str]:
    return messages(validate_paths(["models", "devices"], registry))


# --- the happy path ----------------------------------------------------------------------------


def test_valid_project_binds_without_problems(project: Path, registry: Registry) -> None:
    result = load_paths(["models", "devices"])
    assert result.ok
    assert result.problems == []
    bound, problems = bind_all(result, registry)
    assert problems == []
    assert [b.ref.id for b in bound] == ["default/thermo"]
    assert [p.visitor.address for p in bound[0].properties] == [1, 2, 3]  # type: ignore[union-attr]
    source = result.devices[0].source
    assert (source.file, source.doc_index, source.item_index, source.first_line) == (
        "devices/thermo.yaml",
        0,
        None,
        1,
    )


# --- validation errors, one kind each ----------------------------------------------------------


def test_negative_cycle(project: Path, registry: Registry) -> None:
    write("devices/thermo.yaml", DEVICE.replace("collectCycle: 1000", "collectCycle: -5"))
    assert check(registry) == [
        "devices/thermo.yaml:14:9: spec.properties[2].collectCycle: must be >= 0"
    ]


def test_bad_enum(project: Path, registry: Registry) -> None:
    write("models/thermo-model.yaml", MODEL.replace("type: FLOAT", "type: float", 1))
    assert check(registry) == [
        # The model is refused, so its device has nothing to bind to:
        "devices/thermo.yaml:6:20: spec.deviceModelRef.name: "
        "DeviceModel thermo-model not found in namespace default; models there: none",
        "models/thermo-model.yaml:9:7: spec.properties[0].type: "
        "must be one of: INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES, STREAM",
    ]


def test_missing_names_point_at_the_parent(project: Path, registry: Registry) -> None:
    device = DEVICE.replace("  name: thermo\n", "  labels: {}\n").replace(
        "- name: humidity", "- reportCycle: 5"
    )
    write("devices/thermo.yaml", device)
    assert check(registry) == [
        "devices/thermo.yaml:3:1: metadata.name: is required",
        "devices/thermo.yaml:11:9: spec.properties[1].name: is required",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "collectCycle: 1000",
            "collectCycle: fast",
            "devices/thermo.yaml:14:9: spec.properties[2].collectCycle: must be an integer",
        ),
        (
            "collectCycle: 1000",
            "reportToCloud: maybe",
            "devices/thermo.yaml:14:9: spec.properties[2].reportToCloud: must be true or false",
        ),
        (
            "protocol: {protocolName: tiny,",
            "protocol: {protocolName: [tiny],",
            "devices/thermo.yaml:7:14: spec.protocol.protocolName: must be a string",
        ),
        (
            'desired: {value: "20"}',
            "desired: 20",
            "devices/thermo.yaml:16:9: spec.properties[2].desired: must be a mapping",
        ),
        (
            "  name: thermo\n",
            "  name: Thermo_1\n",
            "devices/thermo.yaml:4:3: metadata.name: must be a DNS-1123 subdomain: lower-case "
            "letters, digits, '-' and '.', starting and ending with a letter or digit "
            "(at most 253 characters)",
        ),
    ],
)
def test_wrong_types(project: Path, registry: Registry, old: str, new: str, expected: str) -> None:
    write("devices/thermo.yaml", DEVICE.replace(old, new))
    assert check(registry) == [expected]


def test_unknown_field_is_a_located_warning(project: Path, registry: Registry) -> None:
    write(
        "devices/thermo.yaml",
        DEVICE.replace(
            "        collectCycle: 1000\n", "        collectCycle: 1000\n        colour: blue\n"
        )
        + "  futureField: {a: 1}\n",
    )
    result = load_paths(["devices"])
    assert result.ok
    assert len(result.devices) == 1
    assert messages(result.problems) == [
        "devices/thermo.yaml:15:9: warning: spec.properties[2].colour: unknown field (ignored)",
        "devices/thermo.yaml:18:3: warning: spec.futureField: unknown field (ignored)",
    ]
    assert result.devices[0].obj.spec.model_extra == {"futureField": {"a": 1}}


def test_unknown_fields_and_errors_are_reported_together(project: Path) -> None:
    deep = "[" * 33 + "]" * 33
    text = DEVICE.replace("collectCycle: 1000", "collectCycle: -1\n        colour: blue")
    write("devices/thermo.yaml", text + f"  futureField: {deep}\n")
    result = load_paths(["devices"])
    assert result.devices == []
    assert messages(result.problems) == [
        "devices/thermo.yaml:14:9: spec.properties[2].collectCycle: must be >= 0",
        "devices/thermo.yaml:15:9: warning: spec.properties[2].colour: unknown field (ignored)",
        "devices/thermo.yaml:18:3: warning: spec.futureField: unknown field (ignored)",
        "devices/thermo.yaml:18:48: spec.futureField"
        + "[0]" * 32
        + ": nested deeper than 32 levels",
    ]


def test_too_deep_free_form_value_is_refused(project: Path) -> None:
    deep = "[" * 40 + "]" * 40
    write("devices/thermo.yaml", DEVICE.replace("{host: 10.0.0.1}", f"{{host: x, extra: {deep}}}"))
    result = load_paths(["devices"])
    assert result.devices == []
    assert messages(result.problems) == [
        # configData is level 1, so "extra" is 2 and the 31st list inside it is 33.
        "devices/thermo.yaml:7:94: spec.protocol.configData.extra"
        + "[0]" * 31
        + ": nested deeper than 32 levels"
    ]


# --- binding errors ----------------------------------------------------------------------------


def test_duplicate_property_name(project: Path, registry: Registry) -> None:
    write("devices/thermo.yaml", DEVICE.replace("- name: humidity", "- name: temperature"))
    assert check(registry) == [
        "devices/thermo.yaml:11:9: spec.properties[1].name: duplicate property 'temperature'"
    ]


def test_missing_model_lists_the_models_there(project: Path, registry: Registry) -> None:
    write("devices/thermo.yaml", DEVICE.replace("{name: thermo-model}", "{name: thermo-modle}"))
    assert check(registry) == [
        "devices/thermo.yaml:6:20: spec.deviceModelRef.name: DeviceModel thermo-modle not "
        "found in namespace default; models there: thermo-model"
    ]


def test_property_not_in_model(project: Path, registry: Registry) -> None:
    write("devices/thermo.yaml", DEVICE.replace("- name: setpoint", "- name: setpt"))
    assert check(registry) == [
        "devices/thermo.yaml:13:9: spec.properties[2].name: property 'setpt' is not in "
        "DeviceModel thermo-model (its properties: temperature, humidity, setpoint)"
    ]


def test_driver_config_error_is_located_in_the_device(project: Path, registry: Registry) -> None:
    write("devices/thermo.yaml", DEVICE.replace("{register: 2}", "{register: two}"))
    (problem,) = validate_paths(["models", "devices"], registry)
    assert (problem.file, problem.line, problem.column, problem.path) == (
        "devices/thermo.yaml",
        12,
        53,
        "spec.properties[1].visitors.configData.register",
    )
    assert problem.severity == "error"


def test_model_problem_is_reported_once_at_the_model(project: Path, registry: Registry) -> None:
    write("models/thermo-model.yaml", MODEL.replace('maximum: "40"', 'maximum: "lots"'))
    write("devices/other.yaml", DEVICE.replace("name: thermo\n", "name: other\n"))
    problems = check(registry)
    assert len(problems) == 1
    assert problems[0].startswith("models/thermo-model.yaml:14:7: spec.properties[2]: ")


def test_duplicate_objects_are_errors_at_the_second(project: Path, registry: Registry) -> None:
    write("models/copy.yaml", MODEL)
    write("devices/copy.yaml", DEVICE)
    assert check(registry) == [
        # Files load in sorted order: devices/copy.yaml comes first.
        "devices/thermo.yaml:4:3: metadata.name: duplicate Device default/thermo: "
        "already defined at devices/copy.yaml:1",
        "models/thermo-model.yaml:4:3: metadata.name: duplicate DeviceModel "
        "default/thermo-model: already defined at models/copy.yaml:1",
    ]


def test_missing_driver_is_a_warning_and_the_device_is_not_returned(project: Path) -> None:
    result = load_paths(["models", "devices"])
    bound, problems = bind_all(result, Registry())
    assert bound == []
    assert [(p.severity, p.line, p.path) for p in problems] == [
        ("warning", 7, "spec.protocol.protocolName")
    ]
    assert "no installed driver speaks protocol 'tiny'" in problems[0].message


# --- unsafe and broken YAML --------------------------------------------------------------------


def test_syntax_error_in_third_document(project: Path) -> None:
    write("devices/multi.yaml", "a: 1\n---\nb: 2\n---\nc: [1, 2\nd: 3\n")
    assert messages(load_paths(["devices/multi.yaml"]).problems) == [
        "devices/multi.yaml:1:1: apiVersion: is required",
        "devices/multi.yaml:1:1: kind: is required",
        "devices/multi.yaml:3:1: apiVersion: is required",
        "devices/multi.yaml:3:1: kind: is required",
        "devices/multi.yaml:6:2: YAML syntax error: illegal placement of ':' indicator",
    ]


def test_validation_error_lines_in_third_document(project: Path) -> None:
    bad = DEVICE.replace("name: thermo\n", "name: bad\n")
    bad = bad.replace("collectCycle: 1000", "collectCycle: -1")
    write("devices/all.yaml", MODEL + "---\n" + DEVICE + "---\n" + bad)
    result = load_paths(["devices/all.yaml"])
    assert [d.obj.metadata.name for d in result.devices] == ["thermo"]
    assert [d.source.doc_index for d in result.devices] == [1]
    # A document starts at its "---" line: 18 model lines, then "---" on line 19.
    assert [d.source.first_line for d in result.devices] == [19]
    # 16 device lines, "---" on line 36: the third document's line 14 is line 50.
    assert messages(result.problems) == [
        "devices/all.yaml:50:9: spec.properties[2].collectCycle: must be >= 0"
    ]


def test_alias_is_refused(project: Path) -> None:
    text = DEVICE.replace("{host: 10.0.0.1}", "&cfg {host: 10.0.0.1}")
    text = text.replace("configData: {register: 3}", "configData: *cfg")
    write("devices/thermo.yaml", text)
    assert messages(load_paths(["devices"]).problems) == [
        "devices/thermo.yaml:15:52: YAML aliases are not allowed (*cfg); write the value out"
    ]


def test_billion_laughs_is_refused_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{','.join(['*' + previous] * 9)}]")
    start = time.perf_counter()
    result = load_text("\n".join(lines), "bomb.yaml")
    assert time.perf_counter() - start < 0.1
    assert messages(result.problems) == [
        "bomb.yaml:2:8: YAML aliases are not allowed (*a); write the value out"
    ]


def test_deep_nesting_is_refused_fast() -> None:
    for text in ("a: " + "[" * 10_000 + "]" * 10_000, "spec:\n  " + "- " * 10_000 + "x"):
        start = time.perf_counter()
        result = load_text(text, "deep.yaml")
        assert time.perf_counter() - start < 0.1
        (problem,) = result.problems
        assert problem.message.startswith("YAML nesting is ")
        assert (problem.file, problem.line) == ("deep.yaml", 1 if text[0] == "a" else 2)


def test_big_file_is_refused_fast_and_the_limit_is_configurable(project: Path) -> None:
    description = "x" * (5 << 20)
    big = MODEL.replace("name: thermo-model", "name: big") + f"  description: {description}\n"
    write("models/big.yaml", big)
    start = time.perf_counter()
    result = load_paths(["models/big.yaml"])
    assert time.perf_counter() - start < 0.1
    assert messages(result.problems) == [
        "models/big.yaml: larger than 1048576 bytes (max_file_bytes); refusing to read it"
    ]
    start = time.perf_counter()
    result = load_text(big, "big.yaml")
    assert time.perf_counter() - start < 0.1
    assert messages(result.problems) == [
        "big.yaml: larger than 1048576 bytes (max_bytes); refusing to read it"
    ]
    result = load_paths(["models/big.yaml"], max_file_bytes=8 << 20)
    assert [m.obj.metadata.name for m in result.models] == ["big"]


def test_duplicate_key_is_refused(project: Path) -> None:
    write("devices/thermo.yaml", DEVICE.replace("kind: Device\n", "kind: Device\nkind: Device\n"))
    assert messages(load_paths(["devices"]).problems) == [
        "devices/thermo.yaml:3:1: duplicate key 'kind' (first set on line 2)"
    ]


def test_python_tag_is_refused(project: Path) -> None:
    write(
        "devices/thermo.yaml",
        DEVICE.replace("host: 10.0.0.1", "host: !!python/object/new:os.system [reboot]"),
    )
    assert messages(load_paths(["devices"]).problems) == [
        "devices/thermo.yaml:7:53: YAML tags are not allowed "
        "(found !!python/object/new:os.system); remove the tag and write a plain value"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "x.yaml:1:1: must be a mapping (a Kubernetes object), not a list"),
        (
            "just text\n",
            "x.yaml:1:1: must be a mapping (a Kubernetes object), not the value 'just text'",
        ),
        ("apiVersion: 1\nkind: Device\n", "x.yaml:1:1: apiVersion: must be a string"),
    ],
)
def test_not_an_object(text: str, expected: str) -> None:
    assert messages(load_text(text, "x.yaml").problems) == [expected]


def test_not_utf8_and_missing_files(project: Path) -> None:
    Path("devices/latin1.yaml").write_bytes(b"a: 1\nb: caf\xe9\n")
    result = load_paths(["devices/latin1.yaml", "devices/nothing.yaml"])
    assert messages(result.problems) == [
        "devices/latin1.yaml:2: not valid UTF-8 (byte 0xe9 at offset 11)",
        "devices/nothing.yaml: cannot read: No such file or directory",
    ]


# --- documents, lists, directories -------------------------------------------------------------

LIST = """apiVersion: v1
kind: List
items:
  - apiVersion: devices.kubeedge.io/v1beta1
    kind: Device
    metadata: {name: one}
    spec:
      properties:
        - name: temperature
  - apiVersion: devices.kubeedge.io/v1beta1
    kind: Device
    metadata: {name: two}
    spec:
      properties:
        - name: temperature
          collectCycle: -1
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: three}
"""


def test_list_items_are_loaded_and_reported_from_the_document_root() -> None:
    result = load_text(LIST, "list.yaml")
    assert [d.obj.metadata.name for d in result.devices] == ["one"]
    assert result.devices[0].source.item_index == 0
    assert messages(result.problems) == [
        "list.yaml:16:11: items[1].spec.properties[0].collectCycle: must be >= 0",
        "list.yaml:18:5: warning: items[2]: skipped: kind ConfigMap of apiVersion v1 "
        "is not a device object",
    ]


def test_typed_list_and_bad_items() -> None:
    text = "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceList\nitems: {a: 1}\n"
    assert messages(load_text(text, "l.yaml").problems) == ["l.yaml:3:1: items: must be a list"]
    empty = "apiVersion: v1\nkind: List\nitems: []\n"
    assert load_text(empty).problems == []


def test_directories_are_searched_recursively_in_order(project: Path) -> None:
    write("devices/b/second.yml", DEVICE.replace("name: thermo\n", "name: second\n"))
    write("devices/a/first.yaml", DEVICE.replace("name: thermo\n", "name: first\n"))
    write("devices/notes.txt", "not: yaml: at all")
    write("devices/.hidden.yaml", "broken: [")
    write("devices/..data/thermo.yaml", "broken: [")  # a ConfigMap mount's internals
    result = load_paths(["devices"])
    assert result.problems == []
    assert [d.source.file for d in result.devices] == [
        "devices/a/first.yaml",
        "devices/b/second.yml",
        "devices/thermo.yaml",
    ]
    empty = Path("empty")
    empty.mkdir()
    assert messages(load_paths([empty]).problems) == [
        "empty: warning: no *.yaml or *.yml files here"
    ]


def test_loading_continues_past_bad_objects(project: Path) -> None:
    bad = DEVICE.replace("collectCycle: 1000", "collectCycle: -1")
    write("devices/a.yaml", "broken: [\n")
    write("devices/b.yaml", bad + "---\n" + DEVICE.replace("thermo\n", "ok\n") + "---\n" + bad)
    result = load_paths(["devices"])
    assert [d.obj.metadata.name for d in result.devices] == ["ok", "thermo"]
    assert [(p.file, p.line) for p in result.problems] == [
        ("devices/a.yaml", 1),  # the unclosed "["
        ("devices/b.yaml", 14),
        ("devices/b.yaml", 48),
    ]
    assert not result.ok


def test_foreign_kinds_are_skipped_with_warnings() -> None:
    result = load_paths([CONFORMANCE / "crds"])
    assert result.ok
    assert (result.models, result.devices, result.statuses) == ([], [], [])
    assert [(Path(p.file or "").name, p.line, p.severity, p.message) for p in result.problems] == [
        (
            name,
            3,
            "warning",
            "skipped: kind CustomResourceDefinition of apiVersion apiextensions.k8s.io/v1 "
            "is not a device object",
        )
        for name in (
            "devices_v1beta1_device.yaml",
            "devices_v1beta1_devicemodel.yaml",
            "devices_v1beta1_devicestatus.yaml",
        )
    ]


def test_upstream_v1beta1_samples_validate_with_warnings_only() -> None:
    problems = validate_paths([CONFORMANCE / "samples/v1beta1"], Registry())
    assert [p for p in problems if p.severity == "error"] == []
    seen = {(Path(p.file or "").name, p.path) for p in problems}
    assert seen == {
        ("modbus-temperature-instance.yaml", "spec.protocol.protocolName"),  # no modbus driver
        ("onvif-instance.yaml", "spec.protocol.protocolName"),
        ("onvif-instance.yaml", "spec.properties[0].reportCycle"),  # nanoseconds
        ("onvif-instance.yaml", "spec.properties[0].collectCycle"),
    }
    cycles = [p for p in problems if p.path.endswith("Cycle")]
    assert [(p.line, p.column) for p in cycles] == [(25, 7), (26, 7)]
    assert all("looks like nanoseconds" in p.message for p in cycles)


def test_upstream_v1alpha2_samples_load() -> None:
    result = load_paths([CONFORMANCE / "samples/v1alpha2"])
    assert result.ok, messages(result.problems)
    assert sorted(m.obj.metadata.name for m in result.models) == [
        "modbus-sample-model",
        "opcua-model",
    ]
    assert len(result.devices) == 2


def test_v1alpha2_problems_are_located_in_the_original(project: Path) -> None:
    text = (CONFORMANCE / "samples/v1alpha2/modbustcp-instance.yaml").read_text()
    write("devices/legacy.yaml", text.replace("  nodeSelector:", "  nodeSelectr:"))
    result = load_paths(["devices/legacy.yaml"])
    assert [(p.line, p.column, p.path) for p in result.problems] == [(19, 3, "spec.nodeSelectr")]
    assert "unknown v1alpha2 field 'nodeSelectr'" in result.problems[0].message


def test_v1alpha2_without_its_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mapper_sdk.models.legacy", None)
    text = "apiVersion: devices.kubeedge.io/v1alpha2\nkind: Device\nmetadata: {name: a}\n"
    assert messages(load_text(text, "old.yaml").problems) == [
        "old.yaml:1:1: v1alpha2 support not available"
    ]


# --- API details -------------------------------------------------------------------------------


def test_validate_paths_sorts_by_file_and_line(project: Path, registry: Registry) -> None:
    write("devices/a.yaml", "kind: Device\n")
    write("devices/thermo.yaml", DEVICE.replace("- name: setpoint", "- name: setpt"))
    problems = validate_paths(["devices", "models"], registry)
    assert [(p.file, p.line) for p in problems] == [
        ("devices/a.yaml", 1),
        ("devices/thermo.yaml", 13),
    ]


def test_format_and_parse_path() -> None:
    path = ("spec", "properties", 2, "collectCycle")
    assert format_path(path) == "spec.properties[2].collectCycle"
    assert parse_path("spec.properties[2].collectCycle") == path
    assert format_path(("items", 1)) == "items[1]"
    assert format_path(()) == ""


def test_ok_ignores_warnings() -> None:
    assert LoadResult(problems=[Problem("w", severity="warning")]).ok
    assert not LoadResult(problems=[Problem("e")]).ok


def test_garbage_collector_state_is_restored(project: Path) -> None:
    assert gc.isenabled()
    load_paths(["devices"])
    assert gc.isenabled()
    gc.disable()
    try:
        load_paths(["devices"])
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- a templated fleet shares its property blocks ----------------------------------------------


def _fleet(count: int, extra: str = "") -> None:
    for i in range(count):
        text = DEVICE.replace("name: thermo\n", f"name: thermo-{i}\n")
        text = text.replace("        collectCycle: 1000\n", f"        collectCycle: 1000\n{extra}")
        write(f"devices/thermo-{i}.yaml", text)
    Path("devices/thermo.yaml").unlink()


def test_equal_property_blocks_become_one_object(project: Path, registry: Registry) -> None:
    _fleet(3)
    write(
        "devices/thermo-2.yaml",
        Path("devices/thermo-2.yaml").read_text().replace("register: 2", "register: 7"),
    )
    result = load_paths(["models", "devices"])
    assert result.problems == []
    first, second, third = (d.obj.spec.properties for d in result.devices)
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert first[0] is third[0]
    assert first[2] is third[2]
    assert first[1] is not third[1]  # a different block keeps its own object
    assert third[1].visitors is not None
    assert third[1].visitors.config_data == {"register": 7}
    bound, problems = bind_all(result, registry)
    assert problems == []
    assert bound[0].properties[0] is bound[1].properties[0]
    assert bound[0].properties[1] is not bound[2].properties[1]
    assert [p.visitor.address for p in bound[2].properties] == [1, 7, 3]  # type: ignore[union-attr]


def test_a_shared_block_still_warns_in_every_file(project: Path, registry: Registry) -> None:
    """Reusing a block must not hide per-device warnings: unknown fields (loader) and
    nanosecond cycles (binding) are reported for each device that has them."""
    _fleet(2, extra="        colour: blue\n")
    for i in range(2):
        path = Path(f"devices/thermo-{i}.yaml")
        path.write_text(
            path.read_text().replace("collectCycle: 1000\n", "collectCycle: 2000000000\n")
        )
    found = check(registry)
    for i in range(2):
        assert (
            f"devices/thermo-{i}.yaml:15:9: warning: spec.properties[2].colour: "
            "unknown field (ignored)"
        ) in found
        assert any(
            m.startswith(f"devices/thermo-{i}.yaml:14:9: warning: spec.properties[2].collectCycle")
            for m in found
        ), found


def test_shared_blocks_are_released_with_their_devices(project: Path, registry: Registry) -> None:
    from mapper_sdk import binding, loader

    _fleet(2)
    before = set(loader._SHARED_PROPERTIES.keys()), set(binding._BOUND_PROPERTIES.keys())
    result = load_paths(["models", "devices"])
    bound, _ = bind_all(result, registry)
    assert len(bound) == 2
    added = (
        set(loader._SHARED_PROPERTIES.keys()) - before[0],
        set(binding._BOUND_PROPERTIES.keys()) - before[1],
    )
    assert len(added[0]) == 3  # the three property blocks, once each
    assert len(added[1]) == 3
    del result, bound
    gc.collect()
    assert not added[0] & set(loader._SHARED_PROPERTIES.keys())
    assert not added[1] & set(binding._BOUND_PROPERTIES.keys())
