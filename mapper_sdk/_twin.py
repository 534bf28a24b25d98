"""The twin engine: what to report and what to write, decided without any I/O.

One ``TwinEngine`` per device keeps, for every property, the last value read, the last value
reported and the current desired value. Inputs are readings and desired values with the time
passed in; outputs are plain data (a ``TwinReport`` to publish, a ``WriteDecision``), so every
rule here is tested without sockets or clocks.

Reporting rule: after each read, a property is reported when its twin string changed since it
was last reported, or when its ``reportCycle`` has passed since then (KubeEdge's framework
reports every cycle; a long ``reportCycle`` turns unchanged values into a slower heartbeat).
All properties of a device that are due go out together: one report per device per cycle.
Properties with ``reportToCloud: false`` are read and kept (REST) and, when they have a
``pushMethod``, handed to sinks in ``TwinReport.local``; they never reach EdgeCore.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from mapper_sdk import values
from mapper_sdk.binding import BoundDevice, BoundProperty
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.driver import Value
from mapper_sdk.errors import DesiredValueError, DriverError, ValueConversionError

_REPORT_SLACK = 0.5
"""Fraction of the collect cycle a report may come early, so tick jitter never skips a cycle."""

_TO_TWIN = values.to_twin

# A frozen dataclass's __init__ sets each field through object.__setattr__ (0.5 µs per
# TwinValue, one per reported property and cycle); the slots' own setters do the same in half
# the time. Checked against the fields here, so a field added to TwinValue fails at import.
if [f.name for f in fields(TwinValue)] != ["name", "value", "type", "desired"]:
    raise TypeError("TwinValue's fields changed: update _twin_value")
_new_object = object.__new__
_slot_setters = {name: TwinValue.__dict__[name].__set__ for name in TwinValue.__slots__}
_set_name: Callable[[TwinValue, str], None] = _slot_setters["name"]
_set_value: Callable[[TwinValue, str], None] = _slot_setters["value"]
_set_type: Callable[[TwinValue, str], None] = _slot_setters["type"]
_set_desired: Callable[[TwinValue, str | None], None] = _slot_setters["desired"]


def _twin_value(name: str, value: str, twin_type: str, desired: str | None) -> TwinValue:
    """``TwinValue(name, value, twin_type, desired)``, built faster."""
    twin: TwinValue = _new_object(TwinValue)
    _set_name(twin, name)
    _set_value(twin, value)
    _set_type(twin, twin_type)
    _set_desired(twin, desired)
    return twin


_FLOATS: dict[float, float] = {}


def _shared_float(number: float) -> float:
    """One float object per distinct value: a fleet repeats a few cycles on every device."""
    return _FLOATS.setdefault(number, number) if len(_FLOATS) < 4096 else number


@dataclass(slots=True)
class PropertyState:
    """What the engine knows about one property."""

    raw: Value | None = None  # as the driver returned it, for cheap change detection
    value: Value | None = None  # coerced to the model type
    text: str | None = None
    read_at_ms: int | None = None
    error: str | None = None
    errors: int = 0  # failed reads and conversions of this property, for metrics
    reported_text: str | None = None
    reported_at: float | None = None
    report_by: float = 0.0  # reported_at + reportCycle - slack: unchanged values are due then
    desired: str | None = None
    desired_version: int = 0


@dataclass(frozen=True, slots=True)
class WriteDecision:
    """A checked desired value: write ``value`` to ``point``."""

    point: BoundProperty
    value: Value
    text: str
    version: int


class TwinEngine:
    """Report and desired-value decisions for one device."""

    def __init__(self, device: BoundDevice) -> None:
        self.device = device
        self.states = [PropertyState() for _ in device.properties]
        for point in device.properties:
            if point.desired is not None and point.desired.value != "" and point.writable:
                self.states[point.index].desired = point.desired.value
        # Per property, by index, worked out once: whether its values leave the engine at all,
        # and how long after a report an unchanged value is due again.
        self._reported = [p.report_to_cloud or p.push_method is not None for p in device.properties]
        self._heartbeat = [
            _shared_float((p.report_cycle_ms - p.collect_cycle_ms * _REPORT_SLACK) / 1000)
            for p in device.properties
        ]

    def on_readings(
        self,
        points: Sequence[BoundProperty],
        results: Sequence[Value | DriverError],
        now: float,
        wall_ms: int,
    ) -> TwinReport | None:
        """Record a batch of readings; return the report due now, if any."""
        # The hot path of every device tick: locals instead of attribute look-ups, and the
        # per-property constants were worked out in __init__.
        due: list[TwinValue] = []
        local: list[TwinValue] | None = None
        states, reported, heartbeat, to_twin = (
            self.states,
            self._reported,
            self._heartbeat,
            _TO_TWIN,
        )
        for point, result in zip(points, results, strict=True):
            index = point.index
            state = states[index]
            if isinstance(result, DriverError):
                state.error = str(result) or type(result).__name__
                state.errors += 1
                continue
            text = state.text
            # Unchanged raw value: skip the conversion, the text is the same as last time.
            if text is None or result != state.raw or type(result) is not type(state.raw):
                try:
                    state.value, text = to_twin(result, point.type)
                except ValueConversionError as exc:
                    state.error = str(exc)
                    state.errors += 1
                    continue
                state.text, state.raw = text, result
            state.read_at_ms = wall_ms
            state.error = None
            if not reported[index]:
                continue
            # Due when the text changed since it was last reported (never reported: the
            # reported text is None), or when the reportCycle heartbeat is due.
            if text != state.reported_text or now >= state.report_by:
                state.reported_text, state.reported_at = text, now
                state.report_by = now + heartbeat[index]
                # Not kept in the state: one more object per property of every device, for
                # the rare heartbeat of an unchanged value.
                twin = _twin_value(point.name, text, point.twin_type, state.desired)
                if point.report_to_cloud:
                    due.append(twin)
                elif local is None:
                    local = [twin]
                else:
                    local.append(twin)
        if local is not None:
            return TwinReport(self.device.ref, wall_ms, tuple(due), tuple(local))
        if due:
            return TwinReport(self.device.ref, wall_ms, tuple(due))
        return None

    def force_report(self, wall_ms: int) -> TwinReport | None:
        """Everything known and reportable, e.g. to resync after the link reconnects."""
        twins = []
        for point in self.device.properties:
            state = self.states[point.index]
            if point.report_to_cloud and state.text is not None:
                twins.append(TwinValue(point.name, state.text, point.twin_type, state.desired))
        return TwinReport(self.device.ref, wall_ms, tuple(twins)) if twins else None

    def check_desired(self, name: str, text: str, version: int | None = None) -> WriteDecision:
        """Check a desired value against the model; raise ``DesiredValueError`` to refuse it.

        Accepted values become the property's current desired value. ``version`` orders values
        from one source: an older or equal version than the one held is refused as stale, so a
        redelivered message is applied at most once.
        """
        point = self.device.property(name)
        if point is None:
            known = ", ".join(p.name for p in self.device.properties)
            raise DesiredValueError(
                f"device {self.device.ref} has no property {name!r} (it has: {known})",
                reason="unknown_property",
            )
        typed = values.check_desired(text, point.model, point.bounds)
        state = self.states[point.index]
        if version is not None and version <= state.desired_version:
            raise DesiredValueError(
                f"version {version} of {name!r} is not newer than {state.desired_version}",
                reason="stale",
            )
        state.desired = text
        state.desired_version = version if version is not None else state.desired_version + 1
        return WriteDecision(point, typed, text, state.desired_version)

    def pending_desired(self) -> list[WriteDecision]:
        """Desired values not yet seen on the device (to apply after a (re)connect)."""
        decisions = []
        for point in self.device.properties:
            state = self.states[point.index]
            if state.desired is None or not point.writable:
                continue
            try:
                typed = values.check_desired(state.desired, point.model, point.bounds)
            except (DesiredValueError, ValueConversionError):
                continue  # refused when it arrived; nothing to apply
            if state.value is not None and state.value == typed:
                continue  # compare typed values: "22" and "22.0" are the same setpoint
            decisions.append(WriteDecision(point, typed, state.desired, state.desired_version))
        return decisions
