"""The shapes of EdgeCore bus messages (frozen dataclasses), the limits and constants every
builder and parser shares, and :class:`MessageError`."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from mapper_sdk.errors import EventBusError

DEFAULT_MAX_PAYLOAD: Final = 64 * 1024
"""Largest payload the parsers accept, in bytes."""
DEFAULT_MAX_DEPTH: Final = 16
"""Deepest nesting of objects/arrays the parsers accept (the deepest bus message needs 7)."""

TWIN_TYPES: Final = frozenset({"string", "int", "integer", "float", "boolean"})
"""``metadata.type`` values we send. EdgeCore rejects ``double``, ``bytes``, ``INT``... (§3.4.4)."""
DEVICE_STATES: Final = frozenset({"online", "offline", "ok", "unknown", "unhealthy"})
"""States EdgeCore stores; it silently drops every other state (§3.4.9)."""

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
MAX_VALUE_LEN: Final = 512
TWIN_CHARS = r"[a-zA-Z0-9_.,:/@#-]"
TWIN_KEY_RE = re.compile(TWIN_CHARS + r"{1,128}")
TWIN_VALUE_RE = re.compile(TWIN_CHARS + r"{1,512}")
GO_INT = re.compile(r"[+-]?[0-9]+")
GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
GO_FLOAT_SPECIAL = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan"})


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
