"""An EdgeCore MQTT emulator for tests.

This module EMULATES EdgeCore; it is not EdgeCore. It reproduces the behaviour of EdgeCore's
eventbus and devicetwin modules as a mapper sees it over an external MQTT broker, following
``shared/spec/kubeedge-contract.md``:

- §3.1: one MQTT 3.1.1 clean-session client that subscribes with QoS 1 to
  ``$hw/events/device/+/+/twin/+``, ``$hw/events/device/+/+/state/update`` and
  ``$hw/events/node/+/membership/get`` (one ``+`` for the pre-1.16.2 id style), publishes with
  QoS 1 and retain off, and reconnects and subscribes again after the broker restarts
  (§3.5a.13; here after ``reconnect_delay``, not EdgeCore's ~5 s).
- §3.2/§3.3: the topics and JSON shapes of every reply, built with ``mapper_sdk.bus.messages``.
- §3.4 and §3.5a, rule by rule:
  * parse errors of a twin/update (bad JSON or field types, no ``twin``, bad twin name, bad value
    or one longer than 512 characters, string timestamps) are answered with code 400 and
    ``event_id: ""`` on ``$hw/events/device//twin/update/result`` (§3.4.7, §3.5a.1); parsing
    comes before the device lookup;
  * unknown devices get a 404 on their own result topic (§3.4.1), twin/get a 404 too;
  * twins are created lazily (§3.4.2); a new twin takes ``metadata.type`` (default
    ``string``); types other than "", string, int, integer, float, boolean are refused, so are
    values that do not parse as the type (§3.4.4, §3.5a.2); any type error rejects the whole
    message with a 400 on the device topic, echoing ``event_id``, without a ``twin`` map
    (§3.5a.3);
  * ``null`` deletes an optional twin (reply ``{"name": null}``, document ``current: null``) and
    is a no-op success for a non-optional one (§3.4.5, §3.5a.4);
  * every report is a change (§3.4.6): result, then document, then — while any expected differs
    from actual — a delta, after every report (§3.5a.6); result/document/get-result echo
    ``event_id``, delta and state results carry fresh UUIDs (§3.5a.5); value timestamps are
    overwritten with the emulator's clock (§3.4.8);
  * state/update: case-insensitive ``state`` key, the allow-list, state stored as sent,
    ``lastOnlineTime`` only for online/ok, silent drops otherwise (§3.4.9, §3.5a.7);
  * membership/get: answered on the emulator's own node topic whatever node was named,
    ``devices: []`` when empty, empty fields omitted; bad JSON gives a 400 on the request's
    result topic (§3.5a.8);
  * single-segment (legacy) device topics are ignored in the default id style (§3.5a.9);
  * ``{"actual": {}}`` (a value object without ``value``) panics the real twin module
    (§3.5a.10): the emulator records it in ``crash_triggers`` and, like the real one, stops
    answering twin messages until :meth:`EdgeCoreEmulator.recover`.

Not emulated: cloud sync and versions, SQLite, the DMI socket, attribute updates, the ~3-minute
restart of a crashed twin module, EdgeCore's separate publish and subscribe connections.

Tests read what happened from ``reports`` (every accepted actual value), ``expected_writes``,
``states``, ``rejections``, ``received`` and the twin store (:meth:`twins`), and act as an edge
app with :meth:`set_expected` (which triggers deltas) or as the cloud with :meth:`add_device` /
:meth:`remove_device` (optionally publishing ``membership/updated``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from helpers.mqtt import AsyncMqttClient, Message, MqttTimeout
from mapper_sdk.bus import messages as m
from mapper_sdk.bus import topics as t

DEVICE_PREFIX = t.DEVICE_PREFIX
NODE_PREFIX = t.NODE_PREFIX

# Reasons as EdgeCore words them (edge/pkg/devicetwin/dttype/types.go, dtmanager/twin.go).
REASON_UNMARSHAL = "Unmarshal update request body failed, please check the request"
REASON_NO_TWIN = "Update twin error, key:twin does not exist"
REASON_KEY = (
    "The key of twin must only include upper or lowercase letters, number, english, and special "
    "letter - _ . , : / @ # and the length of key should be less than 128 bytes"
)
REASON_VALUE = (
    "The value of twin must only include upper or lowercase letters, number, english, and "
    "special letter - _ . , : / @ # and the length of value should be less than 512 bytes"
)
REASON_NOT_EXISTED = "Update rejected due to the device is not existed"
REASON_BAD_BODY = "The request body is wrong"

_TWIN_KEY = re.compile(r"[a-zA-Z0-9_.,:/@#-]{1,128}")
_TWIN_VALUE = re.compile(r"[a-zA-Z0-9_.,:/@#-]{1,512}")
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ALLOWED_TYPES = frozenset({"", "string", "int", "integer", "float", "boolean", "deleted"})
_STATES = frozenset({"online", "offline", "ok", "unknown", "unhealthy"})


class _ParseError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Report:
    """One accepted ``actual`` value."""

    device: str
    property: str
    value: str
    type: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """One error reply the emulator published."""

    topic: str
    event_id: str
    code: int
    reason: str


@dataclass(slots=True)
class _Twin:
    type: str
    optional: bool = True
    expected: str | None = None
    expected_ts: int | None = None
    actual: str | None = None
    actual_ts: int | None = None

    def snapshot(self) -> m.MsgTwin:
        return m.MsgTwin(
            expected=None
            if self.expected is None
            else m.TwinValue(self.expected, self.expected_ts),
            actual=None if self.actual is None else m.TwinValue(self.actual, self.actual_ts),
            optional=self.optional,
            type=self.type,
        )


@dataclass(slots=True)
class _Device:
    namespace: str | None
    name: str
    description: str = ""
    state: str = ""
    last_online: str = ""
    twins: dict[str, _Twin] = field(default_factory=dict)


@dataclass(slots=True)
class _Incoming:
    """A twin/update after EdgeCore-style parsing."""

    event_id: str
    twin: dict[str, dict[str, object] | None]


def _rfc3339_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_value_error(type_: str, value: str) -> str | None:
    """EdgeCore's type check (dtcommon.ValidateValue, with double/bytes refused as on master)."""
    if type_ in ("", "string", "deleted"):
        return None
    if type_ in ("int", "integer"):
        if _GO_INT.fullmatch(value) and -(2**63) <= int(value) < 2**63:
            return None
        return "the value is not int or integer"
    if type_ == "float":
        if value.lower().lstrip("+-") in ("inf", "infinity") or value.lower() == "nan":
            return None
        if _GO_FLOAT.fullmatch(value) and not math.isinf(float(value)):
            return None
        return "the value is not float"
    if type_ == "boolean":
        return None if value in ("true", "false") else "the bool value must be true or false"
    return f"the value type is not allowed {type_}"


class EdgeCoreEmulator:
    """EMULATES EdgeCore's event bus and device twin over MQTT; see the module docstring.

    ``devices`` are ``"ns/name"`` strings (or bare names for :attr:`IdStyle.NAME_ONLY`) known
    from the start; more can be added with :meth:`add_device`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        node: str = "edge-1",
        devices: list[str] | tuple[str, ...] = (),
        id_style: t.IdStyle = t.IdStyle.NAMESPACED,
        reconnect_delay: float = 0.2,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.node = node
        self.id_style = t.IdStyle(id_style)
        self.devices: dict[str, _Device] = {}
        self.reports: list[Report] = []
        self.expected_writes: list[Report] = []
        self.states: list[tuple[str, str]] = []
        self.rejections: list[Rejection] = []
        self.published: list[tuple[str, bytes]] = []
        self.crash_triggers: list[tuple[str, bytes]] = []
        self.crashed = False
        self.client = AsyncMqttClient(
            host,
            port,
            client_id=f"hub-client-emulator-{uuid.uuid4().hex[:8]}",
            auto_reconnect=True,
            reconnect_delay=reconnect_delay,
            username=username,
            password=password,
            on_message=self._on_message,
        )
        for device in devices:
            ns, _, name = device.rpartition("/")
            self.add_device(ns or None, name)

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.client.connect()
        wildcard = "+/+" if self.id_style is t.IdStyle.NAMESPACED else "+"
        await self.client.subscribe(
            f"{DEVICE_PREFIX}{wildcard}/twin/+",
            f"{DEVICE_PREFIX}{wildcard}/state/update",
            f"{NODE_PREFIX}+/membership/get",
            qos=1,
        )

    async def stop(self) -> None:
        await self.client.disconnect()

    async def __aenter__(self) -> EdgeCoreEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised inside the emulator (a test should assert this stays empty)."""
        return self.client.errors

    @property
    def received(self) -> list[Message]:
        """Every message the emulator received."""
        return self.client.received

    def recover(self) -> None:
        """Restart the (emulated) twin module after a crash trigger."""
        self.crashed = False

    # --- what a test does as the cloud or an edge app ----------------------------------------

    def device_key(self, namespace: str | None, name: str) -> str:
        return t.device_id(namespace, name, self.id_style)

    def add_device(
        self, namespace: str | None, name: str, *, description: str = "", notify: bool = False
    ) -> None:
        """Bind a device to this node (as the cloud would); ``notify`` publishes
        ``membership/updated`` with it in ``added_devices``."""
        key = self.device_key(namespace, name)
        self.devices[key] = _Device(namespace, name, description)
        if notify:
            payload = m.build_membership_updated(
                [m.MembershipDevice(id=key, name=name, description=description)],
                None,
                event_id=str(uuid.uuid4()),
            )
            self._publish(t.membership_updated(self.node), payload)

    def remove_device(self, namespace: str | None, name: str, *, notify: bool = False) -> None:
        key = self.device_key(namespace, name)
        device = self.devices.pop(key)
        if notify:
            payload = m.build_membership_updated(
                None,
                [m.MembershipDevice(id=key, name=name, description=device.description)],
                event_id=str(uuid.uuid4()),
            )
            self._publish(t.membership_updated(self.node), payload)

    def set_expected(
        self,
        namespace: str | None,
        name: str,
        prop: str,
        value: str,
        *,
        type: str = "string",
        event_id: str = "",
    ) -> None:
        """Write ``expected`` as an edge app's twin/update would (result, document and, while
        actual differs, delta are published)."""
        body = {"expected": {"value": value}, "metadata": {"type": type}}
        key = self.device_key(namespace, name)
        self._handle_twin_update(key, _Incoming(event_id, {prop: body}))

    def twins(self, namespace: str | None, name: str) -> dict[str, m.MsgTwin]:
        """A snapshot of a device's twins."""
        device = self.devices[self.device_key(namespace, name)]
        return {k: tw.snapshot() for k, tw in device.twins.items()}

    def state(self, namespace: str | None, name: str) -> str:
        return self.devices[self.device_key(namespace, name)].state

    def reported(self, device: str | None = None) -> list[tuple[str, str]]:
        """``(property, value)`` of every accepted report, optionally of one ``ns/name``."""
        return [(r.property, r.value) for r in self.reports if device in (None, r.device)]

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait (without sleeping blindly) until ``condition()`` holds; it is re-checked after
        every message the emulator handles."""
        await self.client.wait_until(condition, timeout=timeout)

    async def wait_for_reports(self, count: int, *, timeout: float = 5.0) -> list[Report]:  # noqa: ASYNC109
        try:
            await self.wait_until(lambda: len(self.reports) >= count, timeout=timeout)
        except MqttTimeout:
            raise MqttTimeout(f"{len(self.reports)} of {count} reports within {timeout}s") from None
        return self.reports

    # --- dispatch ----------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))
        with contextlib.suppress(ConnectionError):
            # Published while disconnected: lost, as EdgeCore loses it (QoS 1 from a clean
            # session that is gone).
            self.client.publish_nowait(topic, payload, qos=1, retain=False)

    def _reject(self, topic: str, event_id: str, code: int, reason: str) -> None:
        self.rejections.append(Rejection(topic, event_id, code, reason))
        self._publish(topic, m.build_error_result(code, reason, event_id=event_id))

    def _on_message(self, msg: Message) -> None:
        topic = msg.topic
        if topic.startswith(NODE_PREFIX):
            node, _, suffix = topic[len(NODE_PREFIX) :].partition("/")
            if suffix == "membership/get":
                self._handle_membership_get(node, msg.payload)
            return
        if not topic.startswith(DEVICE_PREFIX):
            return
        levels = 2 if self.id_style is t.IdStyle.NAMESPACED else 1
        parts = topic[len(DEVICE_PREFIX) :].split("/", levels)
        if len(parts) <= levels:
            return
        key = "/".join(parts[:levels])
        suffix = parts[levels]
        if suffix == "twin/update":
            if self.crashed:
                return
            try:
                incoming = self._parse_twin_update(msg.payload)
            except _ParseError as exc:
                self._reject(t.TWIN_PARSE_ERROR_TOPIC, "", 400, str(exc))
                return
            self._handle_twin_update(key, incoming, raw=msg.payload)
        elif suffix == "twin/get":
            if not self.crashed:
                self._handle_twin_get(key, msg.payload)
        elif suffix == "state/update":
            self._handle_state_update(key, msg.payload)

    # --- twin/update -------------------------------------------------------------------------

    @staticmethod
    def _parse_twin_update(payload: bytes) -> _Incoming:
        """Go's json.Unmarshal into DeviceTwinUpdate plus UnmarshalDeviceTwinUpdate's checks."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise _ParseError(REASON_UNMARSHAL) from None
        if not isinstance(data, dict):
            raise _ParseError(REASON_UNMARSHAL)
        event_id = data.get("event_id")
        if event_id is not None and not isinstance(event_id, str):
            raise _ParseError(REASON_UNMARSHAL)
        ts = data.get("timestamp")
        if ts is not None and type(ts) is not int:
            raise _ParseError(REASON_UNMARSHAL)
        twin = data.get("twin")
        if twin is not None and not isinstance(twin, dict):
            raise _ParseError(REASON_UNMARSHAL)
        for body in (twin or {}).values():
            if body is not None:
                EdgeCoreEmulator._check_twin_types(body)
        if twin is None:
            raise _ParseError(REASON_NO_TWIN)
        for key, body in twin.items():
            if not _TWIN_KEY.fullmatch(key):
                raise _ParseError(REASON_KEY)
            if body is None:
                continue
            for side in ("expected", "actual"):
                tv = body.get(side)
                if isinstance(tv, dict):
                    value = tv.get("value")
                    if isinstance(value, str) and value and not _TWIN_VALUE.fullmatch(value):
                        raise _ParseError(REASON_VALUE)
        return _Incoming(event_id or "", twin)

    @staticmethod
    def _check_twin_types(body: object) -> None:
        """Field types of MsgTwin, as Go's decoder enforces them."""
        if not isinstance(body, dict):
            raise _ParseError(REASON_UNMARSHAL)
        for side in ("expected", "actual"):
            tv = body.get(side)
            if tv is None:
                continue
            if not isinstance(tv, dict):
                raise _ParseError(REASON_UNMARSHAL)
            value = tv.get("value")
            if value is not None and not isinstance(value, str):
                raise _ParseError(REASON_UNMARSHAL)
            meta = tv.get("metadata")
            if meta is not None:
                if not isinstance(meta, dict):
                    raise _ParseError(REASON_UNMARSHAL)
                ts = meta.get("timestamp")
                if ts is not None and type(ts) is not int:
                    raise _ParseError(REASON_UNMARSHAL)
        optional = body.get("optional")
        if optional is not None and not isinstance(optional, bool):
            raise _ParseError(REASON_UNMARSHAL)
        meta = body.get("metadata")
        if meta is not None:
            if not isinstance(meta, dict):
                raise _ParseError(REASON_UNMARSHAL)
            type_ = meta.get("type")
            if type_ is not None and not isinstance(type_, str):
                raise _ParseError(REASON_UNMARSHAL)

    def _handle_twin_update(
        self, key: str, incoming: _Incoming, *, raw: bytes | None = None
    ) -> None:
        result_topic = f"{DEVICE_PREFIX}{key}/twin/update/result"
        device = self.devices.get(key)
        event_id = incoming.event_id
        if device is None:
            self._reject(result_topic, event_id, 404, REASON_NOT_EXISTED)
            return
        # A value object without "value" panics EdgeCore's twin module (§3.5a.10).
        for body in incoming.twin.values():
            if body is None:
                continue
            for side in ("expected", "actual"):
                tv = body.get(side)
                if isinstance(tv, dict) and tv.get("value") is None:
                    self.crash_triggers.append((key, raw or b""))
                    self.crashed = True
                    return
        # Type checks first: one bad twin rejects the whole message (§3.5a.3).
        for prop, body in incoming.twin.items():
            existing = device.twins.get(prop)
            if body is None:
                if existing is None:
                    self._reject(result_topic, event_id, 400, REASON_BAD_BODY)
                    return
                continue
            meta = body.get("metadata")
            msg_type = meta.get("type") if isinstance(meta, dict) else None
            type_ = existing.type if existing is not None else (msg_type or "string")
            if existing is None and type_ not in _ALLOWED_TYPES:
                self._reject(result_topic, event_id, 400, f"the value type is not allowed {type_}")
                return
            for side in ("expected", "actual"):
                tv = body.get(side)
                if isinstance(tv, dict):
                    error = _go_value_error(type_, str(tv["value"]))
                    if error is not None:
                        self._reject(result_topic, event_id, 400, error)
                        return
        now = m.now_ms()
        result: dict[str, m.MsgTwin | None] = {}
        document: dict[str, m.TwinDoc] = {}
        for prop, body in incoming.twin.items():
            existing = device.twins.get(prop)
            if body is None:
                assert existing is not None
                if existing.optional:
                    del device.twins[prop]
                    result[prop] = None
                    document[prop] = m.TwinDoc(existing.snapshot(), None)
                continue
            last = None if existing is None else existing.snapshot()
            if existing is None:
                meta = body.get("metadata")
                msg_type = meta.get("type") if isinstance(meta, dict) else None
                optional = body.get("optional")
                existing = _Twin(
                    type=msg_type or "string",
                    optional=True if optional is None else bool(optional),
                )
                device.twins[prop] = existing
            else:
                optional = body.get("optional")
                if optional is False and existing.optional:
                    existing.optional = False
            sent: dict[str, m.TwinValue] = {}
            for side in ("expected", "actual"):
                tv = body.get(side)
                if not isinstance(tv, dict):
                    continue
                value = str(tv["value"])
                if side == "expected":
                    existing.expected, existing.expected_ts = value, now
                    self.expected_writes.append(Report(key, prop, value, existing.type))
                else:
                    existing.actual, existing.actual_ts = value, now
                    self.reports.append(Report(key, prop, value, existing.type))
                sent[side] = m.TwinValue(value, now)
            result[prop] = m.MsgTwin(
                expected=sent.get("expected"),
                actual=sent.get("actual"),
                optional=existing.optional,
                type=existing.type,
            )
            document[prop] = m.TwinDoc(last, existing.snapshot())
        self._publish(
            result_topic, m.build_twin_update_result(result, event_id=event_id, timestamp=now)
        )
        if document:
            self._publish(
                f"{DEVICE_PREFIX}{key}/twin/update/document",
                m.build_twin_document(document, event_id=event_id, timestamp=now),
            )
        self._publish_delta(key, device)

    def _publish_delta(self, key: str, device: _Device) -> None:
        with_expected = {k: tw for k, tw in device.twins.items() if tw.expected}
        delta = {
            k: tw.expected
            for k, tw in with_expected.items()
            if tw.expected is not None and tw.expected != tw.actual
        }
        if not delta:
            return
        self._publish(
            f"{DEVICE_PREFIX}{key}/twin/update/delta",
            m.build_twin_delta(
                {k: tw.snapshot() for k, tw in with_expected.items()},
                delta,
                event_id=str(uuid.uuid4()),
            ),
        )

    # --- twin/get, state/update, membership/get ----------------------------------------------

    def _handle_twin_get(self, key: str, payload: bytes) -> None:
        topic = f"{DEVICE_PREFIX}{key}/twin/get/result"
        try:
            data = orjson.loads(payload)
            if not isinstance(data, dict) or not isinstance(data.get("event_id", ""), str):
                raise ValueError
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            self._reject(topic, "", 400, "Unmarshal twin info failed")
            return
        event_id = data.get("event_id") or ""
        device = self.devices.get(key)
        if device is None:
            self._reject(topic, event_id, 404, f"Device {key} not found while getting twin")
            return
        twins = {k: tw.snapshot() for k, tw in device.twins.items()}
        self._publish(topic, m.build_twin_get_result(twins, event_id=event_id))

    def _handle_state_update(self, key: str, payload: bytes) -> None:
        device = self.devices.get(key)
        if device is None:
            return
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        state: str | None = None
        for k, v in data.items():
            if k.lower() == "state":
                if not isinstance(v, str):
                    return
                state = v
        if state is None or state.lower() not in _STATES:
            return
        device.state = state
        device.last_online = _rfc3339_now() if state.lower() in ("online", "ok") else ""
        self.states.append((key, state))
        self._publish(
            f"{DEVICE_PREFIX}{key}/state/update/result",
            m.build_state_update_result(
                device.name, state, device.last_online or None, event_id=str(uuid.uuid4())
            ),
        )

    def _handle_membership_get(self, node: str, payload: bytes) -> None:
        try:
            data = orjson.loads(payload)
            if not isinstance(data, dict) or not isinstance(data.get("event_id", ""), str):
                raise ValueError
        except ValueError:
            self._reject(f"{NODE_PREFIX}{node}/membership/get/result", "", 400, "Unmarshal failed")
            return
        devices = [
            m.MembershipDevice(
                id=key,
                name=d.name,
                description=d.description,
                state=d.state,
                last_online=d.last_online,
            )
            for key, d in self.devices.items()
        ]
        self._publish(
            t.membership_get_result(self.node),
            m.build_membership_get_result(devices, event_id=data.get("event_id") or ""),
        )
