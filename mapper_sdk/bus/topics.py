"""Topics of the EdgeCore MQTT event bus (contract §3.1-§3.2), built and parsed without I/O.

A device id on the bus is ``{namespace}/{name}`` since KubeEdge 1.16.2 (:attr:`IdStyle.NAMESPACED`,
the default) and the bare ``{name}`` before (:attr:`IdStyle.NAME_ONLY`). Every name that goes into a
topic is checked first: namespaces must be DNS-1123 labels, device and node names DNS-1123
subdomains, so no name can carry ``/``, ``+``, ``#``, NUL or an empty segment and add, remove or
wildcard a topic level.

Builders return the exact topic string, for example::

    >>> twin_update("default", "thermo-1")
    '$hw/events/device/default/thermo-1/twin/update'
    >>> twin_update(None, "thermo-1", IdStyle.NAME_ONLY)
    '$hw/events/device/thermo-1/twin/update'

and :func:`parse_device_topic` takes one apart again, refusing anything a builder could not have
produced. Bad names raise :class:`TopicError`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

from mapper_sdk.errors import EventBusError

__all__ = [
    "DEVICE_PREFIX",
    "LEGACY_DATA_PREFIX",
    "NODE_PREFIX",
    "TWIN_PARSE_ERROR_TOPIC",
    "DeviceSuffix",
    "DeviceTopic",
    "IdStyle",
    "NodeSuffix",
    "NodeTopic",
    "TopicError",
    "data_update",
    "device_filter",
    "device_id",
    "device_topic",
    "device_updated",
    "edgecore_subscriptions",
    "mapper_subscriptions",
    "membership_get",
    "membership_get_result",
    "membership_updated",
    "node_filter",
    "node_topic",
    "parse_device_id",
    "parse_device_topic",
    "parse_node_topic",
    "state_update",
    "state_update_result",
    "topic_matches",
    "twin_get",
    "twin_get_result",
    "twin_update",
    "twin_update_delta",
    "twin_update_document",
    "twin_update_result",
]

DEVICE_PREFIX = "$hw/events/device/"
NODE_PREFIX = "$hw/events/node/"
LEGACY_DATA_PREFIX = "$ke/events/device/"

#: Where EdgeCore publishes every error found while *parsing* a twin/update: bad JSON, a missing
#: ``twin`` key, a bad key or value, a string timestamp (contract §3.4 rule 7, §3.5a.1). The id
#: segment is empty, so neither ``+/+`` nor a device's own topic matches it: subscribe to it
#: explicitly. The ``event_id`` of such an error is always ``""``.
TWIN_PARSE_ERROR_TOPIC = "$hw/events/device//twin/update/result"

_MAX_TOPIC_BYTES = 65535  # MQTT limit on a topic name

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class TopicError(EventBusError):
    """A name cannot be put into a topic, or a topic is not one the event bus uses."""


class IdStyle(StrEnum):
    """How a device id appears in ``$hw/events/device/{id}/...`` topics."""

    NAMESPACED = "namespaced"
    """``{namespace}/{name}``: KubeEdge 1.16.2 and later (the default)."""
    NAME_ONLY = "name"
    """``{name}``: KubeEdge before 1.16.2. A newer EdgeCore silently ignores these topics."""


class DeviceSuffix(StrEnum):
    """What follows the device id in a device topic (contract §3.2)."""

    TWIN_UPDATE = "twin/update"
    TWIN_UPDATE_RESULT = "twin/update/result"
    TWIN_UPDATE_DELTA = "twin/update/delta"
    TWIN_UPDATE_DOCUMENT = "twin/update/document"
    TWIN_GET = "twin/get"
    TWIN_GET_RESULT = "twin/get/result"
    STATE_UPDATE = "state/update"
    STATE_UPDATE_RESULT = "state/update/result"
    UPDATED = "updated"


class NodeSuffix(StrEnum):
    """What follows the node name in a node topic (contract §3.2)."""

    MEMBERSHIP_GET = "membership/get"
    MEMBERSHIP_GET_RESULT = "membership/get/result"
    MEMBERSHIP_UPDATED = "membership/updated"


class DeviceTopic(NamedTuple):
    """A parsed device topic. ``namespace`` is ``None`` for :attr:`IdStyle.NAME_ONLY`."""

    namespace: str | None
    name: str
    suffix: DeviceSuffix


class NodeTopic(NamedTuple):
    """A parsed node topic."""

    node: str
    suffix: NodeSuffix


_DEVICE_SUFFIXES: dict[str, DeviceSuffix] = {s.value: s for s in DeviceSuffix}
_NODE_SUFFIXES: dict[str, NodeSuffix] = {s.value: s for s in NodeSuffix}


# --- name checks -------------------------------------------------------------------------------


def _check_namespace(namespace: object) -> str:
    if (
        not isinstance(namespace, str)
        or len(namespace) > 63
        or not _DNS1123_LABEL.fullmatch(namespace)
    ):
        raise TopicError(f"namespace {namespace!r} is not a DNS-1123 label")
    return namespace


def _check_subdomain(what: str, name: object) -> str:
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise TopicError(f"{what} {name!r} is not a DNS-1123 subdomain")
    return name


def _check_style(style: IdStyle | str) -> IdStyle:
    try:
        return IdStyle(style)
    except ValueError:
        raise TopicError(f"unknown device id style {style!r}") from None


def device_id(namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED) -> str:
    """The id of a device on the bus: ``ns/name`` or, for :attr:`IdStyle.NAME_ONLY`, ``name``.

    With ``NAMESPACED`` the namespace is required; with ``NAME_ONLY`` it is ignored (but must
    still be a valid namespace when given, so a typo is not silently dropped).
    """
    style = _check_style(style)
    _check_subdomain("device name", name)
    if style is IdStyle.NAMESPACED:
        if namespace is None:
            raise TopicError("a namespace is required for namespaced device ids")
        return f"{_check_namespace(namespace)}/{name}"
    if namespace is not None:
        _check_namespace(namespace)
    return name


def parse_device_id(
    value: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> tuple[str | None, str]:
    """Split a device id (as found in membership messages) into ``(namespace, name)``."""
    style = _check_style(style)
    if not isinstance(value, str):
        raise TopicError(f"device id {value!r} is not a string")
    if style is IdStyle.NAMESPACED:
        namespace, sep, name = value.partition("/")
        if not sep:
            raise TopicError(f"device id {value!r} has no namespace")
        return _check_namespace(namespace), _check_subdomain("device name", name)
    return None, _check_subdomain("device name", value)


# --- builders ----------------------------------------------------------------------------------


def device_topic(
    namespace: str | None,
    name: str,
    suffix: DeviceSuffix | str,
    style: IdStyle | str = IdStyle.NAMESPACED,
) -> str:
    """``$hw/events/device/{id}/{suffix}`` for one of the :class:`DeviceSuffix` values."""
    try:
        suffix = DeviceSuffix(suffix)
    except ValueError:
        raise TopicError(f"unknown device topic suffix {suffix!r}") from None
    return f"{DEVICE_PREFIX}{device_id(namespace, name, style)}/{suffix.value}"


def twin_update(namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED) -> str:
    """Mapper/app -> EdgeCore: report ``actual`` or set ``expected``."""
    return device_topic(namespace, name, DeviceSuffix.TWIN_UPDATE, style)


def twin_update_result(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """EdgeCore -> mapper/app: reply to a twin/update (errors found while parsing go to
    :data:`TWIN_PARSE_ERROR_TOPIC` instead)."""
    return device_topic(namespace, name, DeviceSuffix.TWIN_UPDATE_RESULT, style)


def twin_update_delta(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """EdgeCore -> mapper: twins whose ``expected`` differs from ``actual``."""
    return device_topic(namespace, name, DeviceSuffix.TWIN_UPDATE_DELTA, style)


def twin_update_document(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """EdgeCore -> apps: before/after images of each changed twin."""
    return device_topic(namespace, name, DeviceSuffix.TWIN_UPDATE_DOCUMENT, style)


def twin_get(namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED) -> str:
    """Mapper/app -> EdgeCore: ask for all twins of a device."""
    return device_topic(namespace, name, DeviceSuffix.TWIN_GET, style)


def twin_get_result(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """EdgeCore -> requester: the twins, or an error."""
    return device_topic(namespace, name, DeviceSuffix.TWIN_GET_RESULT, style)


def state_update(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """Mapper -> EdgeCore: the device's connection state."""
    return device_topic(namespace, name, DeviceSuffix.STATE_UPDATE, style)


def state_update_result(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """EdgeCore -> apps: the state was accepted."""
    return device_topic(namespace, name, DeviceSuffix.STATE_UPDATE_RESULT, style)


def device_updated(
    namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED
) -> str:
    """EdgeCore -> apps: legacy device attribute change."""
    return device_topic(namespace, name, DeviceSuffix.UPDATED, style)


def data_update(namespace: str | None, name: str, style: IdStyle | str = IdStyle.NAMESPACED) -> str:
    """Legacy mapper -> apps telemetry, ``$ke/events/device/{id}/data/update`` (not read by
    EdgeCore)."""
    return f"{LEGACY_DATA_PREFIX}{device_id(namespace, name, style)}/data/update"


def node_topic(node: str, suffix: NodeSuffix | str) -> str:
    """``$hw/events/node/{node}/{suffix}`` for one of the :class:`NodeSuffix` values."""
    try:
        suffix = NodeSuffix(suffix)
    except ValueError:
        raise TopicError(f"unknown node topic suffix {suffix!r}") from None
    return f"{NODE_PREFIX}{_check_subdomain('node name', node)}/{suffix.value}"


def membership_get(node: str) -> str:
    """Mapper/app -> EdgeCore: list the devices bound to ``node``."""
    return node_topic(node, NodeSuffix.MEMBERSHIP_GET)


def membership_get_result(node: str) -> str:
    """EdgeCore -> requester: the device list (always on EdgeCore's own node name)."""
    return node_topic(node, NodeSuffix.MEMBERSHIP_GET_RESULT)


def membership_updated(node: str) -> str:
    """EdgeCore -> mappers: devices were added to or removed from ``node``."""
    return node_topic(node, NodeSuffix.MEMBERSHIP_UPDATED)


# --- subscription filters ----------------------------------------------------------------------


def device_filter(suffix: DeviceSuffix | str, style: IdStyle | str = IdStyle.NAMESPACED) -> str:
    """A filter matching ``suffix`` for every device: ``$hw/events/device/+/+/{suffix}``
    (one ``+`` for :attr:`IdStyle.NAME_ONLY`)."""
    style = _check_style(style)
    try:
        suffix = DeviceSuffix(suffix)
    except ValueError:
        raise TopicError(f"unknown device topic suffix {suffix!r}") from None
    wildcard = "+/+" if style is IdStyle.NAMESPACED else "+"
    return f"{DEVICE_PREFIX}{wildcard}/{suffix.value}"


def node_filter(suffix: NodeSuffix | str) -> str:
    """A filter matching ``suffix`` for every node: ``$hw/events/node/+/{suffix}``."""
    try:
        suffix = NodeSuffix(suffix)
    except ValueError:
        raise TopicError(f"unknown node topic suffix {suffix!r}") from None
    return f"{NODE_PREFIX}+/{suffix.value}"


def mapper_subscriptions(node: str, style: IdStyle | str = IdStyle.NAMESPACED) -> tuple[str, ...]:
    """Everything a mapper subscribes to: the results, deltas and get results of all its devices
    (``+`` wildcards; the runtime drops devices it does not own after :func:`parse_device_topic`),
    the parse-error topic, and the membership replies and changes of its node."""
    return (
        device_filter(DeviceSuffix.TWIN_UPDATE_RESULT, style),
        device_filter(DeviceSuffix.TWIN_UPDATE_DELTA, style),
        device_filter(DeviceSuffix.TWIN_GET_RESULT, style),
        TWIN_PARSE_ERROR_TOPIC,
        membership_get_result(node),
        membership_updated(node),
    )


def edgecore_subscriptions(style: IdStyle | str = IdStyle.NAMESPACED) -> tuple[str, ...]:
    """EdgeCore's fixed subscriptions (contract §3.1), in the given id style."""
    style = _check_style(style)
    wildcard = "+/+" if style is IdStyle.NAMESPACED else "+"
    return (
        "$hw/events/upload/#",
        f"{DEVICE_PREFIX}{wildcard}/state/update",
        f"{DEVICE_PREFIX}{wildcard}/twin/+",
        f"{NODE_PREFIX}+/membership/get",
        "SYS/dis/upload_records",
        "+/user/#",
    )


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches the MQTT ``topic_filter`` (``+`` and ``#`` wildcards).

    Follows MQTT 3.1.1 §4.7: ``+`` matches exactly one (possibly empty) level, ``#`` the parent
    level and everything below it, and wildcards at the start of a filter do not match topics
    beginning with ``$``.
    """
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return i == len(f_levels) - 1
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


# --- parsers -----------------------------------------------------------------------------------


def parse_device_topic(topic: str, style: IdStyle | str = IdStyle.NAMESPACED) -> DeviceTopic:
    """Split ``$hw/events/device/{id}/{suffix}`` into ``(namespace, name, suffix)``.

    Raises :class:`TopicError` unless the topic is exactly what :func:`device_topic` builds for
    valid names: wrong prefix, wildcards, empty segments (including
    :data:`TWIN_PARSE_ERROR_TOPIC`), names that are not DNS-1123, or an unknown suffix.
    """
    style = _check_style(style)
    if not isinstance(topic, str):
        raise TopicError(f"topic {topic!r} is not a string")
    if len(topic) > _MAX_TOPIC_BYTES:
        raise TopicError("topic is longer than MQTT allows")
    if not topic.startswith(DEVICE_PREFIX):
        raise TopicError(f"{topic!r} is not a device topic")
    rest = topic[len(DEVICE_PREFIX) :]
    id_levels = 2 if style is IdStyle.NAMESPACED else 1
    parts = rest.split("/", id_levels)
    if len(parts) <= id_levels:
        raise TopicError(f"{topic!r} has no suffix after the device id")
    suffix = _DEVICE_SUFFIXES.get(parts[id_levels])
    if suffix is None:
        raise TopicError(f"{topic!r} has an unknown suffix {parts[id_levels]!r}")
    if style is IdStyle.NAMESPACED:
        return DeviceTopic(
            _check_namespace(parts[0]), _check_subdomain("device name", parts[1]), suffix
        )
    return DeviceTopic(None, _check_subdomain("device name", parts[0]), suffix)


def parse_node_topic(topic: str) -> NodeTopic:
    """Split ``$hw/events/node/{node}/{suffix}`` into ``(node, suffix)``; strict like
    :func:`parse_device_topic`."""
    if not isinstance(topic, str):
        raise TopicError(f"topic {topic!r} is not a string")
    if len(topic) > _MAX_TOPIC_BYTES:
        raise TopicError("topic is longer than MQTT allows")
    if not topic.startswith(NODE_PREFIX):
        raise TopicError(f"{topic!r} is not a node topic")
    node, sep, rest = topic[len(NODE_PREFIX) :].partition("/")
    if not sep:
        raise TopicError(f"{topic!r} has no suffix after the node name")
    suffix = _NODE_SUFFIXES.get(rest)
    if suffix is None:
        raise TopicError(f"{topic!r} has an unknown suffix {rest!r}")
    return NodeTopic(_check_subdomain("node name", node), suffix)
