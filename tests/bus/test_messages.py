"""Bus messages (contract §3.3-§3.5a): golden examples, strict parsing, local checks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapper_sdk.bus import messages as m
from mapper_sdk.bus.messages import (
    MembershipDevice,
    MessageError,
    MsgAttr,
    MsgTwin,
    TwinDoc,
    TwinValue,
    TwinVersion,
)
from mapper_sdk.errors import EventBusError, ValueConversionError

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "spec" / "kubeedge-contract.md"

# --- golden examples ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Golden:
    """One example: ``snippet`` is quoted from the contract when ``verbatim``; ``subs`` replace
    its elisions (``…``, ``{...}``) with concrete values so it is JSON."""

    id: str
    snippet: str
    build: Callable[[], bytes]
    parse: Callable[[bytes], object]
    parsed: object
    subs: tuple[tuple[str, str], ...] = ()
    verbatim: bool = True

    def json(self) -> bytes:
        text = self.snippet
        for old, new in self.subs:
            assert old in text
            text = text.replace(old, new)
        return text.encode()


TEMP_CURRENT = MsgTwin(actual=TwinValue("23.5", 1714000000050), optional=True, type="float")
SWITCH_TWIN = MsgTwin(
    expected=TwinValue("on", 1714000000050),
    actual=TwinValue("off", 1713999990000),
    optional=True,
    type="string",
)
TEMP_JSON = (
    '{"actual":{"value":"23.5","metadata":{"timestamp":1714000000050}},'
    '"optional":true,"metadata":{"type":"float"}}'
)
SWITCH_JSON = (
    '{"expected":{"value":"on","metadata":{"timestamp":1714000000050}},'
    '"actual":{"value":"off","metadata":{"timestamp":1713999990000}},'
    '"optional":true,"metadata":{"type":"string"}}'
)
THERMO = MembershipDevice(id="default/thermo-1", name="thermo-1", description="lab sensor")

GOLDEN = [
    # ----- §3.5 -----
    Golden(
        "twin-update-mapper-report",
        (
            '{"event_id":"","timestamp":1714000000000,'
            '"twin":{"temperature":{"actual":{"value":"23.5"},"metadata":{"type":"float"}}}}'
        ),
        lambda: m.build_twin_report(
            {"temperature": ("23.5", "float")}, timestamp=1714000000000, value_timestamps=False
        ),
        m.parse_twin_update,
        m.TwinUpdate(
            "", 1714000000000, {"temperature": MsgTwin(actual=TwinValue("23.5"), type="float")}
        ),
    ),
    Golden(
        "twin-update-app-expected",
        (
            '{"event_id":"app-42","timestamp":1714000000000,'
            '"twin":{"switch":{"expected":{"value":"on"},"metadata":{"type":"string"}}}}'
        ),
        lambda: m.build_twin_update(
            {"switch": MsgTwin(expected=TwinValue("on"), type="string")},
            event_id="app-42",
            timestamp=1714000000000,
        ),
        m.parse_twin_update,
        m.TwinUpdate(
            "app-42", 1714000000000, {"switch": MsgTwin(expected=TwinValue("on"), type="string")}
        ),
    ),
    Golden(
        "twin-update-result-success",
        (
            '{"event_id":"app-42","timestamp":1714000000050,'
            '"twin":{"switch":{"expected":{"value":"on","metadata":{"timestamp":1714000000050}},'
            '"optional":true,"metadata":{"type":"string"}}}}'
        ),
        lambda: m.build_twin_update_result(
            {
                "switch": MsgTwin(
                    expected=TwinValue("on", 1714000000050), optional=True, type="string"
                )
            },
            event_id="app-42",
            timestamp=1714000000050,
        ),
        m.parse_twin_update_result,
        m.TwinUpdateResult(
            "app-42",
            1714000000050,
            {
                "switch": MsgTwin(
                    expected=TwinValue("on", 1714000000050), optional=True, type="string"
                )
            },
        ),
    ),
    Golden(
        "twin-update-result-error",
        (
            '{"event_id":"","timestamp":1714000000050,"code":400,'
            '"reason":"The value of twin must only include ..."}'
        ),
        lambda: m.build_error_result(
            400, "The value of twin must only include ...", timestamp=1714000000050
        ),
        m.parse_twin_update_result,
        m.TwinUpdateResult("", 1714000000050, {}, 400, "The value of twin must only include ..."),
    ),
    Golden(
        "twin-update-delta",
        (
            '{"event_id":"5b0c…","timestamp":1714000000060,'
            '"twin":{"switch":{"expected":{"value":"on","metadata":{"timestamp":1714000000050}},'
            '"actual":{"value":"off","metadata":{"timestamp":1713999990000}},"optional":true,'
            '"metadata":{"type":"string"}}},"delta":{"switch":"on"}}'
        ),
        lambda: m.build_twin_delta(
            {"switch": SWITCH_TWIN}, {"switch": "on"}, event_id="5b0c…", timestamp=1714000000060
        ),
        m.parse_twin_delta,
        m.TwinDelta("5b0c…", 1714000000060, {"switch": SWITCH_TWIN}, {"switch": "on"}),
    ),
    Golden(
        "twin-update-document-first-report",
        (
            '{"event_id":"","timestamp":1714000000050,"twin":{"temperature":{"last":null,'
            '"current":{"actual":{"value":"23.5","metadata":{"timestamp":1714000000050}},'
            '"optional":true,"metadata":{"type":"float"}}}}}'
        ),
        lambda: m.build_twin_document(
            {"temperature": TwinDoc(None, TEMP_CURRENT)}, timestamp=1714000000050
        ),
        m.parse_twin_document,
        m.TwinDocument("", 1714000000050, {"temperature": TwinDoc(None, TEMP_CURRENT)}),
    ),
    Golden(
        "twin-get",
        '{"event_id":"g-1"}',
        lambda: m.build_twin_get("g-1"),
        m.parse_twin_get,
        m.TwinGet("g-1"),
    ),
    Golden(
        "twin-get-result",
        '{"event_id":"g-1","timestamp":1714000001000,"twin":{"temperature":{...},"switch":{...}}}',
        lambda: m.build_twin_get_result(
            {"temperature": TEMP_CURRENT, "switch": SWITCH_TWIN},
            event_id="g-1",
            timestamp=1714000001000,
        ),
        m.parse_twin_get_result,
        m.TwinGetResult("g-1", 1714000001000, {"temperature": TEMP_CURRENT, "switch": SWITCH_TWIN}),
        subs=(('"temperature":{...}', f'"temperature":{TEMP_JSON}'), ("{...}", SWITCH_JSON)),
    ),
    Golden(
        "twin-get-result-404",
        (
            '{"event_id":"g-1","timestamp":…,"code":404,'
            '"reason":"Device default/x not found while getting twin"}'
        ),
        lambda: m.build_error_result(
            404,
            "Device default/x not found while getting twin",
            event_id="g-1",
            timestamp=1714000001000,
        ),
        m.parse_twin_get_result,
        m.TwinGetResult(
            "g-1", 1714000001000, {}, 404, "Device default/x not found while getting twin"
        ),
        subs=(("…", "1714000001000"),),
    ),
    Golden(
        "state-update",
        '{"event_id":"","timestamp":1714000002000,"state":"online"}',
        lambda: m.build_state_update("online", timestamp=1714000002000),
        m.parse_state_update,
        m.StateUpdate("", 1714000002000, "online"),
    ),
    Golden(
        "state-update-result",
        (
            '{"event_id":"9e…","timestamp":1714000002001,"device":{"name":"thermo-1",'
            '"state":"online","lastOnlineTime":"2024-04-25T00:00:02Z"}}'
        ),
        lambda: m.build_state_update_result(
            "thermo-1",
            "online",
            "2024-04-25T00:00:02Z",
            event_id="9e…",
            timestamp=1714000002001,
        ),
        m.parse_state_update_result,
        m.StateUpdateResult("9e…", 1714000002001, "thermo-1", "online", "2024-04-25T00:00:02Z"),
    ),
    Golden(
        "membership-get",
        '{"event_id":"m-1"}',
        lambda: m.build_membership_get("m-1"),
        m.parse_membership_get,
        m.MembershipGet("m-1"),
    ),
    Golden(
        "membership-get-result",
        (
            '{"event_id":"m-1","timestamp":…,"devices":[{"id":"default/thermo-1",'
            '"name":"thermo-1","description":"lab sensor","state":"online",'
            '"last_online":"2024-04-25T00:00:02Z"}]}'
        ),
        lambda: m.build_membership_get_result(
            [
                MembershipDevice(
                    id="default/thermo-1",
                    name="thermo-1",
                    description="lab sensor",
                    state="online",
                    last_online="2024-04-25T00:00:02Z",
                )
            ],
            event_id="m-1",
            timestamp=1714000003000,
        ),
        m.parse_membership_get_result,
        m.MembershipGetResult(
            "m-1",
            1714000003000,
            (
                MembershipDevice(
                    id="default/thermo-1",
                    name="thermo-1",
                    description="lab sensor",
                    state="online",
                    last_online="2024-04-25T00:00:02Z",
                ),
            ),
        ),
        subs=(("…", "1714000003000"),),
    ),
    Golden(
        "membership-updated",
        (
            '{"event_id":"7f…","timestamp":…,"added_devices":[{"id":"default/thermo-1",'
            '"name":"thermo-1","description":"lab sensor"}],"removed_devices":null}'
        ),
        lambda: m.build_membership_updated([THERMO], None, event_id="7f…", timestamp=1714000004000),
        m.parse_membership_updated,
        m.MembershipUpdated("7f…", 1714000004000, (THERMO,), None),
        subs=(('"timestamp":…', '"timestamp":1714000004000'),),
    ),
    Golden(
        "device-updated-legacy-attributes",
        (
            '{"event_id":"","timestamp":…,"attributes":{"vendor":{"value":"acme","optional":true,'
            '"metadata":{"type":"string"}}}}'
        ),
        lambda: m.build_device_updated(
            {"vendor": MsgAttr("acme", optional=True, type="string")}, timestamp=1714000005000
        ),
        m.parse_device_updated,
        m.DeviceUpdated(
            "", 1714000005000, {"vendor": MsgAttr("acme", optional=True, type="string")}
        ),
        subs=(("…", "1714000005000"),),
    ),
    # ----- §3.5a (shapes described in prose; JSON written by us) -----
    Golden(
        "a4-delete-optional-result",
        '{"event_id":"d-1","timestamp":1714000006000,"twin":{"switch":null}}',
        lambda: m.build_twin_update_result(
            {"switch": None}, event_id="d-1", timestamp=1714000006000
        ),
        m.parse_twin_update_result,
        m.TwinUpdateResult("d-1", 1714000006000, {"switch": None}),
        verbatim=False,
    ),
    Golden(
        "a4-delete-request",
        '{"event_id":"d-1","timestamp":1714000006000,"twin":{"switch":null}}',
        lambda: m.build_twin_update({"switch": None}, event_id="d-1", timestamp=1714000006000),
        m.parse_twin_update,
        m.TwinUpdate("d-1", 1714000006000, {"switch": None}),
        verbatim=False,
    ),
    Golden(
        "a4-delete-document",
        (
            f'{{"event_id":"d-1","timestamp":1714000006000,'
            f'"twin":{{"switch":{{"last":{SWITCH_JSON},"current":null}}}}}}'
        ),
        lambda: m.build_twin_document(
            {"switch": TwinDoc(SWITCH_TWIN, None)}, event_id="d-1", timestamp=1714000006000
        ),
        m.parse_twin_document,
        m.TwinDocument("d-1", 1714000006000, {"switch": TwinDoc(SWITCH_TWIN, None)}),
        verbatim=False,
    ),
    Golden(
        "a4-delete-non-optional-noop",
        '{"event_id":"d-2","timestamp":1714000006000,"twin":{}}',
        lambda: m.build_twin_update_result({}, event_id="d-2", timestamp=1714000006000),
        m.parse_twin_update_result,
        m.TwinUpdateResult("d-2", 1714000006000, {}),
        verbatim=False,
    ),
    Golden(
        "a1-parse-error-on-empty-id-topic",
        (
            '{"event_id":"","timestamp":1714000007000,"code":400,'
            '"reason":"Unmarshal update request body failed, please check the request"}'
        ),
        lambda: m.build_error_result(
            400,
            "Unmarshal update request body failed, please check the request",
            timestamp=1714000007000,
        ),
        m.parse_twin_update_result,
        m.TwinUpdateResult(
            "",
            1714000007000,
            {},
            400,
            "Unmarshal update request body failed, please check the request",
        ),
        verbatim=False,
    ),
    Golden(
        "a1-404-echoes-event-id",
        (
            '{"event_id":"r-9","timestamp":1714000007000,"code":404,'
            '"reason":"Update rejected due to the device is not existed"}'
        ),
        lambda: m.build_error_result(
            404,
            "Update rejected due to the device is not existed",
            event_id="r-9",
            timestamp=1714000007000,
        ),
        m.parse_twin_update_result,
        m.TwinUpdateResult(
            "r-9", 1714000007000, {}, 404, "Update rejected due to the device is not existed"
        ),
        verbatim=False,
    ),
    Golden(
        "a7-state-result-without-last-online",
        (
            '{"event_id":"4c","timestamp":1714000008000,"device":{"name":"thermo-1",'
            '"state":"OFFLINE"}}'
        ),
        lambda: m.build_state_update_result(
            "thermo-1", "OFFLINE", None, event_id="4c", timestamp=1714000008000
        ),
        m.parse_state_update_result,
        m.StateUpdateResult("4c", 1714000008000, "thermo-1", "OFFLINE", None),
        verbatim=False,
    ),
    Golden(
        "a8-membership-empty",
        '{"event_id":"m-2","timestamp":1714000009000,"devices":[]}',
        lambda: m.build_membership_get_result([], event_id="m-2", timestamp=1714000009000),
        m.parse_membership_get_result,
        m.MembershipGetResult("m-2", 1714000009000, ()),
        verbatim=False,
    ),
    Golden(
        "a8-membership-empty-fields-omitted",
        (
            '{"event_id":"m-3","timestamp":1714000009000,"devices":[{"id":"default/thermo-1",'
            '"name":"thermo-1"}]}'
        ),
        lambda: m.build_membership_get_result(
            [MembershipDevice(id="default/thermo-1", name="thermo-1")],
            event_id="m-3",
            timestamp=1714000009000,
        ),
        m.parse_membership_get_result,
        m.MembershipGetResult(
            "m-3", 1714000009000, (MembershipDevice(id="default/thermo-1", name="thermo-1"),)
        ),
        verbatim=False,
    ),
    Golden(
        "membership-updated-removed",
        (
            '{"event_id":"7e","timestamp":1714000010000,"added_devices":null,'
            '"removed_devices":[{"id":"default/thermo-1","name":"thermo-1",'
            '"description":"lab sensor"}]}'
        ),
        lambda: m.build_membership_updated(None, [THERMO], event_id="7e", timestamp=1714000010000),
        m.parse_membership_updated,
        m.MembershipUpdated("7e", 1714000010000, None, (THERMO,)),
        verbatim=False,
    ),
    Golden(
        "mapper-report-with-value-timestamps",
        (
            '{"event_id":"","timestamp":1714000011000,'
            '"twin":{"temperature":{"actual":{"value":"23.5",'
            '"metadata":{"timestamp":1714000011000}},"metadata":{"type":"float"}},'
            '"on":{"actual":{"value":"true","metadata":{"timestamp":1714000011000}},'
            '"metadata":{"type":"boolean"}}}}'
        ),
        lambda: m.build_twin_report(
            {"temperature": ("23.5", "float"), "on": ("true", "boolean")},
            timestamp=1714000011000,
        ),
        m.parse_twin_update,
        m.TwinUpdate(
            "",
            1714000011000,
            {
                "temperature": MsgTwin(actual=TwinValue("23.5", 1714000011000), type="float"),
                "on": MsgTwin(actual=TwinValue("true", 1714000011000), type="boolean"),
            },
        ),
        verbatim=False,
    ),
]


@pytest.fixture(scope="module")
def contract_text() -> str:
    if not CONTRACT.is_file():
        pytest.skip(f"contract not found at {CONTRACT}")
    return CONTRACT.read_text()


@pytest.mark.parametrize("case", [g for g in GOLDEN if g.verbatim], ids=lambda g: g.id)
def test_golden_snippet_is_quoted_from_the_contract(case, contract_text):
    assert f"`{case.snippet}`" in contract_text


@pytest.mark.parametrize("case", GOLDEN, ids=lambda g: g.id)
def test_golden_build_matches(case):
    built = case.build()
    assert isinstance(built, bytes)
    assert orjson.loads(built) == orjson.loads(case.json())


@pytest.mark.parametrize("case", GOLDEN, ids=lambda g: g.id)
def test_golden_parse_matches(case):
    assert case.parse(case.json()) == case.parsed
    # str payloads parse the same
    assert case.parse(case.json().decode()) == case.parsed


def test_mapper_report_always_carries_value_key():
    # §3.5a.10: {"actual":{}} panics EdgeCore. Every actual/expected we build has "value".
    body = orjson.loads(m.build_twin_report({"a": ("1", "int"), "b": ("x", "string")}))
    for twin in body["twin"].values():
        assert "value" in twin["actual"]
    with pytest.raises(ValueConversionError, match="actual has no value"):
        m.build_twin_update({"a": MsgTwin(actual=TwinValue(None), type="int")})
    with pytest.raises(ValueConversionError, match="expected has no value"):
        m.build_twin_update({"a": MsgTwin(expected=TwinValue(None))})


def test_timestamps_default_to_now_in_integer_ms():
    before = m.now_ms()
    body = orjson.loads(m.build_twin_report({"t": ("1", "int")}))
    after = m.now_ms()
    assert type(body["timestamp"]) is int
    assert before <= body["timestamp"] <= after
    assert body["twin"]["t"]["actual"]["metadata"]["timestamp"] == body["timestamp"]
    assert 1_600_000_000_000 < before < 10_000_000_000_000  # milliseconds, not s or ns


def test_result_ok_flags():
    assert m.parse_twin_update_result(b'{"event_id":"","timestamp":1,"twin":{}}').ok
    assert not m.parse_twin_update_result(b'{"event_id":"","code":400,"reason":"x"}').ok
    assert not m.parse_twin_get_result(b'{"event_id":"","code":404}').ok
    assert m.parse_membership_get_result(b'{"event_id":"","devices":[]}').ok


def test_state_key_is_case_insensitive_like_edgecore():
    # The DMI path sends "State" (§3.3).
    assert m.parse_state_update(b'{"event_id":"","timestamp":1,"State":"ok"}').state == "ok"


def test_versions_and_membership_twins_parse():
    payload = (
        b'{"event_id":"x","timestamp":5,"added_devices":[{"id":"default/a","name":"a",'
        b'"twin":{"t":{"actual":{"value":"1"},"actual_version":{"cloud":2,"edge":3}}}}],'
        b'"removed_devices":null}'
    )
    parsed = m.parse_membership_updated(payload)
    assert parsed.added_devices is not None
    twin = parsed.added_devices[0].twin["t"]
    assert twin == MsgTwin(actual=TwinValue("1"), actual_version=TwinVersion(2, 3))


# --- local checks when building -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_", "reason"),
    [
        ("23 5", "string", "must be 1-512 of the characters"),  # space
        ("a=b", "string", "must be 1-512"),
        ('{"a":1}', "string", "must be 1-512"),  # a JSON blob is not a twin value
        ("ns=2;s=Temp", "string", "must be 1-512"),  # nor an OPC-UA node id
        ("1e+16", "float", "must be 1-512"),  # '+' is outside the pattern
        ("", "string", "must be 1-512"),
        ("x" * 513, "string", "513 characters is longer than 512"),
        ("x\n", "string", "must be 1-512"),
        ("é", "string", "must be 1-512"),
        ("1.5", "int", "not a 64-bit integer"),
        ("9223372036854775808", "int", "not a 64-bit integer"),
        ("-9223372036854775809", "integer", "not a 64-bit integer"),
        ("0x10", "int", "not a 64-bit integer"),
        ("abc", "float", "not a 64-bit float"),
        ("1e309", "float", "not a 64-bit float"),  # Go: ErrRange
        ("0x1p-2", "float", "not a 64-bit float"),  # stricter than Go on purpose
        ("1_000", "float", "not a 64-bit float"),
        ("True", "boolean", "not 'true' or 'false'"),
        ("1", "boolean", "not 'true' or 'false'"),
        ("1.5", "double", "twin type 'double' is not one of"),  # §3.4.4 QUIRK
        ("1", "INT", "twin type 'INT' is not one of"),
        ("x", "bytes", "twin type 'bytes' is not one of"),
        ("x", "stream", "twin type 'stream' is not one of"),
        ("x", "", "twin type '' is not one of"),
    ],
)
def test_build_refuses_values_edgecore_would_reject(value, type_, reason):
    with pytest.raises(ValueConversionError, match=reason):
        m.build_twin_report({"p": (value, type_)})


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        ("x" * 512, "string"),  # exactly 512 is accepted (§3.5a.2)
        ("a-_.,:/@#Z9", "string"),
        ("-42", "int"),
        ("9223372036854775807", "integer"),
        ("-9223372036854775808", "int"),
        ("23.5", "float"),
        ("-1.5e-7", "float"),
        ("1e16", "float"),
        (".5", "float"),
        ("5.", "float"),
        ("NaN", "float"),
        ("Inf", "float"),
        ("-Infinity", "float"),
        ("true", "boolean"),
        ("false", "boolean"),
    ],
)
def test_build_accepts_values_edgecore_accepts(value, type_):
    body = orjson.loads(m.build_twin_report({"p": (value, type_)}))
    assert body["twin"]["p"]["actual"]["value"] == value
    assert body["twin"]["p"]["metadata"]["type"] == type_


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "twin name '' must be 1-128"),
        ("a b", "must be 1-128"),
        ("a" * 129, "must be 1-128"),
        ("temp\n", "must be 1-128"),
        ("t$", "must be 1-128"),
    ],
)
def test_build_refuses_bad_twin_names(key, reason):
    with pytest.raises(ValueConversionError, match=reason):
        m.build_twin_report({key: ("1", "int")})


def test_build_accepts_twin_name_of_128():
    assert orjson.loads(m.build_twin_report({"k" * 128: ("1", "int")}))["twin"]["k" * 128]


@pytest.mark.parametrize("state", ["ONLINE", "Online", "disconnected", "ERROR", "", "on line"])
def test_build_state_refuses_states_edgecore_drops(state):
    with pytest.raises(MessageError, match="is not one of offline, ok, online, unhealthy, unknown"):
        m.build_state_update(state)


@pytest.mark.parametrize("state", sorted(m.DEVICE_STATES))
def test_build_state_accepts_allow_list(state):
    assert orjson.loads(m.build_state_update(state))["state"] == state


@pytest.mark.parametrize("ts", [-1, 1.5, True, "1714000000000", 2**63])
def test_build_refuses_bad_timestamps(ts):
    with pytest.raises(MessageError, match="is not a non-negative int64 of ms"):
        m.build_twin_report({"p": ("1", "int")}, timestamp=ts)


def test_build_refuses_bad_event_id_codes_and_versions():
    with pytest.raises(MessageError, match="event_id 5 is not a string"):
        m.build_twin_get(5)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="error code 99 is not an HTTP-style status"):
        m.build_error_result(99, "x")
    with pytest.raises(MessageError, match="versions belong to cloud syncs"):
        m.build_twin_update({"p": MsgTwin(actual=TwinValue("1"), actual_version=TwinVersion(1, 1))})
    with pytest.raises(ValueConversionError, match="not a string"):
        m.check_twin_value(5)


def test_value_conversion_error_is_not_an_event_bus_error():
    # Bad values are the caller's data problem, not a broken link.
    assert not issubclass(ValueConversionError, EventBusError)
    assert issubclass(MessageError, EventBusError)


# --- strict parsing -------------------------------------------------------------------------------

ALL_PARSERS = [
    m.parse_twin_update,
    m.parse_twin_update_result,
    m.parse_twin_delta,
    m.parse_twin_document,
    m.parse_twin_get,
    m.parse_twin_get_result,
    m.parse_state_update,
    m.parse_state_update_result,
    m.parse_membership_get,
    m.parse_membership_get_result,
    m.parse_membership_updated,
    m.parse_device_updated,
]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b'{"event_id":"x"', "invalid JSON"),
        (b"NaN", "invalid JSON"),
        (b'{"timestamp":NaN}', "invalid JSON"),
        (b'{"timestamp":Infinity}', "invalid JSON"),
        (b'{"timestamp":-Infinity}', "invalid JSON"),
        (b'{"timestamp":1e309}', "invalid JSON"),
        (b'{"event_id":"\xff"}', "invalid JSON"),
        (b'{"event_id":"\\ud800"}', "invalid JSON"),
        (b"{}{}", "invalid JSON"),
        (b"[]", "expected a JSON object, got array"),
        (b'"x"', "expected a JSON object, got string"),
        (b"1", "expected a JSON object, got number"),
        (b"null", "expected a JSON object, got null"),
        (b"true", "expected a JSON object, got boolean"),
        (b'{"event_id":5}', "message.event_id: expected a string, got number"),
        (b'{"event_id":"","timestamp":"1714000000000"}', "message.timestamp: expected an integer"),
        (b'{"event_id":"","timestamp":1.5}', "message.timestamp: expected an integer"),
        (b'{"event_id":"","timestamp":1e3}', "message.timestamp: expected an integer"),
        (b'{"event_id":"","timestamp":true}', "message.timestamp: expected an integer"),
        (b'{"event_id":"","timestamp":9223372036854775808}', "out of int64 range"),
        (b'{"event_id":"","timestamp":99999999999999999999999}', "expected an integer"),
    ],
)
@pytest.mark.parametrize("parse", ALL_PARSERS, ids=lambda f: f.__name__)
def test_every_parser_refuses_bad_payloads(parse, payload, reason):
    with pytest.raises(MessageError, match=reason) as info:
        parse(payload)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("parse", ALL_PARSERS, ids=lambda f: f.__name__)
def test_size_is_checked_before_parsing(parse, monkeypatch):
    def boom(*_args, **_kwargs):
        raise AssertionError("orjson.loads must not see an oversize payload")

    big = b'{"event_id":"' + b"x" * (m.DEFAULT_MAX_PAYLOAD) + b'"}'
    monkeypatch.setattr(orjson, "loads", boom)
    with pytest.raises(MessageError, match=f"larger than {m.DEFAULT_MAX_PAYLOAD}"):
        parse(big)
    with pytest.raises(MessageError, match="larger than 10"):
        parse(b'{"event_id":""}', max_size=10)
    with pytest.raises(MessageError, match="larger than 10"):
        parse('{"event_id":""}', max_size=10)
    with pytest.raises(MessageError, match="larger than 10"):
        parse(memoryview(b'{"event_id":""}'), max_size=10)


def test_size_limit_is_inclusive_and_configurable():
    payload = b'{"event_id":"g-1"}'
    assert m.parse_twin_get(payload, max_size=len(payload)) == m.TwinGet("g-1")
    with pytest.raises(MessageError, match="larger than"):
        m.parse_twin_get(payload, max_size=len(payload) - 1)
    assert m.parse_twin_get(bytearray(payload)) == m.TwinGet("g-1")


def test_str_payload_with_lone_surrogate_is_refused():
    with pytest.raises(MessageError, match="not valid UTF-8"):
        m.parse_twin_get('{"event_id":"\ud800"}')


def test_non_payload_types_are_refused():
    with pytest.raises(MessageError, match="payload is int"):
        m.parse_twin_get(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", [17, 100, 1000, 5000])
def test_deep_nesting_is_refused(depth):
    payload = b'{"event_id":"","x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(MessageError, match=r"deeper than 16|invalid JSON"):
        m.parse_twin_get(payload)


def test_depth_limit_is_configurable_and_allows_real_messages():
    nested = b'{"event_id":"","x":[[[[1]]]]}'  # depth 5
    assert m.parse_twin_get(nested, max_depth=5).event_id == ""
    with pytest.raises(MessageError, match="deeper than 4"):
        m.parse_twin_get(nested, max_depth=4)


@pytest.mark.parametrize(
    ("parse", "payload", "reason"),
    [
        (m.parse_twin_update, b'{"event_id":""}', "twin is missing"),
        (m.parse_twin_update, b'{"event_id":"","twin":null}', "twin is missing"),
        (m.parse_twin_update, b'{"twin":[]}', "twin: expected an object, got array"),
        (m.parse_twin_update, b'{"twin":{"a b":{}}}', "bad twin name"),
        (m.parse_twin_update, b'{"twin":{"t":{"actual":{}}}}', "twin.t.actual: value is missing"),
        (
            m.parse_twin_update,
            b'{"twin":{"t":{"expected":{"value":null}}}}',
            "twin.t.expected: value is missing",
        ),
        (m.parse_twin_update, b'{"twin":{"t":{"actual":{"value":1}}}}', "expected a string"),
        (m.parse_twin_update, b'{"twin":{"t":{"actual":{"value":"a b"}}}}', "not a valid twin"),
        (
            m.parse_twin_update,
            b'{"twin":{"t":{"actual":{"value":"1","metadata":{"timestamp":"5"}}}}}',
            "twin.t.actual.metadata.timestamp: expected an integer",
        ),
        (m.parse_twin_update, b'{"twin":{"t":{"optional":"yes"}}}', "expected true or false"),
        (m.parse_twin_update, b'{"twin":{"t":{"metadata":{"type":5}}}}', "expected a string"),
        (m.parse_twin_update, b'{"twin":{"t":{"metadata":[]}}}', "expected an object"),
        (m.parse_twin_update, b'{"twin":{"t":5}}', "twin.t: expected an object, got number"),
        (
            m.parse_twin_update_result,
            b'{"event_id":"","timestamp":1}',
            "neither twin nor code",
        ),
        (m.parse_twin_update_result, b'{"code":"400"}', "message.code: expected an integer"),
        (m.parse_twin_update_result, b'{"code":700}', "not an HTTP-style status"),
        (m.parse_twin_update_result, b'{"code":false,"twin":{}}', "expected an integer"),
        (m.parse_twin_update_result, b'{"code":400,"reason":5}', "message.reason: expected a"),
        (m.parse_twin_delta, b'{"twin":{}}', "delta: expected an object, got null"),
        (m.parse_twin_delta, b'{"delta":{"s":1}}', "delta.s: expected a string"),
        (m.parse_twin_delta, b'{"delta":{"a b":"1"}}', "bad twin name"),
        (
            m.parse_twin_delta,
            b'{"delta":{"s":"' + b"x" * 513 + b'"}}',
            "delta.s: longer than 512",
        ),
        (
            m.parse_twin_delta,
            b'{"delta":{},"twin":{"s":{"expected_version":{"cloud":"1"}}}}',
            "twin.s.expected_version.cloud: expected an integer",
        ),
        (m.parse_twin_document, b'{"twin":{"s":{"last":5}}}', "twin.s.last: expected an object"),
        (m.parse_twin_document, b'{"twin":{"s":[]}}', "twin.s: expected an object"),
        (m.parse_twin_get_result, b'{"twin":{"s":"x"}}', "twin.s: expected an object"),
        (m.parse_state_update, b'{"event_id":""}', "state is missing"),
        (m.parse_state_update, b'{"state":1}', "message.state: expected a string"),
        (m.parse_state_update_result, b'{"event_id":""}', "device: expected an object"),
        (m.parse_state_update_result, b'{"device":{"state":"ok"}}', "device.name: expected a"),
        (
            m.parse_state_update_result,
            b'{"device":{"name":"a","lastOnlineTime":5}}',
            "device.lastOnlineTime: expected a string",
        ),
        (m.parse_membership_get_result, b'{"devices":{}}', "devices: expected an array"),
        (m.parse_membership_get_result, b'{"devices":[5]}', "devices\\[0\\]: expected an object"),
        (m.parse_membership_get_result, b'{"devices":[{"name":"a"}]}', "devices\\[0\\].id"),
        (
            m.parse_membership_get_result,
            b'{"devices":[{"id":"a","name":"a","last_online":1}]}',
            "devices\\[0\\].last_online: expected a string",
        ),
        (
            m.parse_membership_updated,
            b'{"added_devices":[{"id":"a","name":"a","attributes":[]}]}',
            "added_devices\\[0\\].attributes: expected an object",
        ),
        (m.parse_membership_updated, b'{"removed_devices":"a"}', "removed_devices: expected an"),
        (
            m.parse_device_updated,
            b'{"attributes":{"v":{"value":1}}}',
            "attributes.v.value: expected a string",
        ),
    ],
)
def test_parse_refuses_wrong_shapes(parse, payload, reason):
    with pytest.raises(MessageError, match=reason) as info:
        parse(payload)
    assert "\n" not in str(info.value)


def test_unknown_keys_are_ignored():
    parsed = m.parse_twin_get_result(
        b'{"event_id":"g","timestamp":1,"twin":{},"future":{"a":[1,2]},"code":0}'
    )
    assert parsed == m.TwinGetResult("g", 1, {})


def test_edgecore_result_value_may_lack_value_key():
    # EdgeCore's replies may carry a value object without "value"; only requests must not.
    parsed = m.parse_twin_get_result(b'{"twin":{"t":{"actual":{"metadata":{"timestamp":3}}}}}')
    assert parsed.twin["t"] == MsgTwin(actual=TwinValue(None, 3))


# --- properties -----------------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_keys = st.sampled_from(
    [
        "event_id",
        "timestamp",
        "twin",
        "delta",
        "state",
        "State",
        "device",
        "devices",
        "added_devices",
        "removed_devices",
        "attributes",
        "code",
        "reason",
        "expected",
        "actual",
        "optional",
        "metadata",
        "type",
        "value",
        "last",
        "current",
        "id",
        "name",
        "temperature",
        "a b",
        "lastOnlineTime",
        "last_online",
        "cloud",
        "edge",
        "expected_version",
    ]
)
_json = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=30,
)


def _refusals(data: bytes) -> list[str]:
    """Run every parser; anything but MessageError propagates and fails the test."""
    reasons = []
    for parse in ALL_PARSERS:
        try:
            parse(data)
        except MessageError as exc:
            reasons.append(str(exc))
    return reasons


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parsers_raise_only_message_error_on_arbitrary_bytes(data):
    assert all("\n" not in reason for reason in _refusals(data))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _json, max_size=6))
def test_parsers_raise_only_message_error_on_arbitrary_json_objects(obj):
    data = json.dumps(obj).encode()  # stdlib: also writes integers beyond 64 bits
    assert all("\n" not in reason for reason in _refusals(data))


_twin_value = st.from_regex(r"[a-zA-Z0-9_.,:/@#-]{1,40}", fullmatch=True)
_twin_key = st.from_regex(r"[a-zA-Z0-9_.,:/@#-]{1,20}", fullmatch=True)


@given(
    st.dictionaries(
        _twin_key,
        st.one_of(
            st.tuples(_twin_value, st.just("string")),
            st.integers(-(2**63), 2**63 - 1).map(lambda i: (str(i), "int")),
            st.floats(allow_nan=False, allow_infinity=False).map(
                lambda f: (repr(f).replace("e+", "e"), "float")
            ),
            st.booleans().map(lambda b: (str(b).lower(), "boolean")),
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(0, 2**63 - 1),
)
def test_report_round_trip(values, ts):
    parsed = m.parse_twin_update(m.build_twin_report(values, event_id="r", timestamp=ts))
    assert parsed.event_id == "r"
    assert parsed.timestamp == ts
    assert {k: (t.actual.value, t.type) for k, t in parsed.twin.items()} == values


@given(st.floats(allow_nan=False))
def test_float_check_accepts_every_shortest_python_float_without_plus(x):
    text = repr(x).replace("e+", "e")
    if math.isinf(x):
        text = "Inf" if x > 0 else "-Inf"
    assert m.check_twin_value(text, "float") == text


def test_checked_report_builder_gives_the_same_bytes_as_the_checking_one() -> None:
    values = {"temperature": ("23.5", "float"), "on": ("true", "boolean"), "n": ("-4", "int")}
    fast = m.build_checked_twin_report(values, event_id="e-1", timestamp=1714000000000)
    slow = m.build_twin_report(values, event_id="e-1", timestamp=1714000000000)
    assert fast == slow
    m.parse_twin_update(fast)  # and EdgeCore's own rules accept it


_TWIN_TEXT = st.text(alphabet="abcXYZ019-_.,:/@#", min_size=1, max_size=20)


@given(
    st.dictionaries(_TWIN_TEXT, st.tuples(_TWIN_TEXT, st.sampled_from(sorted(m.TWIN_TYPES)))),
    st.text(max_size=30),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_report_written_as_text_is_the_orjson_encoding(
    values: dict[str, tuple[str, str]], event_id: str, timestamp: int
) -> None:
    twins = [TwinRow(name, value, type_) for name, (value, type_) in values.items()]
    text = m.build_checked_twin_report_of(twins, event_id=event_id, timestamp=timestamp)
    assert text == m.build_checked_twin_report(values, event_id=event_id, timestamp=timestamp)
    assert orjson.loads(text)["event_id"] == event_id  # quotes and controls are escaped


@dataclass(frozen=True)
class TwinRow:
    name: str
    value: str
    type: str
