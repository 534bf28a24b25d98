"""Parsers: bounded, strict reading of every bus message into its frozen shape."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import orjson

from mapper_sdk.bus.messages.checks import (
    short,
)
from mapper_sdk.bus.messages.shapes import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_PAYLOAD,
    INT64_MAX,
    INT64_MIN,
    MAX_VALUE_LEN,
    TWIN_KEY_RE,
    TWIN_VALUE_RE,
    DeviceUpdated,
    MembershipDevice,
    MembershipGet,
    MembershipGetResult,
    MembershipUpdated,
    MessageError,
    MsgAttr,
    MsgTwin,
    Payload,
    StateUpdate,
    StateUpdateResult,
    TwinDelta,
    TwinDoc,
    TwinDocument,
    TwinGet,
    TwinGetResult,
    TwinUpdate,
    TwinUpdateResult,
    TwinValue,
    TwinVersion,
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
    if not INT64_MIN <= value <= INT64_MAX:
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
    if not TWIN_KEY_RE.fullmatch(key):
        raise MessageError(f"{where}: bad twin name {short(key)}")
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
    if text is not None and len(text) > MAX_VALUE_LEN:
        raise MessageError(f"{where}.value: longer than {MAX_VALUE_LEN} characters")
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
            if tv is not None and tv.value and not TWIN_VALUE_RE.fullmatch(tv.value):
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
        if len(text) > MAX_VALUE_LEN:
            raise MessageError(f"delta.{key}: longer than {MAX_VALUE_LEN} characters")
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
