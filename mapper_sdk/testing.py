"""What a mapper author needs to test a driver: CRDs built in code and a runtime to run them.

from mapper_sdk.testing import make_model, make_device, model_property, run_devices

model = make_model("thermo-model", model_property("temp", "FLOAT", "ReadOnly"), protocol="my")
device = make_device("thermo-1", model, {"host": "127.0.0.1"}, {"temp": {"address": 3}})
async with run_devices([(device, model)], drivers=[MyDriver]) as (runtime, bus):
    await bus.wait_for(lambda: bus.latest(ref, "temp") is not None)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from mapper_sdk._registry import Registry
from mapper_sdk._supervisor import SupervisorSettings
from mapper_sdk.binding import BoundDevice, DeviceRef, bind
from mapper_sdk.bus.memory import MemoryBus
from mapper_sdk.driver import DriverClass
from mapper_sdk.errors import ConfigError, Problem
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.runtime import MapperRuntime

if TYPE_CHECKING:
    from mapper_sdk.sinks import SinkHub

FAST_SETTINGS = SupervisorSettings(
    connect_timeout=2.0,
    read_timeout=2.0,
    write_timeout=2.0,
    close_timeout=1.0,
    backoff_base=0.05,
    backoff_cap=0.5,
    max_read_failures=2,
    desired_ttl=5.0,
)
"""Short timeouts and backoff so tests of failure and recovery finish quickly."""


def model_property(
    name: str,
    type: str = "FLOAT",
    access_mode: str = "ReadWrite",
    *,
    minimum: str | None = None,
    maximum: str | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """One ``DeviceModel.spec.properties[]`` entry."""
    prop: dict[str, Any] = {"name": name, "type": type, "accessMode": access_mode}
    for key, value in (("minimum", minimum), ("maximum", maximum), ("unit", unit)):
        if value is not None:
            prop[key] = value
    return prop


def make_model(
    name: str, *properties: Mapping[str, Any], protocol: str = "virtual", namespace: str = "default"
) -> DeviceModel:
    """A v1beta1 DeviceModel."""
    return DeviceModel.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"protocol": protocol, "properties": list(properties)},
        }
    )


def make_device(
    name: str,
    model: DeviceModel,
    protocol_config: Mapping[str, Any] | None = None,
    visitors: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    collect_cycle_ms: int = 100,
    report_cycle_ms: int = 0,
    report_to_cloud: bool = True,
    desired: Mapping[str, str] | None = None,
    namespace: str | None = None,
) -> Device:
    """A v1beta1 Device of ``model`` with one property per visitor (all model properties if
    ``visitors`` is omitted)."""
    protocol = model.spec.protocol or "virtual"
    visitors = visitors if visitors is not None else {p.name: {} for p in model.spec.properties}
    properties = []
    for prop_name, config in visitors.items():
        prop: dict[str, Any] = {
            "name": prop_name,
            "visitors": {"protocolName": protocol, "configData": dict(config)},
            "collectCycle": collect_cycle_ms,
            "reportCycle": report_cycle_ms,
            "reportToCloud": report_to_cloud,
        }
        if desired and prop_name in desired:
            prop["desired"] = {"value": desired[prop_name]}
        properties.append(prop)
    return Device.model_validate(
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": namespace or model.metadata.namespace},
            "spec": {
                "deviceModelRef": {"name": model.metadata.name},
                "nodeName": "edge-node",
                "protocol": {"protocolName": protocol, "configData": dict(protocol_config or {})},
                "properties": properties,
            },
        }
    )


def bind_or_raise(device: Device, model: DeviceModel, driver: DriverClass | None) -> BoundDevice:
    """Bind like the loader does; raise ``ConfigError`` listing every problem."""
    bound, problems = bind(device, model, driver)
    errors = [p for p in problems if p.severity == "error"]
    if bound is None or errors:
        raise ConfigError([Problem(p.message, path=".".join(map(str, p.path))) for p in errors])
    return bound


@asynccontextmanager
async def run_devices(
    devices: Iterable[tuple[Device, DeviceModel]],
    *,
    drivers: Iterable[DriverClass] = (),
    settings: SupervisorSettings = FAST_SETTINGS,
    bus: MemoryBus | None = None,
    write_wait: float = 5.0,
    sinks: SinkHub | None = None,
) -> AsyncIterator[tuple[MapperRuntime, MemoryBus]]:
    """Run ``devices`` with ``drivers`` (plus the installed ones) on an in-memory bus."""
    registry = Registry.from_entry_points()
    for driver in drivers:
        registry.add(driver)
    bus = bus if bus is not None else MemoryBus()
    bound = []
    for device, model in devices:
        bound.append(bind_or_raise(device, model, registry.get(device.spec.protocol.protocol_name)))
    runtime = MapperRuntime(
        bus, registry=registry, settings=settings, write_wait=write_wait, sinks=sinks
    )
    async with runtime as rt:
        await rt.apply(bound)
        yield rt, bus


def ref_of(device: Device) -> DeviceRef:
    """The ``DeviceRef`` of a Device object."""
    return DeviceRef(device.metadata.namespace, device.metadata.name)


__all__ = [
    "FAST_SETTINGS",
    "MemoryBus",
    "bind_or_raise",
    "make_device",
    "make_model",
    "model_property",
    "ref_of",
    "run_devices",
]
