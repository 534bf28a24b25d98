"""Topics of the EdgeCore event bus (contract §3.1-§3.2): exact strings, strict parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from mapper_sdk.bus import topics as t
from mapper_sdk.bus.topics import DeviceSuffix, IdStyle, NodeSuffix, TopicError
from mapper_sdk.errors import EventBusError

NS = IdStyle.NAMESPACED
NAME = IdStyle.NAME_ONLY
DEV = "$hw/events/device"

# Every device topic of §3.2, for default/thermo-1, in both id styles.
DEVICE_TOPICS = [
    (t.twin_update, "twin/update"),
    (t.twin_update_result, "twin/update/result"),
    (t.twin_update_delta, "twin/update/delta"),
    (t.twin_update_document, "twin/update/document"),
    (t.twin_get, "twin/get"),
    (t.twin_get_result, "twin/get/result"),
    (t.state_update, "state/update"),
    (t.state_update_result, "state/update/result"),
    (t.device_updated, "updated"),
]


@pytest.mark.parametrize(("build", "suffix"), DEVICE_TOPICS)
def test_device_topics_namespaced(build, suffix):
    assert build("default", "thermo-1") == f"{DEV}/default/thermo-1/{suffix}"
    assert build("default", "thermo-1", NS) == f"{DEV}/default/thermo-1/{suffix}"
    assert build("default", "thermo-1", "namespaced") == f"{DEV}/default/thermo-1/{suffix}"


@pytest.mark.parametrize(("build", "suffix"), DEVICE_TOPICS)
def test_device_topics_name_only(build, suffix):
    assert build(None, "thermo-1", NAME) == f"{DEV}/thermo-1/{suffix}"
    # The namespace is ignored in the legacy style.
    assert build("default", "thermo-1", "name") == f"{DEV}/thermo-1/{suffix}"


@pytest.mark.parametrize(("build", "suffix"), DEVICE_TOPICS)
@pytest.mark.parametrize("style", [NS, NAME])
def test_device_topics_parse_back(build, suffix, style):
    topic = build("default", "thermo-1", style)
    parsed = t.parse_device_topic(topic, style)
    assert parsed == (("default" if style is NS else None), "thermo-1", DeviceSuffix(suffix))
    assert parsed.suffix == suffix
    assert t.device_topic(parsed.namespace, parsed.name, parsed.suffix, style) == topic


def test_contract_examples():
    # §3.5 names these topics literally.
    assert t.twin_update("default", "thermo-1") == "$hw/events/device/default/thermo-1/twin/update"
    assert t.membership_get("edge-1") == "$hw/events/node/edge-1/membership/get"
    assert t.membership_get_result("edge-1") == "$hw/events/node/edge-1/membership/get/result"
    assert t.membership_updated("edge-1") == "$hw/events/node/edge-1/membership/updated"
    assert t.device_updated("default", "thermo-1") == "$hw/events/device/default/thermo-1/updated"
    # §3.5a.9: the legacy single-segment form.
    assert t.twin_update(None, "thermo-1", NAME) == "$hw/events/device/thermo-1/twin/update"
    assert t.TWIN_PARSE_ERROR_TOPIC == "$hw/events/device//twin/update/result"


def test_data_update_topic():
    assert t.data_update("default", "thermo-1") == "$ke/events/device/default/thermo-1/data/update"
    assert t.data_update(None, "thermo-1", NAME) == "$ke/events/device/thermo-1/data/update"


@pytest.mark.parametrize(
    ("suffix", "build"),
    [
        ("membership/get", t.membership_get),
        ("membership/get/result", t.membership_get_result),
        ("membership/updated", t.membership_updated),
    ],
)
def test_node_topics_round_trip(suffix, build):
    topic = build("edge-1")
    assert topic == f"$hw/events/node/edge-1/{suffix}"
    assert t.parse_node_topic(topic) == ("edge-1", NodeSuffix(suffix))


def test_device_id_and_parse_device_id():
    assert t.device_id("default", "thermo-1") == "default/thermo-1"
    assert t.device_id(None, "thermo-1", NAME) == "thermo-1"
    assert t.parse_device_id("default/thermo-1") == ("default", "thermo-1")
    assert t.parse_device_id("thermo-1", NAME) == (None, "thermo-1")
    with pytest.raises(TopicError, match="no namespace"):
        t.parse_device_id("thermo-1")
    with pytest.raises(TopicError, match="DNS-1123"):
        t.parse_device_id("default/a/b")


def test_namespace_required_for_namespaced_ids():
    with pytest.raises(TopicError, match="namespace is required"):
        t.twin_update(None, "thermo-1")


@pytest.mark.parametrize(
    ("namespace", "name", "reason"),
    [
        ("default", "a/b", "device name 'a/b' is not a DNS-1123"),  # would add a level
        ("default", "+", "device name '\\+' is not a DNS-1123"),
        ("default", "#", "device name '#' is not a DNS-1123"),
        ("default", "a+b", "is not a DNS-1123"),
        ("default", "", "device name '' is not a DNS-1123"),
        ("default", "Thermo", "is not a DNS-1123"),  # upper case
        ("default", "-thermo", "is not a DNS-1123"),
        ("default", "thermo.", "is not a DNS-1123"),
        ("default", "a..b", "is not a DNS-1123"),
        ("default", "thermo\n", "is not a DNS-1123"),  # '$' would match before a newline
        ("default", "ther\x00mo", "is not a DNS-1123"),
        ("default", "a" * 254, "is not a DNS-1123"),
        ("a/b", "thermo", "namespace 'a/b' is not a DNS-1123 label"),
        ("+", "thermo", "namespace '\\+' is not a DNS-1123 label"),
        ("", "thermo", "namespace '' is not a DNS-1123 label"),
        ("kube.system", "thermo", "not a DNS-1123 label"),  # labels have no dots
        ("a" * 64, "thermo", "not a DNS-1123 label"),
    ],
)
def test_builders_refuse_names_that_could_inject_levels(namespace, name, reason):
    with pytest.raises(TopicError, match=reason):
        t.twin_update(namespace, name)


def test_long_but_valid_names_are_accepted():
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters
    assert len(name) == 253
    ns = "n" * 63
    topic = t.twin_update(ns, name)
    assert t.parse_device_topic(topic) == (ns, name, DeviceSuffix.TWIN_UPDATE)


def test_node_names_are_checked():
    with pytest.raises(TopicError, match="node name"):
        t.membership_get("edge/1")
    with pytest.raises(TopicError, match="node name"):
        t.membership_get("+")
    assert t.membership_get("edge-1.example.com").startswith("$hw/events/node/edge-1.example.com/")


def test_topic_error_is_an_event_bus_error():
    assert issubclass(TopicError, EventBusError)


@pytest.mark.parametrize(
    ("topic", "style", "reason"),
    [
        ("$hw/events/node/edge-1/membership/get", NS, "not a device topic"),
        ("hw/events/device/default/thermo-1/twin/update", NS, "not a device topic"),
        (t.TWIN_PARSE_ERROR_TOPIC, NS, "unknown suffix 'update/result'"),  # empty id
        (t.TWIN_PARSE_ERROR_TOPIC, NAME, "device name '' is not"),
        ("$hw/events/device//thermo-1/twin/update", NS, "namespace '' is not"),
        ("$hw/events/device/default//twin/update", NS, "device name '' is not"),
        ("$hw/events/device/+/+/twin/update", NS, "namespace '\\+' is not"),
        ("$hw/events/device/default/#", NS, "no suffix"),
        ("$hw/events/device/default/thermo-1/twin/+", NS, "unknown suffix 'twin/\\+'"),
        ("$hw/events/device/default/thermo-1/twin/update/", NS, "unknown suffix"),
        ("$hw/events/device/default/thermo-1/twin/cloud_updated", NS, "unknown suffix"),
        ("$hw/events/device/default/thermo-1/state/get", NS, "unknown suffix"),
        ("$hw/events/device/default/thermo-1", NS, "no suffix"),
        ("$hw/events/device/Default/thermo-1/twin/update", NS, "namespace 'Default'"),
        # A legacy topic read as namespaced: 'twin' would be the name, 'update' the suffix.
        ("$hw/events/device/thermo-1/twin/update", NS, "unknown suffix 'update'"),
        # A namespaced topic read as legacy: 'thermo-1/twin/update' is no suffix.
        ("$hw/events/device/default/thermo-1/twin/update", NAME, "unknown suffix"),
    ],
)
def test_parse_device_topic_rejections(topic, style, reason):
    with pytest.raises(TopicError, match=reason):
        t.parse_device_topic(topic, style)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("$hw/events/device/default/thermo-1/twin/get", "not a node topic"),
        ("$hw/events/node/edge-1", "no suffix"),
        ("$hw/events/node//membership/get", "node name '' is not"),
        ("$hw/events/node/+/membership/get", "node name '\\+' is not"),
        ("$hw/events/node/edge-1/membership/list", "unknown suffix"),
    ],
)
def test_parse_node_topic_rejections(topic, reason):
    with pytest.raises(TopicError, match=reason):
        t.parse_node_topic(topic)


def test_unknown_style_and_suffix():
    with pytest.raises(TopicError, match="unknown device id style"):
        t.twin_update("default", "thermo-1", "bogus")
    with pytest.raises(TopicError, match="unknown device topic suffix"):
        t.device_topic("default", "thermo-1", "twin/cloud_updated")
    with pytest.raises(TopicError, match="unknown node topic suffix"):
        t.node_topic("edge-1", "authInfo/get/result")


def test_mapper_subscriptions():
    subs = t.mapper_subscriptions("edge-1")
    assert subs == (
        "$hw/events/device/+/+/twin/update/result",
        "$hw/events/device/+/+/twin/update/delta",
        "$hw/events/device/+/+/twin/get/result",
        "$hw/events/device//twin/update/result",
        "$hw/events/node/edge-1/membership/get/result",
        "$hw/events/node/edge-1/membership/updated",
    )
    legacy = t.mapper_subscriptions("edge-1", NAME)
    assert legacy[0] == "$hw/events/device/+/twin/update/result"


@pytest.mark.parametrize("style", [NS, NAME])
def test_mapper_subscriptions_cover_what_edgecore_sends_and_nothing_it_reads(style):
    subs = t.mapper_subscriptions("edge-1", style)

    def covered(topic: str) -> bool:
        return any(t.topic_matches(f, topic) for f in subs)

    for build in (t.twin_update_result, t.twin_update_delta, t.twin_get_result):
        assert covered(build("default", "thermo-1", style))
    assert covered(t.TWIN_PARSE_ERROR_TOPIC)
    assert covered(t.membership_get_result("edge-1"))
    assert covered(t.membership_updated("edge-1"))
    # Our own publications must not come back to us.
    for build in (t.twin_update, t.twin_get, t.state_update):
        assert not covered(build("default", "thermo-1", style))
    assert not covered(t.membership_get("edge-1"))
    assert not covered(t.membership_updated("edge-2"))


def test_edgecore_subscriptions_and_loop_safety():
    subs = t.edgecore_subscriptions()
    assert subs == (
        "$hw/events/upload/#",
        "$hw/events/device/+/+/state/update",
        "$hw/events/device/+/+/twin/+",
        "$hw/events/node/+/membership/get",
        "SYS/dis/upload_records",
        "+/user/#",
    )
    assert "$hw/events/device/+/twin/+" in t.edgecore_subscriptions(NAME)

    def consumed(topic: str) -> bool:
        return any(t.topic_matches(f, topic) for f in subs)

    assert consumed(t.twin_update("default", "thermo-1"))
    assert consumed(t.twin_get("default", "thermo-1"))
    assert consumed(t.state_update("default", "thermo-1"))
    assert consumed(t.membership_get("edge-1"))
    # §3.1 loop safety: EdgeCore never re-consumes what it publishes.
    for build in (
        t.twin_update_result,
        t.twin_update_delta,
        t.twin_update_document,
        t.twin_get_result,
        t.state_update_result,
    ):
        assert not consumed(build("default", "thermo-1"))
    # §3.5a.9: a newer EdgeCore does not even see legacy single-segment topics.
    assert not consumed(t.twin_update(None, "thermo-1", NAME))


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a//c", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b/", False),
    ],
)
def test_topic_matches(topic_filter, topic, expected):
    assert t.topic_matches(topic_filter, topic) is expected


_level = st.sampled_from(["", "a", "b", "$x", "ab"])
_topics = st.lists(_level, min_size=1, max_size=5).map("/".join)
_filters = st.lists(st.sampled_from(["", "a", "b", "$x", "+"]), min_size=1, max_size=5).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"])
)


@given(_filters, _topics)
def test_topic_matches_agrees_with_paho(topic_filter, topic):
    assert t.topic_matches(topic_filter, topic) is topic_matches_sub(topic_filter, topic)


@given(st.text(max_size=120), st.sampled_from([NS, NAME]))
def test_parse_device_topic_only_raises_topic_error_and_is_canonical(text, style):
    for topic in (text, t.DEVICE_PREFIX + text):
        try:
            parsed = t.parse_device_topic(topic, style)
        except TopicError:
            continue
        # Whatever parses is exactly what the builder produces: no hidden levels, no wildcards.
        assert t.device_topic(parsed.namespace, parsed.name, parsed.suffix, style) == topic
        assert "+" not in topic
        assert "#" not in topic


@given(st.text(max_size=80), st.text(max_size=80))
def test_builders_never_produce_extra_levels(namespace, name):
    try:
        topic = t.twin_update(namespace, name)
    except TopicError:
        return
    assert topic.count("/") == t.twin_update("ns", "name").count("/")
    assert t.parse_device_topic(topic) == (namespace, name, DeviceSuffix.TWIN_UPDATE)
