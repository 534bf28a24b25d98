"""``DeviceModel`` of ``devices.kubeedge.io/v1beta1`` (contract §1.2)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from mapper_sdk.models._base import CrdModel, FreeForm, LenientStr
from mapper_sdk.models.meta import ObjectMeta

GROUP = "devices.kubeedge.io"
API_VERSION = f"{GROUP}/v1beta1"


class PropertyType(StrEnum):
    """The value type of a model property, as the CRD spells it."""

    INT = "INT"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    STRING = "STRING"
    BOOLEAN = "BOOLEAN"
    BYTES = "BYTES"
    STREAM = "STREAM"


class AccessMode(StrEnum):
    """Whether a property may be written."""

    READ_WRITE = "ReadWrite"
    READ_ONLY = "ReadOnly"


class VisitorConfig(CrdModel):
    """``visitors`` of a property: how the driver reaches the value on the device."""

    protocol_name: str = ""
    config_data: FreeForm | None = None


class ModelProperty(CrdModel):
    """One property of a DeviceModel. ``minimum``/``maximum`` are strings in the CRD."""

    name: str = Field(min_length=1)
    description: str = ""
    type: PropertyType | None = None
    access_mode: AccessMode | None = None
    minimum: LenientStr | None = None
    maximum: LenientStr | None = None
    unit: LenientStr | None = None
    visitors: VisitorConfig | None = None  # model-level default (KubeEdge >= 1.22)


class DeviceModelSpec(CrdModel):
    protocol: str = ""
    protocol_config_data: FreeForm | None = None  # model-level default (KubeEdge >= 1.22)
    properties: list[ModelProperty] = Field(default_factory=list)


class DeviceModel(CrdModel):
    """A ``DeviceModel`` object: the property catalogue shared by devices of one kind."""

    api_version: Literal["devices.kubeedge.io/v1beta1"] = "devices.kubeedge.io/v1beta1"
    kind: Literal["DeviceModel"] = "DeviceModel"
    metadata: ObjectMeta
    spec: DeviceModelSpec = Field(default_factory=DeviceModelSpec)

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, name)``, the key a Device's ``deviceModelRef`` resolves to."""
        return (self.metadata.namespace, self.metadata.name)

    def property(self, name: str) -> ModelProperty | None:
        """The model property called ``name``, or ``None``."""
        for prop in self.spec.properties:
            if prop.name == name:
                return prop
        return None
