"""JSON messages of the EdgeCore MQTT event bus (contract §3.3-§3.5a), built and parsed without I/O.

Builders return ``bytes`` ready to publish. Everything a mapper sends is checked first against
EdgeCore's own rules, so EdgeCore never has to reject it (a rejection found while parsing comes
back on ``$hw/events/device//twin/update/result`` with ``event_id: ""`` and cannot be matched to
its message, §3.5a.1):

- twin keys match ``^[a-zA-Z0-9-_.,:/@#]{1,128}$``, values ``^[a-zA-Z0-9-_.,:/@#]{1,512}$``;
- ``metadata.type`` is one of ``string``, ``int``, ``integer``, ``float``, ``boolean`` and the value
  parses as that type the way EdgeCore's Go code parses it;
- every ``actual``/``expected`` object carries a ``value`` (``{"actual":{}}`` panics EdgeCore's
  twin module, §3.5a.10);
- a state is one of ``online``, ``offline``, ``ok``, ``unknown``, ``unhealthy`` in lower case
  (EdgeCore silently drops anything else, §3.4 rule 9).

Bad twin keys, values and types raise :class:`~mapper_sdk.errors.ValueConversionError`; every
other refusal raises :class:`MessageError`.

Parsers accept ``bytes``/``str``, refuse payloads above ``max_size`` (64 KiB by default) before
decoding, and refuse invalid UTF-8, non-object JSON, NaN/Infinity, numbers out of range, nesting
deeper than ``max_depth`` and wrong types, always with :class:`MessageError` and a one-line reason.
Unknown keys are ignored, as EdgeCore ignores them. Parsed messages are frozen slotted dataclasses.
Timestamps are integer milliseconds since the epoch.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias, cast

import orjson

from mapper_sdk.errors import EventBusError, ValueConversionError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PAYLOAD",
    "DEVICE_STATES",
    "TWIN_TYPES",
    "DeviceUpdated",
    "MembershipDevice",
    "MembershipGet",
    "MembershipGetResult",
    "MembershipUpdated",
    "MessageError",
    "MsgAttr",
    "MsgTwin",
    "Payload",
    "StateUpdate",
    "StateUpdateResult",
    "TwinDelta",
    "TwinDoc",
    "TwinDocument",
    "TwinGet",
    "TwinGetResult",
    "TwinUpdate",
    "TwinUpdateResult",
    "TwinValue",
    "TwinVersion",
    "build_device_updated",
    "build_error_result",
    "build_membership_get",
    "build_membership_get_result",
    "build_membership_updated",
    "build_state_update",
    "build_state_update_result",
    "build_twin_delta",
    "build_twin_document",
    "build_twin_get",
    "build_twin_get_result",
    "build_twin_report",
    "build_twin_update",
    "build_twin_update_result",
    "check_twin_key",
    "check_twin_value",
    "load_object",
    "now_ms",
    "parse_device_updated",
    "parse_membership_get",
    "parse_membership_get_result",
    "parse_membership_updated",
    "parse_state_update",
    "parse_state_update_result",
    "parse_twin_delta",
    "parse_twin_document",
    "parse_twin_get",
    "parse_twin_get_result",
    "parse_twin_update",
    "parse_twin_update_result",
]

DEFAULT_MAX_PAYLOAD: Final = 64 * 1024
"""Largest payload the parsers accept, in bytes."""
DEFAULT_MAX_DEPTH: Final = 16
"""Deepest nesting of objects/arrays the parsers accept (the deepest bus message needs 7)."""

TWIN_TYPES: Final = frozenset({"string", "int", "integer", "float", "boolean"})
"""``metadata.type`` values we send. EdgeCore rejects ``double``, ``bytes``, ``INT``... (§3.4.4)."""
DEVICE_STATES: Final = frozenset({"online", "offline", "ok", "unknown", "unhealthy"})
"""States EdgeCore stores; it silently drops every other state (§3.4.9)."""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MAX_VALUE_LEN: Final = 512
_TWIN_CHARS = r"[a-zA-Z0-9_.,:/@#-]"
_TWIN_KEY = re.compile(_TWIN_CHARS + r"{1,128}")
_TWIN_VALUE = re.compile(_TWIN_CHARS + r"{1,512}")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GO_FLOAT_SPECIAL = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"})


Payload: TypeAlias = bytes | bytearray | memoryview | str
"""What the parsers accept: an MQTT payload as received, or text."""


class MessageError(EventBusError):
    """A bus message is malformed, too big, or cannot be built. ``str()`` is a one-line reason."""


def now_ms() -> int:
    """The current time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


# --- parsed shapes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwinValue:
    """``{"value": ..., "metadata": {"timestamp": ms}}``. In EdgeCore's replies ``value`` may be
    absent (``None``); in what we send it never is."""

    value: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class TwinVersion:
    """``{"cloud": n, "edge": n}``, seen only in cloud syncs."""

    cloud: int
    edge: int


@dataclass(frozen=True, slots=True)
class MsgTwin:
    """One twin (contract §3.3 MsgTwin). ``type`` is ``metadata.type``."""

    expected: TwinValue | None = None
    actual: TwinValue | None = None
    optional: bool | None = None
    type: str | None = None
    expected_version: TwinVersion | None = None
    actual_version: TwinVersion | None = None


@dataclass(frozen=True, slots=True)
class TwinDoc:
    """Before/after images of one twin in a twin document; ``None`` is JSON ``null``."""

    last: MsgTwin | None
    current: MsgTwin | None


@dataclass(frozen=True, slots=True)
class MsgAttr:
    """A legacy device attribute: ``{"value", "optional", "metadata": {"type"}}``."""

    value: str
    optional: bool | None = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class MembershipDevice:
    """A device in a membership message. Empty strings stand for omitted keys (EdgeCore omits
    empty ``description``, ``state``, ``last_online``)."""

    id: str
    name: str
    description: str = ""
    state: str = ""
    last_online: str = ""
    attributes: Mapping[str, MsgAttr] = field(default_factory=dict)
    twin: Mapping[str, MsgTwin | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TwinUpdate:
    """``twin/update``: a report (``actual``) or a target (``expected``); ``None`` deletes."""

    event_id: str
    timestamp: int
    twin: Mapping[str, MsgTwin | None]


@dataclass(frozen=True, slots=True)
class TwinUpdateResult:
    """``twin/update/result``: the twins applied, or ``code``/``reason`` on error."""

    event_id: str
    timestamp: int
    twin: Mapping[str, MsgTwin | None] = field(default_factory=dict)
    code: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class TwinDelta:
    """``twin/update/delta``: ``delta`` maps each property to its expected value."""

    event_id: str
    timestamp: int
    twin: Mapping[str, MsgTwin]
    delta: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TwinDocument:
    """``twin/update/document``."""

    event_id: str
    timestamp: int
    twin: Mapping[str, TwinDoc]


@dataclass(frozen=True, slots=True)
class TwinGet:
    """``twin/get``."""

    event_id: str


@dataclass(frozen=True, slots=True)
class TwinGetResult:
    """``twin/get/result``: all twins, or ``code``/``reason`` (404 for an unknown device)."""

    event_id: str
    timestamp: int
    twin: Mapping[str, MsgTwin | None] = field(default_factory=dict)
    code: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """``state/update``. ``state`` is as sent (EdgeCore compares it case-insensitively)."""

    event_id: str
    timestamp: int
    state: str


@dataclass(frozen=True, slots=True)
class StateUpdateResult:
    """``state/update/result``, flattened from ``device: {name, state, lastOnlineTime}``.
    ``last_online_time`` is ``None`` when EdgeCore omitted it (states other than online/ok)."""

    event_id: str
    timestamp: int
    name: str
    state: str
    last_online_time: str | None = None


@dataclass(frozen=True, slots=True)
class MembershipGet:
    """``membership/get``."""

    event_id: str


@dataclass(frozen=True, slots=True)
class MembershipGetResult:
    """``membership/get/result``: the devices bound to the node, or ``code``/``reason``."""

    event_id: str
    timestamp: int
    devices: tuple[MembershipDevice, ...] = ()
    code: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class MembershipUpdated:
    """``membership/updated``; the list that does not apply is ``None`` (JSON ``null``)."""

    event_id: str
    timestamp: int
    added_devices: tuple[MembershipDevice, ...] | None
    removed_devices: tuple[MembershipDevice, ...] | None


@dataclass(frozen=True, slots=True)
class DeviceUpdated:
    """``$hw/events/device/{id}/updated``: legacy attribute change."""

    event_id: str
    timestamp: int
    attributes: Mapping[str, MsgAttr]


# --- value checks ------------------------------------------------------------------------------


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_twin_key(key: object) -> str:
    """Return ``key`` if EdgeCore accepts it as a twin name, else raise ValueConversionError."""
    if not isinstance(key, str) or not _TWIN_KEY.fullmatch(key):
        raise ValueConversionError(
            f"twin name {_short(key)} must be 1-128 of the characters a-z A-Z 0-9 - _ . , : / @ #"
        )
    return key


def check_twin_value(value: object, type_: str | None = None) -> str:
    """Return ``value`` if EdgeCore accepts it as a twin value of ``type_``.

    ``type_`` ``None`` checks only the pattern (EdgeCore then uses the twin's stored type).
    Raises :class:`ValueConversionError`: for a value outside ``^[a-zA-Z0-9-_.,:/@#]{1,512}$``,
    for a ``type_`` not in :data:`TWIN_TYPES`, or for a value that does not parse as ``type_``
    (Go ``strconv.ParseInt(v, 10, 64)`` / ``ParseFloat(v, 64)`` / exactly ``true|false``; our
    float check is slightly stricter: no hexadecimal floats or ``_`` digit separators).
    """
    if not isinstance(value, str):
        raise ValueConversionError(f"twin value {_short(value)} is not a string")
    if not _TWIN_VALUE.fullmatch(value):
        if len(value) > _MAX_VALUE_LEN:
            raise ValueConversionError(
                f"twin value of {len(value)} characters is longer than {_MAX_VALUE_LEN}"
            )
        raise ValueConversionError(
            f"twin value {_short(value)} must be 1-512 of the characters "
            "a-z A-Z 0-9 - _ . , : / @ #"
        )
    if type_ is None or type_ == "string":
        return value
    if type_ in ("int", "integer"):
        if not _GO_INT.fullmatch(value) or not _INT64_MIN <= int(value) <= _INT64_MAX:
            raise ValueConversionError(f"twin value {_short(value)} is not a 64-bit integer")
        return value
    if type_ == "float":
        if value.lower() in _GO_FLOAT_SPECIAL:
            return value
        if not _GO_FLOAT.fullmatch(value) or math.isinf(float(value)):
            raise ValueConversionError(f"twin value {_short(value)} is not a 64-bit float")
        return value
    if type_ == "boolean":
        if value not in ("true", "false"):
            raise ValueConversionError(f"twin value {_short(value)} is not 'true' or 'false'")
        return value
    raise ValueConversionError(
        f"twin type {_short(type_)} is not one of {', '.join(sorted(TWIN_TYPES))}"
    )


def _check_type(type_: object) -> str:
    if not isinstance(type_, str) or type_ not in TWIN_TYPES:
        raise ValueConversionError(
            f"twin type {_short(type_)} is not one of {', '.join(sorted(TWIN_TYPES))}"
        )
    return type_


# --- building ----------------------------------------------------------------------------------


def _timestamp(timestamp: int | None) -> int:
    if timestamp is None:
        return now_ms()
    if type(timestamp) is not int or not 0 <= timestamp <= _INT64_MAX:
        raise MessageError(f"timestamp {_short(timestamp)} is not a non-negative int64 of ms")
    return timestamp


def _event_id(event_id: object) -> str:
    if not isinstance(event_id, str):
        raise MessageError(f"event_id {_short(event_id)} is not a string")
    return event_id


def _dump(obj: dict[str, object]) -> bytes:
    return orjson.dumps(obj)


def _value_dict(tv: TwinValue) -> dict[str, object]:
    out: dict[str, object] = {}
    if tv.value is not None:
        out["value"] = tv.value
    if tv.timestamp is not None:
        out["metadata"] = {"timestamp": _timestamp(tv.timestamp)}
    return out


def _twin_dict(twin: MsgTwin) -> dict[str, object]:
    out: dict[str, object] = {}
    if twin.expected is not None:
        out["expected"] = _value_dict(twin.expected)
    if twin.actual is not None:
        out["actual"] = _value_dict(twin.actual)
    if twin.optional is not None:
        out["optional"] = twin.optional
    if twin.type is not None:
        out["metadata"] = {"type": twin.type}
    if twin.expected_version is not None:
        v = twin.expected_version
        out["expected_version"] = {"cloud": v.cloud, "edge": v.edge}
    if twin.actual_version is not None:
        v = twin.actual_version
        out["actual_version"] = {"cloud": v.cloud, "edge": v.edge}
    return out


def _twin_map(twins: Mapping[str, MsgTwin | None]) -> dict[str, object]:
    return {check_twin_key(k): (None if t is None else _twin_dict(t)) for k, t in twins.items()}


def _checked_request_twin(key: str, twin: MsgTwin) -> MsgTwin:
    if twin.type is not None:
        _check_type(twin.type)
    for side, tv in (("expected", twin.expected), ("actual", twin.actual)):
        if tv is None:
            continue
        if tv.value is None:
            # {"actual":{}} panics EdgeCore's twin module (contract §3.5a.10).
            raise ValueConversionError(f"twin {key!r}: {side} has no value")
        check_twin_value(tv.value, twin.type)
        if tv.timestamp is not None:
            _timestamp(tv.timestamp)
    if twin.expected_version is not None or twin.actual_version is not None:
        raise MessageError(f"twin {key!r}: versions belong to cloud syncs, not to twin/update")
    return twin


def build_twin_update(
    twins: Mapping[str, MsgTwin | None], *, event_id: str = "", timestamp: int | None = None
) -> bytes:
    """``twin/update``: report ``actual`` and/or set ``expected`` values; ``None`` deletes a twin.

    Every key, value and type is checked (see :func:`check_twin_value`), so EdgeCore accepts the
    message. ``MsgTwin.type=None`` omits ``metadata`` (EdgeCore then uses the stored type or
    ``string``); pass the type so the value can be checked.
    """
    body: dict[str, object] = {}
    for key, twin in twins.items():
        check_twin_key(key)
        body[key] = None if twin is None else _twin_dict(_checked_request_twin(key, twin))
    return _dump(
        {"event_id": _event_id(event_id), "timestamp": _timestamp(timestamp), "twin": body}
    )


def build_twin_report(
    values: Mapping[str, tuple[str, str]],
    *,
    event_id: str = "",
    timestamp: int | None = None,
    value_timestamps: bool = True,
) -> bytes:
    """A mapper's report: ``{prop: (value, type)}`` becomes
    ``{"actual": {"value": v, "metadata": {"timestamp": ms}}, "metadata": {"type": t}}`` for each
    property. ``value_timestamps=False`` leaves out the per-value ``metadata`` (EdgeCore
    overwrites it with its own clock anyway)."""
    ts = _timestamp(timestamp)
    vts = ts if value_timestamps else None
    return build_twin_update(
        {k: MsgTwin(actual=TwinValue(v, vts), type=t) for k, (v, t) in values.items()},
        event_id=event_id,
        timestamp=ts,
    )


def build_checked_twin_report(
    values: Mapping[str, tuple[str, str]], *, event_id: str, timestamp: int
) -> bytes:
    """``build_twin_report`` for values the runtime already checked: the hot path.

    Only for twins whose names were checked at bind time and whose values and types come from
    ``mapper_sdk.values`` (``format_value`` / ``twin_type``), which guarantee what
    ``check_twin_key`` / ``check_twin_value`` would check again; the shape is the same.
    """
    twin = {
        key: {"actual": {"value": value, "metadata": {"timestamp": timestamp}},
              "metadata": {"type": type_}}
        for key, (value, type_) in values.items()
    }  # fmt: skip
    return _dump({"event_id": event_id, "timestamp": timestamp, "twin": twin})


def build_error_result(
    code: int, reason: str, *, event_id: str = "", timestamp: int | None = None
) -> bytes:
    """An error reply (twin/update/result, twin/get/result, membership/get/result)."""
    if type(code) is not int or not 100 <= code <= 599:
        raise MessageError(f"error code {_short(code)} is not an HTTP-style status")
    if not isinstance(reason, str):
        raise MessageError("reason is not a string")
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "code": code,
            "reason": reason,
        }
    )


def build_twin_update_result(
    twins: Mapping[str, MsgTwin | None], *, event_id: str = "", timestamp: int | None = None
) -> bytes:
    """A successful ``twin/update/result`` (only the twins and keys of the request; ``None``
    for a deleted twin). Errors: :func:`build_error_result`."""
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "twin": _twin_map(twins),
        }
    )


def build_twin_delta(
    twins: Mapping[str, MsgTwin],
    delta: Mapping[str, str],
    *,
    event_id: str,
    timestamp: int | None = None,
) -> bytes:
    """``twin/update/delta``: ``twins`` with a non-empty expected, ``delta`` those differing."""
    for key, value in delta.items():
        check_twin_key(key)
        if not isinstance(value, str):
            raise MessageError(f"delta value of {key!r} is not a string")
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "twin": _twin_map(twins),
            "delta": dict(delta),
        }
    )


def build_twin_document(
    twins: Mapping[str, TwinDoc], *, event_id: str = "", timestamp: int | None = None
) -> bytes:
    """``twin/update/document``: ``{prop: {"last": twin|null, "current": twin|null}}``."""
    body = {
        check_twin_key(k): {
            "last": None if d.last is None else _twin_dict(d.last),
            "current": None if d.current is None else _twin_dict(d.current),
        }
        for k, d in twins.items()
    }
    return _dump(
        {"event_id": _event_id(event_id), "timestamp": _timestamp(timestamp), "twin": body}
    )


def build_twin_get(event_id: str) -> bytes:
    """``twin/get``: ``{"event_id": ...}``; the reply echoes the id."""
    return _dump({"event_id": _event_id(event_id)})


def build_twin_get_result(
    twins: Mapping[str, MsgTwin | None], *, event_id: str, timestamp: int | None = None
) -> bytes:
    """A successful ``twin/get/result``. Errors (404): :func:`build_error_result`."""
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "twin": _twin_map(twins),
        }
    )


def build_state_update(state: str, *, event_id: str = "", timestamp: int | None = None) -> bytes:
    """``state/update``. ``state`` must be one of :data:`DEVICE_STATES`, in lower case."""
    if not isinstance(state, str) or state not in DEVICE_STATES:
        raise MessageError(
            f"state {_short(state)} is not one of {', '.join(sorted(DEVICE_STATES))}"
            " (EdgeCore silently drops other states)"
        )
    return _dump(
        {"event_id": _event_id(event_id), "timestamp": _timestamp(timestamp), "state": state}
    )


def build_state_update_result(
    name: str,
    state: str,
    last_online_time: str | None,
    *,
    event_id: str,
    timestamp: int | None = None,
) -> bytes:
    """``state/update/result``; ``lastOnlineTime`` is left out when ``None``."""
    device: dict[str, object] = {"name": name, "state": state}
    if last_online_time is not None:
        device["lastOnlineTime"] = last_online_time
    return _dump(
        {"event_id": _event_id(event_id), "timestamp": _timestamp(timestamp), "device": device}
    )


def build_membership_get(event_id: str) -> bytes:
    """``membership/get``: ``{"event_id": ...}``."""
    return _dump({"event_id": _event_id(event_id)})


def _attr_dict(attr: MsgAttr) -> dict[str, object]:
    out: dict[str, object] = {"value": attr.value}
    if attr.optional is not None:
        out["optional"] = attr.optional
    if attr.type is not None:
        out["metadata"] = {"type": attr.type}
    return out


def _device_dict(device: MembershipDevice) -> dict[str, object]:
    out: dict[str, object] = {"id": device.id, "name": device.name}
    # EdgeCore omits empty fields (Go omitempty).
    if device.description:
        out["description"] = device.description
    if device.state:
        out["state"] = device.state
    if device.last_online:
        out["last_online"] = device.last_online
    if device.attributes:
        out["attributes"] = {k: _attr_dict(a) for k, a in device.attributes.items()}
    if device.twin:
        out["twin"] = _twin_map(device.twin)
    return out


def build_membership_get_result(
    devices: Iterable[MembershipDevice], *, event_id: str, timestamp: int | None = None
) -> bytes:
    """``membership/get/result``; ``devices`` is ``[]`` when empty, never ``null``."""
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "devices": [_device_dict(d) for d in devices],
        }
    )


def build_membership_updated(
    added: Iterable[MembershipDevice] | None,
    removed: Iterable[MembershipDevice] | None,
    *,
    event_id: str,
    timestamp: int | None = None,
) -> bytes:
    """``membership/updated``; pass ``None`` for the list that does not apply."""
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "added_devices": None if added is None else [_device_dict(d) for d in added],
            "removed_devices": None if removed is None else [_device_dict(d) for d in removed],
        }
    )


def build_device_updated(
    attributes: Mapping[str, MsgAttr], *, event_id: str = "", timestamp: int | None = None
) -> bytes:
    """Legacy ``$hw/events/device/{id}/updated`` (attribute change)."""
    return _dump(
        {
            "event_id": _event_id(event_id),
            "timestamp": _timestamp(timestamp),
            "attributes": {k: _attr_dict(a) for k, a in attributes.items()},
        }
    )


# --- parsing -----------------------------------------------------------------------------------


def _check_depth(root: object, max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise MessageError(f"JSON nested deeper than {max_depth} levels")
        children: Iterable[object] = (
            node.values() if isinstance(node, dict) else cast(list[object], node)
        )
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def load_object(
    payload: Payload,
    *,
    max_size: int = DEFAULT_MAX_PAYLOAD,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, object]:
    """Decode a payload into a JSON object, safely: size first, then orjson, then depth."""
    if isinstance(payload, str):
        if len(payload) > max_size:
            raise MessageError(f"payload larger than {max_size} bytes")
        try:
            payload = payload.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError("payload is not valid UTF-8") from None
    elif isinstance(payload, memoryview):
        if payload.nbytes > max_size:
            raise MessageError(f"payload of {payload.nbytes} bytes is larger than {max_size}")
        payload = payload.tobytes()
    elif not isinstance(payload, bytes | bytearray):
        raise MessageError(f"payload is {type(payload).__name__}, not bytes or str")
    if len(payload) > max_size:
        raise MessageError(f"payload of {len(payload)} bytes is larger than {max_size}")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "undecodable"
        raise MessageError(f"invalid JSON: {first}") from None
    if not isinstance(data, dict):
        raise MessageError(f"expected a JSON object, got {_json_type(data)}")
    _check_depth(data, max_depth)
    return data


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _obj(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise MessageError(f"{where}: expected an object, got {_json_type(value)}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise MessageError(f"{where}: expected a string, got {_json_type(value)}")
    return value


def _int64(value: object, where: str) -> int:
    if type(value) is not int:
        raise MessageError(f"{where}: expected an integer, got {_json_type(value)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise MessageError(f"{where}: integer out of int64 range")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise MessageError(f"{where}: expected true or false, got {_json_type(value)}")
    return value


def _opt_str(d: dict[str, object], key: str, where: str, default: str = "") -> str:
    value = d.get(key)
    return default if value is None else _str(value, f"{where}.{key}")


def _key(key: str, where: str) -> str:
    if not _TWIN_KEY.fullmatch(key):
        raise MessageError(f"{where}: bad twin name {_short(key)}")
    return key


def _base(d: dict[str, object], *, require_timestamp: bool = False) -> tuple[str, int]:
    event_id = _opt_str(d, "event_id", "message")
    ts = d.get("timestamp")
    if ts is None:
        if require_timestamp:
            raise MessageError("message: timestamp is missing")
        return event_id, 0
    return event_id, _int64(ts, "message.timestamp")


def _parse_value(value: object, where: str, *, require_value: bool) -> TwinValue | None:
    if value is None:
        return None
    d = _obj(value, where)
    raw = d.get("value")
    if raw is None and require_value:
        # EdgeCore panics on {"actual":{}} (contract §3.5a.10): never pass one on.
        raise MessageError(f"{where}: value is missing")
    text = None if raw is None else _str(raw, f"{where}.value")
    if text is not None and len(text) > _MAX_VALUE_LEN:
        raise MessageError(f"{where}.value: longer than {_MAX_VALUE_LEN} characters")
    ts: int | None = None
    meta = d.get("metadata")
    if meta is not None:
        raw_ts = _obj(meta, f"{where}.metadata").get("timestamp")
        if raw_ts is not None:
            ts = _int64(raw_ts, f"{where}.metadata.timestamp")
    return TwinValue(text, ts)


def _parse_version(value: object, where: str) -> TwinVersion | None:
    if value is None:
        return None
    d = _obj(value, where)
    return TwinVersion(
        cloud=_int64(d.get("cloud", 0), f"{where}.cloud"),
        edge=_int64(d.get("edge", 0), f"{where}.edge"),
    )


def _parse_twin(value: object, where: str, *, require_value: bool = False) -> MsgTwin:
    d = _obj(value, where)
    optional = d.get("optional")
    type_: str | None = None
    meta = d.get("metadata")
    if meta is not None:
        raw_type = _obj(meta, f"{where}.metadata").get("type")
        if raw_type is not None:
            type_ = _str(raw_type, f"{where}.metadata.type")
    return MsgTwin(
        expected=_parse_value(d.get("expected"), f"{where}.expected", require_value=require_value),
        actual=_parse_value(d.get("actual"), f"{where}.actual", require_value=require_value),
        optional=None if optional is None else _bool(optional, f"{where}.optional"),
        type=type_,
        expected_version=_parse_version(d.get("expected_version"), f"{where}.expected_version"),
        actual_version=_parse_version(d.get("actual_version"), f"{where}.actual_version"),
    )


def _parse_twin_map(
    value: object, where: str, *, require_value: bool = False
) -> dict[str, MsgTwin | None]:
    out: dict[str, MsgTwin | None] = {}
    for key, twin in _obj(value, where).items():
        _key(key, where)
        out[key] = (
            None
            if twin is None
            else _parse_twin(twin, f"{where}.{key}", require_value=require_value)
        )
    return out


def _parse_code(d: dict[str, object]) -> tuple[int | None, str]:
    raw = d.get("code")
    if raw is None or (type(raw) is int and raw == 0):
        return None, ""
    code = _int64(raw, "message.code")
    if not 100 <= code <= 599:
        raise MessageError(f"message.code: {code} is not an HTTP-style status")
    return code, _opt_str(d, "reason", "message")


def _parse_attr(value: object, where: str) -> MsgAttr:
    d = _obj(value, where)
    optional = d.get("optional")
    type_: str | None = None
    meta = d.get("metadata")
    if meta is not None:
        raw_type = _obj(meta, f"{where}.metadata").get("type")
        if raw_type is not None:
            type_ = _str(raw_type, f"{where}.metadata.type")
    return MsgAttr(
        value=_opt_str(d, "value", where),
        optional=None if optional is None else _bool(optional, f"{where}.optional"),
        type=type_,
    )


def _parse_attrs(value: object, where: str) -> dict[str, MsgAttr]:
    if value is None:
        return {}
    out: dict[str, MsgAttr] = {}
    for key, attr in _obj(value, where).items():
        out[_key(key, where)] = _parse_attr(attr, f"{where}.{key}")
    return out


def _parse_device(value: object, where: str) -> MembershipDevice:
    d = _obj(value, where)
    twin = d.get("twin")
    return MembershipDevice(
        id=_str(d.get("id"), f"{where}.id"),
        name=_str(d.get("name"), f"{where}.name"),
        description=_opt_str(d, "description", where),
        state=_opt_str(d, "state", where),
        last_online=_opt_str(d, "last_online", where),
        attributes=_parse_attrs(d.get("attributes"), f"{where}.attributes"),
        twin={} if twin is None else _parse_twin_map(twin, f"{where}.twin"),
    )


def _parse_devices(value: object, where: str) -> tuple[MembershipDevice, ...]:
    if not isinstance(value, list):
        raise MessageError(f"{where}: expected an array, got {_json_type(value)}")
    return tuple(_parse_device(v, f"{where}[{i}]") for i, v in enumerate(value))


def parse_twin_update(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> TwinUpdate:
    """``twin/update`` as EdgeCore reads it: ``twin`` required, names and non-empty values must
    match the twin patterns, and every ``actual``/``expected`` needs a ``value``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    if d.get("twin") is None:
        raise MessageError("message: twin is missing")
    twin = _parse_twin_map(d["twin"], "twin", require_value=True)
    for key, t in twin.items():
        if t is None:
            continue
        for side, tv in (("expected", t.expected), ("actual", t.actual)):
            if tv is not None and tv.value and not _TWIN_VALUE.fullmatch(tv.value):
                raise MessageError(f"twin.{key}.{side}.value: not a valid twin value")
    return TwinUpdate(event_id, ts, twin)


def parse_twin_update_result(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> TwinUpdateResult:
    """``twin/update/result``: success (``twin``) or error (``code``, ``reason``)."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    code, reason = _parse_code(d)
    if code is not None:
        return TwinUpdateResult(event_id, ts, {}, code, reason)
    if d.get("twin") is None:
        raise MessageError("message: neither twin nor code")
    return TwinUpdateResult(event_id, ts, _parse_twin_map(d["twin"], "twin"))


def parse_twin_delta(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> TwinDelta:
    """``twin/update/delta``: ``delta`` (``{prop: expected}``) and the ``twin`` map."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    delta: dict[str, str] = {}
    for key, value in _obj(d.get("delta"), "delta").items():
        text = _str(value, f"delta.{_key(key, 'delta')}")
        if len(text) > _MAX_VALUE_LEN:
            raise MessageError(f"delta.{key}: longer than {_MAX_VALUE_LEN} characters")
        delta[key] = text
    twin: dict[str, MsgTwin] = {}
    raw_twin = d.get("twin")
    if raw_twin is not None:
        for key, t in _parse_twin_map(raw_twin, "twin").items():
            if t is not None:
                twin[key] = t
    return TwinDelta(event_id, ts, twin, delta)


def parse_twin_document(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> TwinDocument:
    """``twin/update/document``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    docs: dict[str, TwinDoc] = {}
    for key, raw in _obj(d.get("twin"), "twin").items():
        where = f"twin.{_key(key, 'twin')}"
        doc = _obj(raw, where)
        last, current = doc.get("last"), doc.get("current")
        docs[key] = TwinDoc(
            last=None if last is None else _parse_twin(last, f"{where}.last"),
            current=None if current is None else _parse_twin(current, f"{where}.current"),
        )
    return TwinDocument(event_id, ts, docs)


def parse_twin_get(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> TwinGet:
    """``twin/get``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    return TwinGet(_base(d)[0])


def parse_twin_get_result(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> TwinGetResult:
    """``twin/get/result``: the twins (``{}`` for a device without twins) or an error."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    code, reason = _parse_code(d)
    if code is not None:
        return TwinGetResult(event_id, ts, {}, code, reason)
    raw = d.get("twin")
    return TwinGetResult(event_id, ts, {} if raw is None else _parse_twin_map(raw, "twin"))


def parse_state_update(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> StateUpdate:
    """``state/update``. Like EdgeCore, the ``state`` key is matched case-insensitively (the DMI
    path sends ``State``); the value is returned as sent."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    state: str | None = None
    for key, value in d.items():
        if key.lower() == "state":
            state = _str(value, f"message.{key}")
    if state is None:
        raise MessageError("message: state is missing")
    return StateUpdate(event_id, ts, state)


def parse_state_update_result(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> StateUpdateResult:
    """``state/update/result``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    device = _obj(d.get("device"), "device")
    last = device.get("lastOnlineTime")
    return StateUpdateResult(
        event_id,
        ts,
        name=_str(device.get("name"), "device.name"),
        state=_opt_str(device, "state", "device"),
        last_online_time=None if last in (None, "") else _str(last, "device.lastOnlineTime"),
    )


def parse_membership_get(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> MembershipGet:
    """``membership/get``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    return MembershipGet(_base(d)[0])


def parse_membership_get_result(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> MembershipGetResult:
    """``membership/get/result``: ``devices[]`` (snake_case ``last_online``) or an error."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    code, reason = _parse_code(d)
    if code is not None:
        return MembershipGetResult(event_id, ts, (), code, reason)
    raw = d.get("devices")
    devices = () if raw is None else _parse_devices(raw, "devices")
    return MembershipGetResult(event_id, ts, devices)


def parse_membership_updated(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> MembershipUpdated:
    """``membership/updated``: ``added_devices``/``removed_devices``, either may be ``None``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    added, removed = d.get("added_devices"), d.get("removed_devices")
    return MembershipUpdated(
        event_id,
        ts,
        added_devices=None if added is None else _parse_devices(added, "added_devices"),
        removed_devices=None if removed is None else _parse_devices(removed, "removed_devices"),
    )


def parse_device_updated(
    payload: Payload, *, max_size: int = DEFAULT_MAX_PAYLOAD, max_depth: int = DEFAULT_MAX_DEPTH
) -> DeviceUpdated:
    """Legacy ``$hw/events/device/{id}/updated``."""
    d = load_object(payload, max_size=max_size, max_depth=max_depth)
    event_id, ts = _base(d)
    return DeviceUpdated(event_id, ts, _parse_attrs(d.get("attributes"), "attributes"))
