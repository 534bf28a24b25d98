"""``Device`` of ``devices.kubeedge.io/v1beta1`` (contract §1.3, §1.4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mapper_sdk.models._base import CrdModel, Cycle, FreeForm, LenientStr
from mapper_sdk.models.device_model import VisitorConfig
from mapper_sdk.models.meta import ObjectMeta
from mapper_sdk.models.status import TwinProperty, TwinStatus


class DeviceModelRef(CrdModel):
    name: str = ""


class ProtocolConfig(CrdModel):
    """``spec.protocol``: the protocol name and its free-form connection settings."""

    protocol_name: str = ""
    config_data: FreeForm | None = None


class PushMethodHttp(CrdModel):
    host_name: str = ""  # includes the scheme, e.g. http://127.0.0.1
    port: int = Field(default=0, ge=0, le=65535)
    request_path: str = ""
    timeout: int = Field(default=0, ge=0)  # milliseconds


class PushMethodMqtt(CrdModel):
    address: str = ""  # e.g. tcp://127.0.0.1:1883
    topic: str = ""
    qos: int = Field(default=0, ge=0, le=2)
    retained: bool = False


class PushMethodOtel(CrdModel):
    endpoint_url: str = Field(default="", alias="endpointURL")


class Influxdb2ClientConfig(CrdModel):
    url: str = ""
    org: str = ""
    bucket: str = ""


class Influxdb2DataConfig(CrdModel):
    measurement: str = ""
    tag: dict[str, LenientStr] = Field(default_factory=dict)
    field_key: str = ""


class DbMethodInfluxdb2(CrdModel):
    influxdb2_client_config: Influxdb2ClientConfig | None = Field(
        default=None, alias="influxdb2ClientConfig"
    )
    influxdb2_data_config: Influxdb2DataConfig | None = Field(
        default=None, alias="influxdb2DataConfig"
    )


class RedisClientConfig(CrdModel):
    addr: str = ""
    db: int = 0
    poolsize: int = 0
    min_idle_conns: int = 0


class DbMethodRedis(CrdModel):
    redis_client_config: RedisClientConfig | None = None


class TdEngineClientConfig(CrdModel):
    addr: str = ""
    db_name: str = ""


class DbMethodTdEngine(CrdModel):
    # The upstream JSON name is capitalised (`TDEngineClientConfig`), unlike its siblings.
    td_engine_client_config: TdEngineClientConfig | None = Field(
        default=None, alias="TDEngineClientConfig"
    )


class MysqlClientConfig(CrdModel):
    addr: str = ""
    database: str = ""
    user_name: str = ""


class DbMethodMysql(CrdModel):
    mysql_client_config: MysqlClientConfig | None = None


class DbMethod(CrdModel):
    influxdb2: DbMethodInfluxdb2 | None = None
    redis: DbMethodRedis | None = None
    tdengine: DbMethodTdEngine | None = Field(default=None, alias="TDEngine")
    mysql: DbMethodMysql | None = None


class PushMethod(CrdModel):
    """``pushMethod``: where a property's values are pushed besides the twin."""

    http: PushMethodHttp | None = None
    mqtt: PushMethodMqtt | None = None
    otel: PushMethodOtel | None = None
    db_method: DbMethod | None = None
    anomaly_detection: FreeForm | None = None


class DeviceProperty(CrdModel):
    """One property instance of a Device; ``name`` must exist in the model."""

    name: str = Field(min_length=1)
    desired: TwinProperty | None = None
    visitors: VisitorConfig | None = None
    report_cycle: Cycle = 0
    collect_cycle: Cycle = 0
    report_to_cloud: bool = False
    push_method: PushMethod | None = None


class DeviceMethod(CrdModel):
    """``spec.methods[]``: a named group of writable properties (REST write API)."""

    name: str = Field(min_length=1)
    description: str = ""
    property_names: list[str] = Field(default_factory=list)


class StateReport(CrdModel):
    """``spec.stateReport`` (KubeEdge >= 1.23): the device-state heartbeat."""

    report_to_cloud: bool = False
    report_cycle: Cycle = 0


class DeviceSpec(CrdModel):
    device_model_ref: DeviceModelRef = Field(default_factory=DeviceModelRef)
    node_name: str = ""
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    properties: list[DeviceProperty] = Field(default_factory=list)
    methods: list[DeviceMethod] = Field(default_factory=list)
    state_report: StateReport | None = None


class DeviceStatusField(CrdModel):
    """``Device.status`` in both shapes: 1.15-1.22 (twins, state) and 1.23 (report flags only)."""

    twins: list[TwinStatus] | None = None
    state: str | None = None
    last_online_time: str | None = None
    report_to_cloud: bool | None = None
    report_cycle: Cycle | None = None


class Device(CrdModel):
    """A ``Device`` object: one physical device bound to a model and a node."""

    api_version: Literal["devices.kubeedge.io/v1beta1"] = "devices.kubeedge.io/v1beta1"
    kind: Literal["Device"] = "Device"
    metadata: ObjectMeta
    spec: DeviceSpec = Field(default_factory=DeviceSpec)
    status: DeviceStatusField | None = None

    @property
    def id(self) -> str:
        """The KubeEdge device id, ``namespace/name``."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def model_key(self) -> tuple[str, str]:
        """``(namespace, model name)``: a Device may only use a model in its own namespace."""
        return (self.metadata.namespace, self.spec.device_model_ref.name)
