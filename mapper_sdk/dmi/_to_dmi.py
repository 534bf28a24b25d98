"""v1beta1 CRD models -> DMI ``Device`` / ``DeviceModel`` messages, built as EdgeCore builds them.

Used by tests, the EdgeCore emulator and ``GetDevice`` answers. ``device_to_dmi`` given the model
merges it into the device first, as EdgeCore's DMI cache does (§1.6). Pure: no I/O, no logging.
"""

from __future__ import annotations

from mapper_sdk.binding import merge_config
from mapper_sdk.dmi._config_data import encode_config, encode_scalar
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.models import (
    DbMethod,
    Device,
    DeviceModel,
    DeviceProperty,
    DeviceStatusField,
    ModelProperty,
    PushMethod,
    TwinProperty,
    VisitorConfig,
)


def _twin_property_to_dmi(twin: TwinProperty, target: pb.TwinProperty) -> None:
    target.value = twin.value
    target.metadata.update(twin.metadata)


def _db_to_dmi(db: DbMethod, target: pb.DBMethod) -> None:
    if db.influxdb2 is not None:
        influx = target.influxdb2
        influx.SetInParent()
        if (c := db.influxdb2.influxdb2_client_config) is not None:
            influx.influxdb2ClientConfig.CopyFrom(
                pb.Influxdb2ClientConfig(url=c.url, org=c.org, bucket=c.bucket)
            )
        if (d := db.influxdb2.influxdb2_data_config) is not None:
            influx.influxdb2DataConfig.CopyFrom(
                pb.Influxdb2DataConfig(measurement=d.measurement, tag=d.tag, fieldKey=d.field_key)
            )
    if db.redis is not None:
        target.redis.SetInParent()
        if (r := db.redis.redis_client_config) is not None:
            target.redis.redisClientConfig.CopyFrom(
                pb.RedisClientConfig(
                    addr=r.addr, db=r.db, poolsize=r.poolsize, minIdleConns=r.min_idle_conns
                )
            )
    if db.tdengine is not None:
        target.tdengine.SetInParent()
        if (t := db.tdengine.td_engine_client_config) is not None:
            target.tdengine.tdEngineClientConfig.CopyFrom(
                pb.TDEngineClientConfig(addr=t.addr, dbname=t.db_name)
            )
    if db.mysql is not None:
        target.mysql.SetInParent()
        if (m := db.mysql.mysql_client_config) is not None:
            target.mysql.mysqlClientConfig.CopyFrom(
                pb.MySQLClientConfig(addr=m.addr, database=m.database, userName=m.user_name)
            )


def _push_to_dmi(push: PushMethod, target: pb.PushMethod, path: str) -> None:
    target.SetInParent()
    if (h := push.http) is not None:
        target.http.CopyFrom(
            pb.PushMethodHTTP(
                hostname=h.host_name, port=h.port, requestpath=h.request_path, timeout=h.timeout
            )
        )
    if (q := push.mqtt) is not None:
        target.mqtt.CopyFrom(
            pb.PushMethodMQTT(address=q.address, topic=q.topic, qos=q.qos, retained=q.retained)
        )
    if push.otel is not None:
        target.otel.CopyFrom(pb.PushMethodOTEL(endpointURL=push.otel.endpoint_url))
    if push.db_method is not None:
        target.dbMethod.SetInParent()
        _db_to_dmi(push.db_method, target.dbMethod)
    if push.anomaly_detection is not None:
        target.anomalyDetection.SetInParent()
        for key, value in push.anomaly_detection.items():
            target.anomalyDetection.data[key].CopyFrom(
                encode_scalar(value, f"{path}.anomalyDetection.{key}")
            )


def _merged_visitors(
    prop: DeviceProperty, model_prop: ModelProperty | None
) -> VisitorConfig | None:
    """The instance visitors over the model's, as EdgeCore's DMI cache merges them (§1.6)."""
    model_visitors = model_prop.visitors if model_prop is not None else None
    if model_visitors is None:
        return prop.visitors
    instance = prop.visitors
    return VisitorConfig(
        protocol_name=(instance.protocol_name if instance else "") or model_visitors.protocol_name,
        config_data=merge_config(
            model_visitors.config_data, instance.config_data if instance else None
        ),
    )


def _property_to_dmi(
    prop: DeviceProperty, model: DeviceModel | None, target: pb.DeviceProperty, path: str
) -> None:
    target.name = prop.name
    target.reportCycle = prop.report_cycle
    target.collectCycle = prop.collect_cycle
    target.reportToCloud = prop.report_to_cloud
    if prop.desired is not None:
        _twin_property_to_dmi(prop.desired, target.desired)
    visitors = _merged_visitors(prop, model.property(prop.name) if model else None)
    if visitors is not None:
        target.visitors.protocolName = visitors.protocol_name
        if visitors.config_data is not None:
            target.visitors.configData.SetInParent()
            encode_config(
                visitors.config_data, target.visitors.configData, f"{path}.visitors.configData"
            )
    if prop.push_method is not None:
        _push_to_dmi(prop.push_method, target.pushMethod, f"{path}.pushMethod")


def _status_to_dmi(status: DeviceStatusField, target: pb.DeviceStatus) -> None:
    target.SetInParent()
    target.reportToCloud = bool(status.report_to_cloud)
    target.reportCycle = status.report_cycle or 0
    for twin in status.twins or ():
        out = target.twins.add(propertyName=twin.property_name)
        if twin.reported is not None:
            _twin_property_to_dmi(twin.reported, out.reported)
        observed = twin.observed_desired or twin.desired
        if observed is not None:
            _twin_property_to_dmi(observed, out.observedDesired)


def device_to_dmi(device: Device, model: DeviceModel | None = None) -> pb.Device:
    """``device`` as EdgeCore sends it; with ``model``, merged first as EdgeCore does (§1.6).

    Raises ``DmiConversionError`` for configData EdgeCore would refuse (nested, array, null).
    """
    spec = device.spec
    msg = pb.Device(name=device.metadata.name, namespace=device.metadata.namespace)
    msg.spec.deviceModelReference = spec.device_model_ref.name
    msg.spec.protocol.protocolName = spec.protocol.protocol_name
    protocol_config = spec.protocol.config_data
    if model is not None and model.spec.protocol_config_data is not None:
        protocol_config = merge_config(model.spec.protocol_config_data, protocol_config)
    if protocol_config is not None:
        msg.spec.protocol.configData.SetInParent()
        encode_config(protocol_config, msg.spec.protocol.configData, "spec.protocol.configData")
    for i, prop in enumerate(spec.properties):
        _property_to_dmi(prop, model, msg.spec.properties.add(), f"spec.properties.{i}")
    for method in spec.methods:
        msg.spec.methods.add(
            name=method.name, description=method.description, propertyNames=method.property_names
        )
    if device.status is not None:
        _status_to_dmi(device.status, msg.status)
    return msg


def model_to_dmi(model: DeviceModel) -> pb.DeviceModel:
    """``model`` as EdgeCore sends it: names, types and bounds only (§4.3)."""
    msg = pb.DeviceModel(name=model.metadata.name, namespace=model.metadata.namespace)
    msg.spec.SetInParent()
    for p in model.spec.properties:
        msg.spec.properties.add(
            name=p.name,
            description=p.description,
            type=p.type.value if p.type else "",
            accessMode=p.access_mode.value if p.access_mode else "",
            minimum=p.minimum or "",
            maximum=p.maximum or "",
            unit=p.unit or "",
        )
    return msg
