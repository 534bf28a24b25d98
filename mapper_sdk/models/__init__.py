"""Pydantic v2 models of the ``devices.kubeedge.io`` CRDs (v1beta1; v1alpha2 read as legacy)."""

from mapper_sdk.models.device import (
    DbMethod,
    Device,
    DeviceMethod,
    DeviceModelRef,
    DeviceProperty,
    DeviceSpec,
    DeviceStatusField,
    ProtocolConfig,
    PushMethod,
    PushMethodHttp,
    PushMethodMqtt,
    PushMethodOtel,
    StateReport,
)
from mapper_sdk.models.device_model import (
    API_VERSION,
    GROUP,
    AccessMode,
    DeviceModel,
    DeviceModelSpec,
    ModelProperty,
    PropertyType,
    VisitorConfig,
)
from mapper_sdk.models.meta import ObjectMeta
from mapper_sdk.models.status import DeviceStatus, DeviceStatusStatus, TwinProperty, TwinStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "AccessMode",
    "DbMethod",
    "Device",
    "DeviceMethod",
    "DeviceModel",
    "DeviceModelRef",
    "DeviceModelSpec",
    "DeviceProperty",
    "DeviceSpec",
    "DeviceStatus",
    "DeviceStatusField",
    "DeviceStatusStatus",
    "ModelProperty",
    "ObjectMeta",
    "PropertyType",
    "ProtocolConfig",
    "PushMethod",
    "PushMethodHttp",
    "PushMethodMqtt",
    "PushMethodOtel",
    "StateReport",
    "TwinProperty",
    "TwinStatus",
    "VisitorConfig",
]
