"""Bind a Device to its DeviceModel and driver: the runtime-ready ``BoundDevice``.

Binding is where cross-object rules live (contract §1.6 and the foundation issue):

- the model-to-instance merge: model ``protocolConfigData`` then the device's ``configData``;
  model property ``visitors`` then the instance's (shallow, key by key);
- the device's properties exist in the model, names are unique, protocol names agree;
- each ``configData`` validates against the driver's own pydantic models;
- cycles are milliseconds; nanosecond-era values (>= 10^9) are converted with a warning.

``bind`` never raises for bad input: it returns ``BindProblem`` entries whose ``path`` points
into the Device (or the model, when ``in_model`` is set) so the loader can add file positions.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from mapper_sdk import values
from mapper_sdk.errors import ValueConversionError
from mapper_sdk.models import (
    AccessMode,
    Device,
    DeviceModel,
    DeviceProperty,
    ModelProperty,
    PropertyType,
    PushMethod,
    TwinProperty,
)

if TYPE_CHECKING:
    from mapper_sdk.driver import DriverClass

_TWIN_NAME = re.compile(r"[a-zA-Z0-9\-_.,:/@#]{1,128}")
"""EdgeCore's twin key rule (contract §3.3): property names become twin keys."""

DEFAULT_CYCLE_MS = 1000
"""KubeEdge's framework uses 1 s when a cycle is 0 (unset)."""

NANOSECOND_ERA = 10**9
"""Cycles at or above this were written for the 1.15-1.17 framework, which used nanoseconds."""

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class BindProblem:
    """A problem found while binding; ``path`` is relative to the object's root."""

    path: Path
    message: str
    severity: str = "error"
    in_model: bool = False


@dataclass(frozen=True, slots=True, order=True)
class DeviceRef:
    """A device's identity: its namespace and name (KubeEdge id ``namespace/name``)."""

    namespace: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class BoundProperty:
    """One device property, merged with its model property and ready to run."""

    name: str
    type: PropertyType
    access_mode: AccessMode
    model: ModelProperty
    bounds: values.Bounds
    visitor: BaseModel | None
    collect_cycle_ms: int
    report_cycle_ms: int
    report_to_cloud: bool
    push_method: PushMethod | None
    desired: TwinProperty | None
    index: int  # position in the device, so per-property state can live in flat lists
    twin_type: str  # the metadata.type EdgeCore accepts for this property
    # The Device's own property block this was bound from; it also keeps that object alive as
    # long as the bound property is cached, so the cache key's id() cannot be reused.
    source: DeviceProperty | None = field(default=None, repr=False)

    @property
    def writable(self) -> bool:
        return self.access_mode is AccessMode.READ_WRITE and self.type is not PropertyType.STREAM


@dataclass(frozen=True, slots=True, eq=False)
class BoundDevice:
    """A Device joined with its model and typed driver configs. Immutable; rebuilt on change."""

    ref: DeviceRef
    device: Device
    model: DeviceModel
    protocol: str
    protocol_config: BaseModel | None
    properties: tuple[BoundProperty, ...]
    state_report_to_cloud: bool
    state_report_cycle_ms: int
    _by_name: Mapping[str, BoundProperty] = field(default_factory=dict, repr=False)

    def property(self, name: str) -> BoundProperty | None:
        return self._by_name.get(name)

    def fingerprint(self) -> str:
        """Hash of everything but desired values: equal fingerprints need no driver restart."""
        return fingerprint(self.device, self.model)


def merge_config(
    base: Mapping[str, Any] | None, override: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Shallow, top-level merge: ``override`` keys replace ``base`` keys (contract §1.6)."""
    merged = dict(base or {})
    merged.update(override or {})
    return merged


def cycle_ms(raw: int) -> tuple[int, str | None]:
    """Normalise a CRD cycle to milliseconds; returns ``(ms, warning or None)``."""
    if raw == 0:
        return DEFAULT_CYCLE_MS, None
    if raw >= NANOSECOND_ERA:
        ms = max(1, raw // 1_000_000)
        return ms, (
            f"{raw} looks like nanoseconds (KubeEdge <= 1.17); using {ms} ms. "
            "Cycles are milliseconds since KubeEdge 1.18: write {ms}"
        ).replace("{ms}", str(ms))
    return raw, None


_BOUNDS_CACHE: dict[tuple[str | None, str | None, str | None, str], values.Bounds] = {}


def _bounds(prop: ModelProperty) -> values.Bounds:
    """``values.parse_bounds`` memoised: thousands of devices share a few model properties."""
    key = (prop.type, prop.minimum, prop.maximum, prop.name)
    bounds = _BOUNDS_CACHE.get(key)
    if bounds is None:
        bounds = values.parse_bounds(prop)  # raises for bad bounds: those are never cached
        if len(_BOUNDS_CACHE) < 4096:
            _BOUNDS_CACHE[key] = bounds
    return bounds


_SHARED_CONFIGS: weakref.WeakValueDictionary[tuple[type[BaseModel], bytes], BaseModel] = (
    weakref.WeakValueDictionary()
)
"""Validated visitor configs by content. A fleet built from one template repeats the same
visitor configData on every device: sharing one frozen object per distinct config saves its
validation and ~700 bytes per property. Entries vanish with the last device using them."""


_BOUND_PROPERTIES: weakref.WeakValueDictionary[
    tuple[int, int, int, DriverClass | None, str], BoundProperty
] = weakref.WeakValueDictionary()
"""Bound properties by (property object, model property, position, driver, protocol). The
loader makes identical property blocks one object, so a templated fleet binds each block
once. Entries vanish with the last device using them, so the cache needs no size limit and
never thrashes (a fixed-size LRU did, with more distinct blocks than its size)."""


def _share_key(
    model_cls: type[BaseModel], data: dict[str, Any]
) -> tuple[type[BaseModel], bytes] | None:
    if not model_cls.model_config.get("frozen", False):
        return None  # a mutable config must stay private to its property
    try:
        return model_cls, orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None  # not JSON-like (cannot come from YAML or DMI): validate it alone


def _pydantic_problems(exc: ValidationError, prefix: Path) -> list[BindProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        problems.append(BindProblem(prefix + tuple(err["loc"]), err["msg"]))
    return problems


class _Binder:
    """Accumulates problems while binding one device."""

    def __init__(self, device: Device, model: DeviceModel, driver: DriverClass | None) -> None:
        self.device = device
        self.model = model
        self.driver = driver
        self.problems: list[BindProblem] = []

    def error(self, path: Path, message: str, *, in_model: bool = False) -> None:
        self.problems.append(BindProblem(path, message, "error", in_model))

    def warn(self, path: Path, message: str) -> None:
        self.problems.append(BindProblem(path, message, "warning"))

    def check_protocol(self) -> str:
        protocol = self.device.spec.protocol.protocol_name
        model_protocol = self.model.spec.protocol
        if not protocol:
            self.error(("spec", "protocol", "protocolName"), "is required")
        elif model_protocol and model_protocol != protocol:
            self.error(
                ("spec", "protocol", "protocolName"),
                f"{protocol!r} does not match the model's protocol {model_protocol!r} "
                f"(DeviceModel {self.model.metadata.name}); "
                "EdgeCore routes them to different mappers",
            )
        return protocol

    def validate_config(
        self,
        model_cls: type[BaseModel] | None,
        data: dict[str, Any],
        path: Path,
        *,
        share: bool = False,
    ) -> BaseModel | None:
        if model_cls is None:
            return None
        key = _share_key(model_cls, data) if share else None
        if key is not None:
            shared = _SHARED_CONFIGS.get(key)
            if shared is not None:
                return shared
        try:
            config = model_cls.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(_pydantic_problems(exc, path))
            return None
        if key is not None:
            _SHARED_CONFIGS[key] = config
        return config

    def cycle(self, raw: int, path: Path) -> int:
        ms, warning = cycle_ms(raw)
        if warning:
            self.warn(path, warning)
        return ms

    def bind_property(self, index: int, prop: DeviceProperty) -> BoundProperty | None:
        model_prop = self.model.property(prop.name)
        protocol = self.device.spec.protocol.protocol_name
        key = (id(prop), id(model_prop), index, self.driver, protocol)
        cached = _BOUND_PROPERTIES.get(key)
        if cached is not None and cached.source is prop and cached.model is model_prop:
            return cached
        problems = len(self.problems)
        bound = self._bind_property(index, prop, model_prop)
        if bound is not None and len(self.problems) == problems:
            # Only a clean result is shared: a warning must be reported for every device.
            _BOUND_PROPERTIES[key] = bound
        return bound

    def _bind_property(
        self, index: int, prop: DeviceProperty, model_prop: ModelProperty | None
    ) -> BoundProperty | None:
        path: Path = ("spec", "properties", index)
        if model_prop is None:
            known = ", ".join(p.name for p in self.model.spec.properties) or "none"
            self.error(
                (*path, "name"),
                f"property {prop.name!r} is not in DeviceModel {self.model.metadata.name} "
                f"(its properties: {known})",
            )
            return None
        ptype = model_prop.type or PropertyType.STRING
        try:
            bounds = _bounds(model_prop)
        except ValueConversionError as exc:
            model_index = self.model.spec.properties.index(model_prop)
            self.error(("spec", "properties", model_index), str(exc), in_model=True)
            bounds = values.Bounds(None, None)
        visitor = self.bind_visitor(prop, model_prop, path)
        if prop.desired is not None and prop.desired.value != "":
            self.check_desired(prop, model_prop, bounds, path)
        collect_ms = self.cycle(prop.collect_cycle, (*path, "collectCycle"))
        # Unset reportCycle: report every collect cycle, as KubeEdge's twin loop does.
        report_ms = (
            self.cycle(prop.report_cycle, (*path, "reportCycle"))
            if prop.report_cycle
            else collect_ms
        )
        return BoundProperty(
            name=prop.name,
            type=ptype,
            access_mode=model_prop.access_mode or AccessMode.READ_WRITE,
            model=model_prop,
            bounds=bounds,
            visitor=visitor,
            collect_cycle_ms=collect_ms,
            report_cycle_ms=report_ms,
            report_to_cloud=prop.report_to_cloud,
            push_method=prop.push_method,
            desired=prop.desired,
            index=index,
            twin_type=values.twin_type(ptype) if ptype is not PropertyType.STREAM else "string",
            source=prop,
        )

    def bind_visitor(
        self, prop: DeviceProperty, model_prop: ModelProperty, path: Path
    ) -> BaseModel | None:
        model_visitor = model_prop.visitors
        merged = merge_config(
            model_visitor.config_data if model_visitor else None,
            prop.visitors.config_data if prop.visitors else None,
        )
        visitor_protocol = (prop.visitors.protocol_name if prop.visitors else "") or (
            model_visitor.protocol_name if model_visitor else ""
        )
        protocol = self.device.spec.protocol.protocol_name
        if visitor_protocol and protocol and visitor_protocol != protocol:
            self.error(
                (*path, "visitors", "protocolName"),
                f"{visitor_protocol!r} differs from the device protocol {protocol!r}",
            )
        if self.driver is None:
            return None
        return self.validate_config(
            self.driver.visitor_config_model,
            merged,
            (*path, "visitors", "configData"),
            share=True,
        )

    def check_desired(
        self, prop: DeviceProperty, model_prop: ModelProperty, bounds: values.Bounds, path: Path
    ) -> None:
        assert prop.desired is not None
        try:
            values.check_desired(prop.desired.value, model_prop, bounds)
        except Exception as exc:  # DesiredValueError or ValueConversionError: both are user input
            self.error((*path, "desired", "value"), str(exc))

    def bind(self) -> BoundDevice | None:
        protocol = self.check_protocol()
        seen: set[str] = set()
        for index, prop in enumerate(self.device.spec.properties):
            if not _TWIN_NAME.fullmatch(prop.name):
                self.error(
                    ("spec", "properties", index, "name"),
                    f"{prop.name!r} cannot be a twin name: EdgeCore accepts only 1-128 of "
                    "a-z A-Z 0-9 - _ . , : / @ # and refuses the whole report otherwise",
                )
            if prop.name in seen:
                self.error(
                    ("spec", "properties", index, "name"), f"duplicate property {prop.name!r}"
                )
            seen.add(prop.name)
        bound = [self.bind_property(i, p) for i, p in enumerate(self.device.spec.properties)]
        merged_protocol = merge_config(
            self.model.spec.protocol_config_data, self.device.spec.protocol.config_data
        )
        protocol_config = None
        if self.driver is not None:
            protocol_config = self.validate_config(
                self.driver.protocol_config_model,
                merged_protocol,
                ("spec", "protocol", "configData"),
            )
        self.check_methods()
        if any(p.severity == "error" for p in self.problems):
            return None
        properties = tuple(p for p in bound if p is not None)
        report_to_cloud, report_cycle = self.state_report()
        meta = self.device.metadata
        return BoundDevice(
            ref=DeviceRef(meta.namespace, meta.name),
            device=self.device,
            model=self.model,
            protocol=protocol,
            protocol_config=protocol_config,
            properties=properties,
            state_report_to_cloud=report_to_cloud,
            state_report_cycle_ms=report_cycle,
            _by_name={p.name: p for p in properties},
        )

    def check_methods(self) -> None:
        names = {p.name for p in self.device.spec.properties}
        for i, method in enumerate(self.device.spec.methods):
            for j, prop_name in enumerate(method.property_names):
                if prop_name not in names:
                    self.error(
                        ("spec", "methods", i, "propertyNames", j),
                        f"method {method.name!r} names property {prop_name!r}, "
                        "which this device does not have",
                    )

    def state_report(self) -> tuple[bool, int]:
        report = self.device.spec.state_report
        if report is not None:
            return report.report_to_cloud, self.cycle(
                report.report_cycle, ("spec", "stateReport", "reportCycle")
            )
        status = self.device.status
        if status is not None and status.report_to_cloud is not None:
            return status.report_to_cloud, self.cycle(
                status.report_cycle or 0, ("status", "reportCycle")
            )
        return False, DEFAULT_CYCLE_MS


def bind(
    device: Device, model: DeviceModel, driver: DriverClass | None
) -> tuple[BoundDevice | None, list[BindProblem]]:
    """Bind ``device`` to ``model`` (and ``driver``'s config models when a driver is known).

    Returns the bound device, or ``None`` when any error was found, plus every problem
    (errors and warnings). Without a driver, configData is not validated.
    """
    binder = _Binder(device, model, driver)
    return binder.bind(), binder.problems


def fingerprint(device: Device, model: DeviceModel) -> str:
    """A stable hash of what needs a driver restart when it changes.

    Desired values are excluded: a new desired value is a write, not a restart.
    """
    spec = device.spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude={"properties"}
    )
    spec["properties"] = [_cached_dump(prop, _property_dump) for prop in device.spec.properties]
    payload = {"spec": spec, "model": _cached_dump(model, _model_dump)}
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _property_dump(prop: BaseModel) -> dict[str, Any]:
    dumped = prop.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped.pop("desired", None)
    return dumped


def _model_dump(model: BaseModel) -> dict[str, Any]:
    assert isinstance(model, DeviceModel)
    return model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)


_DUMPS: OrderedDict[int, tuple[weakref.ref[BaseModel], dict[str, Any]]] = OrderedDict()
_DUMPS_MAX = 4096


def _cached_dump(obj: BaseModel, dump: Callable[[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    """``dump(obj)``, computed once per (frozen) object: devices of one template share their
    property objects and model, and every apply fingerprints every device."""
    cached = _DUMPS.get(id(obj))
    if cached is not None and cached[0]() is obj:
        _DUMPS.move_to_end(id(obj))
        return cached[1]
    dumped = dump(obj)
    _DUMPS[id(obj)] = (weakref.ref(obj), dumped)
    if len(_DUMPS) > _DUMPS_MAX:
        _DUMPS.popitem(last=False)
    return dumped
