"""Twin values and the ``DeviceStatus`` object (contract §1.4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mapper_sdk.models._base import CrdModel, FreeForm, LenientStr
from mapper_sdk.models.meta import ObjectMeta


class TwinProperty(CrdModel):
    """A twin value as KubeEdge stores it: a string plus string metadata."""

    value: LenientStr
    metadata: dict[str, LenientStr] = Field(default_factory=dict)


class TwinStatus(CrdModel):
    """One entry of ``status.twins``. ``desired`` is the v1alpha2 name of ``observedDesired``."""

    property_name: str
    reported: TwinProperty | None = None
    observed_desired: TwinProperty | None = None
    desired: TwinProperty | None = None


class DeviceStatusStatus(CrdModel):
    twins: list[TwinStatus] = Field(default_factory=list)
    state: str | None = None
    last_online_time: str | None = None
    extensions: FreeForm | None = None


class DeviceStatus(CrdModel):
    """The ``DeviceStatus`` object of KubeEdge >= 1.23: same name and namespace as its Device."""

    api_version: Literal["devices.kubeedge.io/v1beta1"] = "devices.kubeedge.io/v1beta1"
    kind: Literal["DeviceStatus"] = "DeviceStatus"
    metadata: ObjectMeta
    spec: FreeForm = Field(default_factory=dict)
    status: DeviceStatusStatus = Field(default_factory=DeviceStatusStatus)
