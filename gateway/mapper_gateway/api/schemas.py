"""Request and response models of the REST API; CRD models are never returned directly.

Keeping the wire shapes here means a CRD model can grow a field without the API changing, and
the OpenAPI document at ``/docs`` says exactly what a client gets. The ``KubeEdge*`` models
copy the upstream mapper-framework REST API (contract §5.5), Go field names included.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    status: str = Field(description="refused, not_found, error, ...")
    reason: str = Field(description="a short code, e.g. read_only, out_of_range, unauthorized")
    message: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    waiting: list[str] = Field(description="what the gateway still waits for")
    devices: int


class PropertyView(BaseModel):
    name: str
    type: str
    access_mode: str
    writable: bool
    unit: str | None = None
    minimum: str | None = None
    maximum: str | None = None
    value: str | None = Field(description="the last value read, as a KubeEdge twin string")
    timestamp: int | None = Field(description="when it was read, epoch milliseconds")
    error: str | None = Field(description="why the last read of it failed, if it did")
    desired: str | None = None


class HistorySample(BaseModel):
    timestamp: int = Field(description="when the value was reported, epoch milliseconds")
    value: str = Field(description="the value as a KubeEdge twin string")


class PropertyHistory(BaseModel):
    device: str = Field(description="namespace/name")
    property: str
    type: str = Field(description="the property's type in its DeviceModel (FLOAT, INT...)")
    samples: list[HistorySample] = Field(description="oldest first")


class DeviceStatsView(BaseModel):
    reads: int
    read_errors: int
    reports: int
    connects: int
    connect_failures: int
    writes_applied: int
    writes_failed: int
    last_read_ms: float


class DeviceView(BaseModel):
    id: str
    namespace: str
    name: str
    protocol: str
    model: str
    source: str | None = Field(description="files, or dmi:<protocol> for EdgeCore's devices")
    state: str
    last_error: str | None
    properties: list[PropertyView]
    stats: DeviceStatsView


class MethodView(BaseModel):
    name: str
    description: str
    properties: list[str]


class DeviceDetail(DeviceView):
    labels: dict[str, str]
    node_name: str
    methods: list[MethodView]


class DeviceList(BaseModel):
    total: int
    items: list[DeviceView]


class WriteRequest(BaseModel):
    value: str | int | float | bool = Field(
        description="the desired value; numbers and booleans are sent as KubeEdge twin strings"
    )


class WriteResponse(BaseModel):
    status: str = Field(description="applied, pending, refused, superseded, expired or failed")
    reason: str
    message: str
    device: str
    property: str
    value: str


class ModelPropertyView(BaseModel):
    name: str
    type: str
    access_mode: str
    description: str
    unit: str | None
    minimum: str | None
    maximum: str | None


class ModelView(BaseModel):
    namespace: str
    name: str
    protocol: str
    properties: list[ModelPropertyView]
    devices: int = Field(description="running devices of this model")


class ProblemView(BaseModel):
    file: str | None
    line: int | None
    column: int | None
    path: str
    message: str
    severity: str


class FileView(BaseModel):
    file: str
    ok: bool = Field(description="false: the version on disk has errors; the last good one runs")
    running_last_good: bool
    problems: list[ProblemView]


class FilesReport(BaseModel):
    directory: str | None
    reloads: int
    files: list[FileView]
    problems: list[ProblemView] = Field(description="binding problems across files")


# -- KubeEdge mapper-framework REST API (contract §5.5), read-only -------------------------------


class KubeEdgeBase(BaseModel):
    apiVersion: str = "v1"
    statusCode: int = 200
    timeStamp: str


class KubeEdgePing(KubeEdgeBase):
    Message: str


class KubeEdgeReadData(BaseModel):
    DeviceName: str
    PropertyName: str
    Namespace: str
    Value: str
    Type: str
    TimeStamp: int


class KubeEdgeRead(KubeEdgeBase):
    Data: KubeEdgeReadData


class KubeEdgeParameter(BaseModel):
    PropertyName: str
    ValueType: str


class KubeEdgeMethod(BaseModel):
    Name: str
    Path: str
    Parameters: list[KubeEdgeParameter]


class KubeEdgeMethodsData(BaseModel):
    Methods: list[KubeEdgeMethod]


class KubeEdgeMethods(KubeEdgeBase):
    Data: KubeEdgeMethodsData


class KubeEdgeModelProperty(BaseModel):
    name: str
    dataType: str
    description: str
    accessMode: str
    minimum: str
    maximum: str
    unit: str


class KubeEdgeModel(KubeEdgeBase):
    id: str
    name: str
    namespace: str
    description: str
    properties: list[KubeEdgeModelProperty]
