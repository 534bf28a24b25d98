"""DMI v1beta1 messages <-> mapper-sdk's CRD models and reports. Pure: no I/O, no logging.

This module owns every change of representation between the gRPC wire (``_generated.api_pb2``)
and ``mapper_sdk.models`` / ``mapper_sdk.bus``:

- ``device_from_dmi`` / ``model_from_dmi``: what EdgeCore sends the mapper;
- ``device_to_dmi`` / ``model_to_dmi``: the same messages built the way EdgeCore builds them
  (tests, the emulator, and ``GetDevice`` answers);
- ``twin_report_to_dmi`` / ``state_to_dmi``: what the mapper reports.

configData (contract §1.5). EdgeCore turns each free-form configData object into
``map<string, google.protobuf.Any>``: strings become ``StringValue``, booleans ``BoolValue`` and
*every* JSON number a ``FloatValue`` (float32), because it decodes the CRD into float64 first.
Nested objects, arrays and ``null`` make it refuse the whole device. Decoding here gives plain
Python scalars back:

- ``FloatValue`` -> the float32's shortest decimal (``0.1``, not ``0.10000000149011612``, as
  Go's JSON encoding of a float32 prints it), and an ``int`` when the number is integral, so
  ``port: 502`` arrives as ``502``, not ``502.0``;
- **precision quirk**: float32 has a 24-bit significand, so an integer above 2**24 (16 777 216)
  reaches the mapper rounded, e.g. ``16777217`` arrives as ``16777216``. The value is lost inside
  EdgeCore and cannot be recovered here; write large numbers (ids, serial numbers) as strings;
- ``Int32Value`` / ``Int64Value`` (never sent by EdgeCore today) -> ``int``; ``DoubleValue`` is
  accepted too; any other type is refused with the key's path.

Encoding (``*_to_dmi``) does what EdgeCore does: numbers become ``FloatValue``, and a nested
object, array or ``null`` raises ``DmiConversionError`` naming the key, because EdgeCore would
never deliver such a device.

The DMI ``DeviceModel`` has no protocol, protocolConfigData or visitors: EdgeCore merges those
into each device before sending it (§1.6), so ``model_from_dmi`` takes the protocol from the
mapper and a device arrives with its visitors already complete. ``device_to_dmi`` does that
merge when given the model. ``nodeName`` is not on the wire either; it comes back as ``""``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message
from pydantic import ValidationError

from mapper_sdk.binding import DeviceRef, merge_config
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import ConfigError, Problem
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

Scalar = str | bool | int | float
"""What a configData value can be on the DMI wire."""


class DmiConversionError(ConfigError):
    """A DMI message (or a model to be sent as one) cannot be converted; ``problems`` say where."""


def _fail(path: str, message: str) -> DmiConversionError:
    return DmiConversionError([Problem(message, path=path)])


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


# --- configData: map<string, Any> <-> flat dict of scalars ------------------------------------


def _float32(number: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", number))[0])


def _integral(number: float) -> int | float:
    return int(number) if math.isfinite(number) and number.is_integer() else number


def _from_float32(number: float) -> int | float:
    """A decoded FloatValue as the CRD most likely wrote it (see the module docstring)."""
    if not math.isfinite(number) or number.is_integer():
        return _integral(number)
    for digits in range(1, 10):  # 9 significant digits always identify a float32
        candidate = float(f"{number:.{digits}g}")
        if _float32(candidate) == number:
            return candidate
    return number


_WRAPPERS: dict[str, type[Message]] = {
    "google.protobuf.StringValue": wrappers_pb2.StringValue,
    "google.protobuf.BoolValue": wrappers_pb2.BoolValue,
    "google.protobuf.FloatValue": wrappers_pb2.FloatValue,
    "google.protobuf.DoubleValue": wrappers_pb2.DoubleValue,
    "google.protobuf.Int32Value": wrappers_pb2.Int32Value,
    "google.protobuf.Int64Value": wrappers_pb2.Int64Value,
}


def _decode_any(value: any_pb2.Any, path: str) -> Scalar:
    type_name = value.type_url.rpartition("/")[2]
    wrapper_cls = _WRAPPERS.get(type_name)
    if wrapper_cls is None:
        raise _fail(
            path,
            f"unsupported value type {value.type_url!r}: EdgeCore sends only "
            "StringValue, FloatValue, BoolValue, Int32Value and Int64Value",
        )
    wrapper = wrapper_cls()
    if not value.Unpack(wrapper):
        raise _fail(path, f"cannot decode a {type_name} from its bytes")
    decoded: Scalar = getattr(wrapper, "value")  # noqa: B009 - every wrapper type has .value
    if wrapper_cls is wrappers_pb2.FloatValue:
        return _from_float32(float(decoded))
    if wrapper_cls is wrappers_pb2.DoubleValue:
        return _integral(float(decoded))
    return decoded


def decode_config(data: Mapping[str, any_pb2.Any], path: str) -> dict[str, Scalar]:
    """A configData map from the wire as a flat dict of Python scalars (sorted by key)."""
    return {key: _decode_any(data[key], f"{path}.{key}") for key in sorted(data)}


def _encode_scalar(value: object, path: str) -> any_pb2.Any:
    wrapper: Message
    if isinstance(value, bool):  # before int: bool is an int in Python
        wrapper = wrappers_pb2.BoolValue(value=value)
    elif isinstance(value, int | float):
        # EdgeCore decodes every CRD number as float64 and sends it as float32 (§1.5).
        wrapper = wrappers_pb2.FloatValue(value=float(value))
    elif isinstance(value, str):
        wrapper = wrappers_pb2.StringValue(value=value)
    else:
        kind = "null" if value is None else type(value).__name__
        raise _fail(
            path,
            f"configData must be a flat map of scalars (string, number, boolean); {kind} "
            "values are refused by EdgeCore, which then never sends the device to the mapper",
        )
    packed = any_pb2.Any()
    packed.Pack(wrapper)
    return packed


def encode_config(config: Mapping[str, Any], target: pb.CustomizedValue, path: str) -> None:
    """Fill ``target.data`` with ``config`` encoded as EdgeCore does."""
    for key, value in config.items():
        target.data[key].CopyFrom(_encode_scalar(value, f"{path}.{key}"))


# --- Device: wire -> model --------------------------------------------------------------------


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


# --- Device: model -> wire --------------------------------------------------------------------


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
                _encode_scalar(value, f"{path}.anomalyDetection.{key}")
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


# --- reports ----------------------------------------------------------------------------------


def twin_to_dmi(twin: TwinValue, timestamp_ms: int, target: pb.Twin) -> None:
    """Fill one ``Twin`` with BOTH values set.

    A twin without ``observedDesired`` (or ``reported``) crashes EdgeCore with a nil pointer
    (§3.5a.10). ``observedDesired.value`` overwrites the edge twin's expected value (§3.5a.11),
    so it carries the current desired value, and ``""`` only when there is none.
    """
    metadata = {"timestamp": str(timestamp_ms), "type": twin.type}
    target.propertyName = twin.name
    target.reported.value = twin.value
    target.reported.metadata.update(metadata)
    target.observedDesired.value = twin.desired if twin.desired is not None else ""
    target.observedDesired.metadata.update(metadata)


def twins_to_dmi(
    twins: Iterable[tuple[TwinValue, int]], target: pb.DeviceStatus
) -> pb.DeviceStatus:
    """Append ``(twin, timestamp_ms)`` pairs to ``target.twins``; returns ``target``."""
    for twin, timestamp_ms in twins:
        twin_to_dmi(twin, timestamp_ms, target.twins.add())
    return target


def twin_report_to_dmi(report: TwinReport) -> pb.ReportDeviceStatusRequest:
    """One device's report as ONE ``ReportDeviceStatus`` request carrying all its twins."""
    msg = pb.ReportDeviceStatusRequest(
        deviceName=report.ref.name, deviceNamespace=report.ref.namespace
    )
    twins_to_dmi(((t, report.timestamp_ms) for t in report.twins), msg.reportedDevice)
    return msg


def state_to_dmi(ref: DeviceRef, state: DeviceState | str) -> pb.ReportDeviceStatesRequest:
    """A device state as a ``ReportDeviceStates`` request (KubeEdge >= 1.18)."""
    return pb.ReportDeviceStatesRequest(
        deviceName=ref.name, deviceNamespace=ref.namespace, state=str(state)
    )


def ref_of(msg: pb.Device) -> DeviceRef:
    """The ``DeviceRef`` a DMI device is known by (namespace ``default`` when empty: 1.15)."""
    return DeviceRef(msg.namespace or "default", msg.name)


__all__ = [
    "DmiConversionError",
    "Scalar",
    "decode_config",
    "device_from_dmi",
    "device_to_dmi",
    "encode_config",
    "model_from_dmi",
    "model_to_dmi",
    "ref_of",
    "state_to_dmi",
    "twin_report_to_dmi",
    "twin_to_dmi",
    "twins_to_dmi",
]
