"""The EdgeCore emulator against a real mosquitto, driven with paho as a mapper or app would.

Absence of a reply is asserted with a barrier, never a sleep: the emulator handles messages in
order and publishes its replies in order on one connection, so once the reply to a later request
has arrived, any reply to an earlier one would have arrived before it.
"""

from __future__ import annotations

import re

import orjson
import pytest
from helpers.edgecore_emulator import EdgeCoreEmulator, Report
from helpers.mosquitto import Mosquitto
from helpers.mqtt import AsyncMqttClient, Message

from mapper_sdk.bus import messages as m
from mapper_sdk.bus import topics as t
from mapper_sdk.bus.messages import MsgTwin, TwinValue

pytestmark = pytest.mark.integration

NS, NAME = "default", "thermo-1"
DEVICE = f"{NS}/{NAME}"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
async def emulator(mosquitto: Mosquitto):
    emu = EdgeCoreEmulator(mosquitto.host, mosquitto.port, node="edge-1", devices=[DEVICE])
    await emu.start()
    yield emu
    await emu.stop()
    assert emu.errors == []


@pytest.fixture
async def app(mosquitto: Mosquitto, emulator: EdgeCoreEmulator):
    """A paho client in the role of a mapper or edge app, listening to everything EdgeCore
    publishes."""
    client = AsyncMqttClient(mosquitto.host, mosquitto.port)
    await client.connect()
    await client.subscribe("$hw/events/device/#", "$hw/events/node/#")
    yield client
    await client.disconnect()
    assert client.errors == []


def ev(event_id: str):
    return lambda msg: orjson.loads(msg.payload).get("event_id") == event_id


async def barrier(app: AsyncMqttClient, tag: str) -> None:
    """Wait until the emulator has handled everything published before this call."""
    await app.publish(t.twin_get(NS, NAME), m.build_twin_get(f"barrier-{tag}"))
    await app.wait_for(t.twin_get_result(NS, NAME), ev(f"barrier-{tag}"))


def payload(msg: Message) -> dict:
    return orjson.loads(msg.payload)


async def test_report_gets_result_and_document(app, emulator):
    await app.publish(
        t.twin_update(NS, NAME),
        m.build_twin_report({"temperature": ("23.5", "float")}, event_id="r-1"),
    )
    result = m.parse_twin_update_result(
        (await app.wait_for(t.twin_update_result(NS, NAME))).payload
    )
    assert result.ok
    assert result.event_id == "r-1"
    twin = result.twin["temperature"]
    assert twin is not None
    assert twin.actual is not None
    assert twin.actual.value == "23.5"
    assert type(twin.actual.timestamp) is int
    assert (twin.optional, twin.type, twin.expected) == (True, "float", None)

    doc = m.parse_twin_document((await app.wait_for(t.twin_update_document(NS, NAME))).payload)
    assert doc.event_id == "r-1"
    assert doc.twin["temperature"].last is None
    assert doc.twin["temperature"].current == twin

    assert emulator.reports == [Report(DEVICE, "temperature", "23.5", "float")]
    assert emulator.twins(NS, NAME)["temperature"].actual.value == "23.5"  # type: ignore[union-attr]

    # Rule 6: the same value again is a change again; the document now has a "last" image.
    await app.publish(
        t.twin_update(NS, NAME),
        m.build_twin_report({"temperature": ("23.5", "float")}, event_id="r-2"),
    )
    doc2 = m.parse_twin_document(
        (await app.wait_for(t.twin_update_document(NS, NAME), ev("r-2"))).payload
    )
    assert doc2.twin["temperature"].last == twin
    assert emulator.reported(DEVICE) == [("temperature", "23.5"), ("temperature", "23.5")]


async def test_unknown_device_gets_404_on_its_own_topic(app, emulator):
    await app.publish(
        t.twin_update(NS, "ghost"), m.build_twin_report({"t": ("1", "int")}, event_id="u-1")
    )
    msg = await app.wait_for(t.twin_update_result(NS, "ghost"))
    result = m.parse_twin_update_result(msg.payload)
    assert (result.code, result.event_id) == (404, "u-1")
    assert "not existed" in result.reason
    assert emulator.reports == []


async def test_bad_value_gets_400_on_the_empty_id_topic(app, emulator):
    bad = b'{"event_id":"b-1","timestamp":1,"twin":{"t":{"actual":{"value":"a b"}}}}'
    await app.publish(t.twin_update(NS, NAME), bad)
    msg = await app.wait_for(t.TWIN_PARSE_ERROR_TOPIC)
    result = m.parse_twin_update_result(msg.payload)
    assert (result.code, result.event_id) == (400, "")  # event_id is not echoed (§3.5a.1)
    assert result.reason.startswith("The value of twin must only include")
    # Parsing comes before the device lookup: an unknown device also gets the 400 there.
    await app.publish(t.twin_update(NS, "ghost"), bad)
    await app.wait_for(t.TWIN_PARSE_ERROR_TOPIC)
    await barrier(app, "bad-value")
    assert app.drain(t.device_filter(t.DeviceSuffix.TWIN_UPDATE_RESULT)) == []
    assert emulator.reports == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "Unmarshal update request body failed"),
        (b'{"event_id":"x","timestamp":"1","twin":{}}', "Unmarshal update request body failed"),
        (b'{"event_id":"x","timestamp":1}', "key:twin does not exist"),
        (b'{"twin":{"a b":{"actual":{"value":"1"}}}}', "The key of twin must only include"),
        (
            b'{"twin":{"t":{"actual":{"value":"' + b"x" * 513 + b'"}}}}',
            "The value of twin must only include",
        ),
        (
            b'{"twin":{"t":{"actual":{"value":"1","metadata":{"timestamp":"5"}}}}}',
            "Unmarshal update request body failed",
        ),
    ],
)
async def test_parse_errors_go_to_the_empty_id_topic(app, emulator, body, reason):
    await app.publish(t.twin_update(NS, NAME), body)
    result = m.parse_twin_update_result((await app.wait_for(t.TWIN_PARSE_ERROR_TOPIC)).payload)
    assert (result.code, result.event_id) == (400, "")
    assert reason in result.reason


async def test_exactly_512_characters_is_accepted(app, emulator):
    await app.publish(
        t.twin_update(NS, NAME), m.build_twin_report({"s": ("x" * 512, "string")}, event_id="l")
    )
    result = m.parse_twin_update_result(
        (await app.wait_for(t.twin_update_result(NS, NAME))).payload
    )
    assert result.ok


@pytest.mark.parametrize(
    ("twin", "reason"),
    [
        ({"t": {"actual": {"value": "1.5"}, "metadata": {"type": "double"}}}, "not allowed double"),
        ({"t": {"actual": {"value": "1"}, "metadata": {"type": "INT"}}}, "not allowed INT"),
        ({"t": {"actual": {"value": "abc"}, "metadata": {"type": "float"}}}, "not float"),
        ({"t": {"actual": {"value": ""}, "metadata": {"type": "float"}}}, "not float"),
        ({"t": {"actual": {"value": "1.5"}, "metadata": {"type": "int"}}}, "not int or integer"),
        ({"t": {"actual": {"value": "yes"}, "metadata": {"type": "boolean"}}}, "true or false"),
    ],
)
async def test_type_errors_get_400_on_the_device_topic_and_apply_nothing(
    app, emulator, twin, reason
):
    # A good twin in the same message is not applied either (§3.5a.3).
    body = {"event_id": "ty", "timestamp": 1, "twin": {"good": {"actual": {"value": "1"}}, **twin}}
    await app.publish(t.twin_update(NS, NAME), orjson.dumps(body))
    msg = await app.wait_for(t.twin_update_result(NS, NAME))
    raw = payload(msg)
    assert "twin" not in raw
    result = m.parse_twin_update_result(msg.payload)
    assert (result.code, result.event_id) == (400, "ty")
    assert reason in result.reason
    assert emulator.twins(NS, NAME) == {}
    assert emulator.reports == []


async def test_stored_type_is_used_for_later_reports(app, emulator):
    await app.publish(t.twin_update(NS, NAME), m.build_twin_report({"n": ("1", "int")}))
    await app.wait_for(t.twin_update_result(NS, NAME))
    # No metadata this time: EdgeCore checks against the stored type "int".
    await app.publish(
        t.twin_update(NS, NAME),
        b'{"event_id":"s-2","timestamp":1,"twin":{"n":{"actual":{"value":"x"}}}}',
    )
    result = m.parse_twin_update_result(
        (await app.wait_for(t.twin_update_result(NS, NAME), ev("s-2"))).payload
    )
    assert (result.code, result.reason) == (400, "the value is not int or integer")


async def test_expected_triggers_delta_until_actual_matches(app, emulator):
    await app.publish(t.twin_update(NS, NAME), m.build_twin_report({"switch": ("off", "string")}))
    await app.wait_for(t.twin_update_document(NS, NAME))
    assert app.drain(t.device_filter(t.DeviceSuffix.TWIN_UPDATE_DELTA)) == []

    emulator.set_expected(NS, NAME, "switch", "on", event_id="app-42")
    delta = m.parse_twin_delta((await app.wait_for(t.twin_update_delta(NS, NAME))).payload)
    assert delta.delta == {"switch": "on"}
    assert UUID.fullmatch(delta.event_id)  # fresh UUID, not the app's event id (§3.5a.5)
    tw = delta.twin["switch"]
    assert (tw.expected.value, tw.actual.value) == ("on", "off")  # type: ignore[union-attr]
    assert (tw.optional, tw.type) == (True, "string")
    assert emulator.expected_writes == [Report(DEVICE, "switch", "on", "string")]

    # Another twin's report repeats the delta while expected != actual (§3.5a.6).
    await app.publish(t.twin_update(NS, NAME), m.build_twin_report({"other": ("1", "int")}))
    delta2 = m.parse_twin_delta((await app.wait_for(t.twin_update_delta(NS, NAME))).payload)
    assert delta2.delta == {"switch": "on"}
    assert delta2.event_id != delta.event_id

    # Once actual equals expected, no more deltas.
    await app.publish(
        t.twin_update(NS, NAME), m.build_twin_report({"switch": ("on", "string")}, event_id="ok")
    )
    await app.wait_for(t.twin_update_document(NS, NAME), ev("ok"))
    await barrier(app, "delta-stops")
    assert app.drain(t.device_filter(t.DeviceSuffix.TWIN_UPDATE_DELTA)) == []


async def test_app_expected_over_mqtt_gets_success_result_shape(app, emulator):
    # §3.5 example: only the keys of the request appear in the result, without versions.
    await app.publish(
        t.twin_update(NS, NAME),
        m.build_twin_update(
            {"switch": MsgTwin(expected=TwinValue("on"), type="string")}, event_id="app-42"
        ),
    )
    raw = payload(await app.wait_for(t.twin_update_result(NS, NAME)))
    assert raw["event_id"] == "app-42"
    sw = raw["twin"]["switch"]
    assert set(sw) == {"expected", "optional", "metadata"}
    assert sw["expected"]["value"] == "on"
    assert type(sw["expected"]["metadata"]["timestamp"]) is int
    assert sw["metadata"] == {"type": "string"}
    # No actual yet: expected differs from it, so a delta follows.
    delta = m.parse_twin_delta((await app.wait_for(t.twin_update_delta(NS, NAME))).payload)
    assert delta.delta == {"switch": "on"}
    assert delta.twin["switch"].actual is None


async def test_twin_get(app, emulator):
    await app.publish(t.twin_get(NS, NAME), m.build_twin_get("g-0"))
    empty = m.parse_twin_get_result((await app.wait_for(t.twin_get_result(NS, NAME))).payload)
    assert (empty.ok, empty.event_id, dict(empty.twin)) == (True, "g-0", {})  # lazily created

    await app.publish(t.twin_update(NS, NAME), m.build_twin_report({"temperature": ("2", "float")}))
    await app.wait_for(t.twin_update_result(NS, NAME))
    await app.publish(t.twin_get(NS, NAME), m.build_twin_get("g-1"))
    got = m.parse_twin_get_result((await app.wait_for(t.twin_get_result(NS, NAME))).payload)
    assert got.event_id == "g-1"
    assert got.twin["temperature"].actual.value == "2"  # type: ignore[union-attr]

    await app.publish(t.twin_get(NS, "ghost"), m.build_twin_get("g-2"))
    missing = m.parse_twin_get_result((await app.wait_for(t.twin_get_result(NS, "ghost"))).payload)
    assert (missing.code, missing.event_id) == (404, "g-2")
    assert missing.reason == "Device default/ghost not found while getting twin"

    await app.publish(t.twin_get(NS, NAME), b"{bad")
    bad = m.parse_twin_get_result((await app.wait_for(t.twin_get_result(NS, NAME))).payload)
    assert (bad.code, bad.event_id) == (400, "")


async def test_state_update(app, emulator):
    await app.publish(t.state_update(NS, NAME), m.build_state_update("online"))
    res = m.parse_state_update_result((await app.wait_for(t.state_update_result(NS, NAME))).payload)
    assert (res.name, res.state) == (NAME, "online")
    assert UUID.fullmatch(res.event_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", res.last_online_time or "")

    # Stored as sent, upper case included; no lastOnlineTime for offline (§3.5a.7).
    await app.publish(t.state_update(NS, NAME), b'{"event_id":"","timestamp":1,"state":"OFFLINE"}')
    raw = payload(await app.wait_for(t.state_update_result(NS, NAME)))
    assert raw["device"] == {"name": NAME, "state": "OFFLINE"}
    assert emulator.state(NS, NAME) == "OFFLINE"

    # Not in the allow-list, unknown device, bad JSON: silently dropped.
    await app.publish(t.state_update(NS, NAME), b'{"state":"disconnected"}')
    await app.publish(t.state_update(NS, "ghost"), m.build_state_update("online"))
    await app.publish(t.state_update(NS, NAME), b"{oops")
    await barrier(app, "state")
    assert app.drain(t.device_filter(t.DeviceSuffix.STATE_UPDATE_RESULT)) == []
    assert emulator.states == [(DEVICE, "online"), (DEVICE, "OFFLINE")]


async def test_membership_get(app, emulator):
    emulator.add_device("lab", "meter-2", description="power meter")
    # Asking for another node still answers on the emulator's own node (§3.5a.8).
    await app.publish(t.membership_get("other-node"), m.build_membership_get("m-1"))
    msg = await app.wait_for(t.node_filter(t.NodeSuffix.MEMBERSHIP_GET_RESULT))
    assert msg.topic == t.membership_get_result("edge-1")
    res = m.parse_membership_get_result(msg.payload)
    assert res.event_id == "m-1"
    assert {(d.id, d.name, d.description) for d in res.devices} == {
        (DEVICE, NAME, ""),
        ("lab/meter-2", "meter-2", "power meter"),
    }
    raw = payload(msg)
    thermo = next(d for d in raw["devices"] if d["id"] == DEVICE)
    assert thermo == {"id": DEVICE, "name": NAME}  # empty fields omitted

    emulator.remove_device(NS, NAME)
    emulator.remove_device("lab", "meter-2")
    await app.publish(t.membership_get("edge-1"), m.build_membership_get("m-2"))
    empty = await app.wait_for(t.membership_get_result("edge-1"), ev("m-2"))
    assert payload(empty)["devices"] == []

    await app.publish(t.membership_get("edge-9"), b"[")
    bad = await app.wait_for(t.membership_get_result("edge-9"))
    assert (payload(bad)["code"], payload(bad)["event_id"]) == (400, "")


async def test_membership_updated_is_published_on_add_and_remove(app, emulator):
    emulator.add_device("lab", "meter-2", description="power meter", notify=True)
    added = m.parse_membership_updated((await app.wait_for(t.membership_updated("edge-1"))).payload)
    assert added.removed_devices is None
    assert added.added_devices == (
        m.MembershipDevice(id="lab/meter-2", name="meter-2", description="power meter"),
    )
    emulator.remove_device("lab", "meter-2", notify=True)
    removed = m.parse_membership_updated(
        (await app.wait_for(t.membership_updated("edge-1"))).payload
    )
    assert added.event_id != removed.event_id
    assert removed.added_devices is None
    assert [d.id for d in removed.removed_devices or ()] == ["lab/meter-2"]


async def test_null_deletes_optional_twin(app, emulator):
    await app.publish(t.twin_update(NS, NAME), m.build_twin_report({"t": ("1", "int")}))
    await app.wait_for(t.twin_update_document(NS, NAME))
    await app.publish(t.twin_update(NS, NAME), m.build_twin_update({"t": None}, event_id="del"))
    result = payload(await app.wait_for(t.twin_update_result(NS, NAME), ev("del")))
    assert result["twin"] == {"t": None}
    doc = m.parse_twin_document(
        (await app.wait_for(t.twin_update_document(NS, NAME), ev("del"))).payload
    )
    assert doc.twin["t"].current is None
    assert doc.twin["t"].last is not None
    assert emulator.twins(NS, NAME) == {}


async def test_null_on_non_optional_twin_is_a_noop(app, emulator):
    body = b'{"event_id":"c","twin":{"t":{"actual":{"value":"1"},"optional":false}}}'
    await app.publish(t.twin_update(NS, NAME), body)
    await app.wait_for(t.twin_update_result(NS, NAME), ev("c"))
    await app.publish(t.twin_update(NS, NAME), m.build_twin_update({"t": None}, event_id="nd"))
    result = payload(await app.wait_for(t.twin_update_result(NS, NAME), ev("nd")))
    assert result["twin"] == {}
    assert "t" in emulator.twins(NS, NAME)


async def test_value_without_value_key_is_a_crash_trigger(app, emulator):
    # §3.5a.10: the real twin module panics and stops answering twin messages.
    await app.publish(t.twin_update(NS, NAME), b'{"event_id":"x","twin":{"t":{"actual":{}}}}')
    await app.publish(t.twin_get(NS, NAME), m.build_twin_get("after-crash"))
    # state/update is handled outside the twin module, so it still answers: use it as barrier.
    await app.publish(t.state_update(NS, NAME), m.build_state_update("online"))
    await app.wait_for(t.state_update_result(NS, NAME))
    assert len(emulator.crash_triggers) == 1
    assert emulator.crashed
    assert app.drain(t.device_filter(t.DeviceSuffix.TWIN_UPDATE_RESULT)) == []
    assert app.drain(t.device_filter(t.DeviceSuffix.TWIN_GET_RESULT)) == []
    emulator.recover()
    await barrier(app, "recovered")


async def test_legacy_single_segment_topics_are_ignored(app, emulator):
    legacy = t.twin_update(None, NAME, t.IdStyle.NAME_ONLY)
    await app.publish(legacy, m.build_twin_report({"t": ("1", "int")}))
    await barrier(app, "legacy")
    assert app.drain(t.device_filter(t.DeviceSuffix.TWIN_UPDATE_RESULT)) == []
    assert app.drain(t.TWIN_PARSE_ERROR_TOPIC) == []
    assert emulator.reports == []


async def test_legacy_id_style_emulation(mosquitto):
    async with (
        EdgeCoreEmulator(
            mosquitto.host, mosquitto.port, devices=[NAME], id_style=t.IdStyle.NAME_ONLY
        ) as emu,
        AsyncMqttClient(mosquitto.host, mosquitto.port) as client,
    ):
        style = t.IdStyle.NAME_ONLY
        await client.subscribe(t.twin_update_result(None, NAME, style))
        await client.publish(
            t.twin_update(None, NAME, style), m.build_twin_report({"t": ("1", "int")})
        )
        result = m.parse_twin_update_result(
            (await client.wait_for(t.twin_update_result(None, NAME, style))).payload
        )
        assert result.ok
        assert emu.reports == [Report(NAME, "t", "1", "int")]


async def test_emulator_uses_qos1_and_no_retain(app, emulator):
    await app.publish(t.twin_update(NS, NAME), m.build_twin_report({"t": ("1", "int")}))
    msg = await app.wait_for(t.twin_update_result(NS, NAME))
    assert (msg.qos, msg.retain) == (1, False)


async def test_emulator_reconnects_after_broker_restart(mosquitto):
    async with EdgeCoreEmulator(mosquitto.host, mosquitto.port, devices=[DEVICE]) as emu:
        mosquitto.restart()
        await emu.client.wait_until(
            lambda: emu.client.connect_count >= 2 and emu.client.session_ready.is_set(),
            timeout=15,
        )
        async with AsyncMqttClient(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(t.twin_update_result(NS, NAME))
            await client.publish(t.twin_update(NS, NAME), m.build_twin_report({"t": ("1", "int")}))
            assert m.parse_twin_update_result(
                (await client.wait_for(t.twin_update_result(NS, NAME))).payload
            ).ok
        assert emu.errors == []
