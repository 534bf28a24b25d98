"""Builders of OPC-UA DeviceModels and Devices for the tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mapper_opcua.driver import OpcUaDriver

from mapper_sdk.binding import BoundDevice
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property

from .device import VARIABLES, DeviceServer


def opcua_device(
    name: str,
    props: Mapping[str, tuple[str, str, Mapping[str, Any]]],
    protocol: Mapping[str, Any],
    *,
    collect_cycle_ms: int = 100,
) -> tuple[Device, DeviceModel]:
    """``props``: name -> (model type, access mode, visitor configData)."""
    model = make_model(
        f"{name}-model",
        *(model_property(p, t, a) for p, (t, a, _) in props.items()),
        protocol="opcua",
    )
    visitors = {p: v for p, (_, _, v) in props.items()}
    device = make_device(name, model, protocol, visitors, collect_cycle_ms=collect_cycle_ms)
    return device, model


def every_variable(
    server: DeviceServer,
    name: str = "every-type",
    protocol: Mapping[str, Any] | None = None,
    **visitor: Any,
) -> tuple[Device, DeviceModel]:
    """A device with one ReadWrite property per variable of the test server; ``protocol``
    adds protocol configData keys."""
    props = {
        v.name: (v.model_type, "ReadWrite", {"nodeID": server.node_id(v.name), **visitor})
        for v in VARIABLES
    }
    return opcua_device(name, props, {"url": server.url, **(protocol or {})})


def bound(device: Device, model: DeviceModel) -> BoundDevice:
    return bind_or_raise(device, model, OpcUaDriver)
