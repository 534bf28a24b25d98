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

from mapper_sdk.bus.messages.build import (
    NamedTwin,
    build_checked_twin_report,
    build_checked_twin_report_of,
    build_device_updated,
    build_error_result,
    build_membership_get,
    build_membership_get_result,
    build_membership_updated,
    build_state_update,
    build_state_update_result,
    build_twin_delta,
    build_twin_document,
    build_twin_get,
    build_twin_get_result,
    build_twin_report,
    build_twin_update,
    build_twin_update_result,
)
from mapper_sdk.bus.messages.checks import (
    check_twin_key,
    check_twin_value,
)
from mapper_sdk.bus.messages.parse import (
    load_object,
    parse_device_updated,
    parse_membership_get,
    parse_membership_get_result,
    parse_membership_updated,
    parse_state_update,
    parse_state_update_result,
    parse_twin_delta,
    parse_twin_document,
    parse_twin_get,
    parse_twin_get_result,
    parse_twin_update,
    parse_twin_update_result,
)
from mapper_sdk.bus.messages.shapes import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_PAYLOAD,
    DEVICE_STATES,
    TWIN_TYPES,
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
    now_ms,
)

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
    "NamedTwin",
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
    "build_checked_twin_report",
    "build_checked_twin_report_of",
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
