"""DMI ``Device`` / ``DeviceModel`` messages -> v1beta1 CRD models: what EdgeCore sends us.

The DMI ``DeviceModel`` has no protocol, protocolConfigData or visitors: EdgeCore merges those
into each device before sending it (§1.6), so ``model_from_dmi`` takes the protocol from the
mapper and a device arrives with its visitors already complete. ``nodeName`` is not on the wire
either; it comes back as ``""``. Pure: no I/O, no logging.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mapper_sdk.dmi._config_data import DmiConversionError, decode_config
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.errors import Problem
from mapper_sdk.models import Device, DeviceModel


def _validated(cls: type[Device] | type[DeviceModel], doc: dict[str, Any], what: str) -> Any:
    try:
        return cls.model_validate(doc)
    except ValidationError as exc:
        problems = [
            Problem(err["msg"], path=".".join(str(p) for p in err["loc"]))
            for err in exc.errors(include_url=False)
        ]
        raise DmiConversionError(
            [Problem(f"{what}: {p.message}", path=p.path) for p in problems]
        ) from exc


def _twin_property(msg: pb.TwinProperty) -> dict[str, Any]:
    return {"value": msg.value, "metadata": dict(msg.metadata)}


def _http_from_dmi(msg: pb.PushMethodHTTP) -> dict[str, Any]:
    # The proto's names are lower-case; the CRD's (and our model's) are camelCase (§4.3).
    return {
        "hostName": msg.hostname,
        "port": msg.port,
        "requestPath": msg.requestpath,
        "timeout": msg.timeout,
    }


def _db_from_dmi(msg: pb.DBMethod) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if msg.HasField("influxdb2"):
        influx: dict[str, Any] = {}
        if msg.influxdb2.HasField("influxdb2ClientConfig"):
            c = msg.influxdb2.influxdb2ClientConfig
            influx["influxdb2ClientConfig"] = {"url": c.url, "org": c.org, "bucket": c.bucket}
        if msg.influxdb2.HasField("influxdb2DataConfig"):
            d = msg.influxdb2.influxdb2DataConfig
            influx["influxdb2DataConfig"] = {
                "measurement": d.measurement,
                "tag": dict(d.tag),
                "fieldKey": d.fieldKey,
            }
        out["influxdb2"] = influx
    if msg.HasField("redis"):
        r = msg.redis.redisClientConfig
        out["redis"] = {
            "redisClientConfig": {
                "addr": r.addr,
                "db": r.db,
                "poolsize": r.poolsize,
                "minIdleConns": r.minIdleConns,
            }
        }
    if msg.HasField("tdengine"):
        t = msg.tdengine.tdEngineClientConfig
        out["TDEngine"] = {"TDEngineClientConfig": {"addr": t.addr, "dbName": t.dbname}}
    if msg.HasField("mysql"):
        m = msg.mysql.mysqlClientConfig
        out["mysql"] = {
            "mysqlClientConfig": {"addr": m.addr, "database": m.database, "userName": m.userName}
        }
    return out


def _push_from_dmi(msg: pb.PushMethod, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if msg.HasField("http"):
        out["http"] = _http_from_dmi(msg.http)
    if msg.HasField("mqtt"):
        q = msg.mqtt
        out["mqtt"] = {
            "address": q.address,
            "topic": q.topic,
            "qos": q.qos,
            "retained": q.retained,
        }
    if msg.HasField("otel"):
        out["otel"] = {"endpointURL": msg.otel.endpointURL}
    if msg.HasField("dbMethod"):
        out["dbMethod"] = _db_from_dmi(msg.dbMethod)
    if msg.HasField("anomalyDetection"):
        out["anomalyDetection"] = decode_config(
            msg.anomalyDetection.data, f"{path}.anomalyDetection"
        )
    return out


def _property_from_dmi(msg: pb.DeviceProperty, path: str) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "name": msg.name,
        "reportCycle": msg.reportCycle,
        "collectCycle": msg.collectCycle,
        "reportToCloud": msg.reportToCloud,
    }
    if msg.HasField("desired"):
        prop["desired"] = _twin_property(msg.desired)
    if msg.HasField("visitors"):
        visitors: dict[str, Any] = {"protocolName": msg.visitors.protocolName}
        if msg.visitors.HasField("configData"):
            visitors["configData"] = decode_config(
                msg.visitors.configData.data, f"{path}.visitors.configData"
            )
        prop["visitors"] = visitors
    if msg.HasField("pushMethod"):
        prop["pushMethod"] = _push_from_dmi(msg.pushMethod, f"{path}.pushMethod")
    return prop


def _status_from_dmi(msg: pb.DeviceStatus) -> dict[str, Any]:
    twins = [
        {
            "propertyName": twin.propertyName,
            **({"reported": _twin_property(twin.reported)} if twin.HasField("reported") else {}),
            **(
                {"observedDesired": _twin_property(twin.observedDesired)}
                if twin.HasField("observedDesired")
                else {}
            ),
        }
        for twin in msg.twins
    ]
    return {
        "twins": twins or None,
        "reportToCloud": msg.reportToCloud,
        "reportCycle": msg.reportCycle,
    }


def device_from_dmi(msg: pb.Device) -> Device:
    """A DMI ``Device`` (already merged with its model by EdgeCore) as a v1beta1 ``Device``.

    Raises ``DmiConversionError`` with the path of every problem.
    """
    spec = msg.spec
    protocol: dict[str, Any] = {"protocolName": spec.protocol.protocolName}
    if spec.protocol.HasField("configData"):
        protocol["configData"] = decode_config(
            spec.protocol.configData.data, "spec.protocol.configData"
        )
    doc: dict[str, Any] = {
        "metadata": {"name": msg.name, "namespace": msg.namespace or "default"},
        "spec": {
            "deviceModelRef": {"name": spec.deviceModelReference},
            "nodeName": "",  # not on the DMI wire; EdgeCore only sends this node's devices
            "protocol": protocol,
            "properties": [
                _property_from_dmi(p, f"spec.properties.{i}") for i, p in enumerate(spec.properties)
            ],
            "methods": [
                {
                    "name": m.name,
                    "description": m.description,
                    "propertyNames": list(m.propertyNames),
                }
                for m in spec.methods
            ],
        },
    }
    if msg.HasField("status"):
        doc["status"] = _status_from_dmi(msg.status)
    result: Device = _validated(Device, doc, f"device {msg.namespace}/{msg.name}")
    return result


def model_from_dmi(msg: pb.DeviceModel, protocol: str = "") -> DeviceModel:
    """A DMI ``DeviceModel`` as a v1beta1 ``DeviceModel``.

    The message carries no protocol (§1.6); pass the mapper's protocol to have binding check it,
    or leave it empty ("any protocol"). Empty strings on the wire mean "unset".
    """
    properties = [
        {
            "name": p.name,
            "description": p.description,
            "type": p.type or None,
            "accessMode": p.accessMode or None,
            "minimum": p.minimum or None,
            "maximum": p.maximum or None,
            "unit": p.unit or None,
        }
        for p in msg.spec.properties
    ]
    doc = {
        "metadata": {"name": msg.name, "namespace": msg.namespace or "default"},
        "spec": {"protocol": protocol, "properties": properties},
    }
    result: DeviceModel = _validated(DeviceModel, doc, f"model {msg.namespace}/{msg.name}")
    return result
