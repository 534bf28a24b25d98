"""Builders: every message a mapper (or a test's EdgeCore) sends, checked, as ``bytes``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

import orjson

from mapper_sdk.bus.messages.checks import (
    check_twin_key,
    check_twin_value,
    check_type,
    short,
)
from mapper_sdk.bus.messages.shapes import (
    DEVICE_STATES,
    INT64_MAX,
    MembershipDevice,
    MessageError,
    MsgAttr,
    MsgTwin,
    TwinDoc,
    TwinValue,
    now_ms,
)
from mapper_sdk.errors import ValueConversionError

# --- building ----------------------------------------------------------------------------------


def _timestamp(timestamp: int | None) -> int:
    if timestamp is None:
        return now_ms()
    if type(timestamp) is not int or not 0 <= timestamp <= INT64_MAX:
        raise MessageError(f"timestamp {short(timestamp)} is not a non-negative int64 of ms")
    return timestamp


def _event_id(event_id: object) -> str:
    if not isinstance(event_id, str):
        raise MessageError(f"event_id {short(event_id)} is not a string")
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
        check_type(twin.type)
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


class NamedTwin(Protocol):
    """A reported twin as the runtime holds it (``mapper_sdk.bus.TwinValue``)."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def type(self) -> str: ...


def build_checked_twin_report_of(
    twins: Iterable[NamedTwin], *, event_id: str, timestamp: int
) -> bytes:
    """``build_checked_twin_report`` straight from the runtime's twins, written as text.

    The same bytes as the ``orjson`` encoding (tested), without building the nested dicts
    first. It relies on what the runtime guarantees: names unique in a report and checked at
    bind time, values and types from ``mapper_sdk.values``: all within EdgeCore's character
    set ``[a-zA-Z0-9-_.,:/@#]``, so none needs escaping. ``event_id`` may be any text.
    """
    ts = "%d" % timestamp  # noqa: UP031 - int only, as in the orjson encoding
    body = ",".join(
        [
            f'"{t.name}":{{"actual":{{"value":"{t.value}","metadata":{{"timestamp":{ts}}}}},'
            f'"metadata":{{"type":"{t.type}"}}}}'
            for t in twins
        ]
    )
    event = orjson.dumps(event_id).decode()
    return f'{{"event_id":{event},"timestamp":{ts},"twin":{{{body}}}}}'.encode()


def build_error_result(
    code: int, reason: str, *, event_id: str = "", timestamp: int | None = None
) -> bytes:
    """An error reply (twin/update/result, twin/get/result, membership/get/result)."""
    if type(code) is not int or not 100 <= code <= 599:
        raise MessageError(f"error code {short(code)} is not an HTTP-style status")
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
            f"state {short(state)} is not one of {', '.join(sorted(DEVICE_STATES))}"
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
