"""The DMI proto against the contract's wire table, and the pure conversions of ``convert``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.descriptor import FieldDescriptor

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.dmi import convert
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.driver import DeviceState
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.testing import make_device, make_model, model_property

# Contract §4.5, one line per field: "<Message>.<field> <type> <number>", "<Message>: -" for a
# message without fields. Field numbers, types and the names used in method signatures are what
# make the proto wire-compatible with EdgeCore.
WIRE_TABLE = """
MapperRegisterRequest.withData bool 1
MapperRegisterRequest.mapper MapperInfo 2
MapperRegisterResponse.modelList repeated DeviceModel 1
MapperRegisterResponse.deviceList repeated Device 2
DeviceModel.name string 1
DeviceModel.spec DeviceModelSpec 2
DeviceModel.namespace string 3
DeviceModelSpec.properties repeated ModelProperty 1
DeviceModelSpec.commands repeated DeviceCommand 2
ModelProperty.name string 1
ModelProperty.description string 2
ModelProperty.type string 3
ModelProperty.accessMode string 4
ModelProperty.minimum string 5
ModelProperty.maximum string 6
ModelProperty.unit string 7
DeviceCommand.name string 1
DeviceCommand.url string 2
DeviceCommand.method string 3
DeviceCommand.status_code repeated string 4
DeviceCommand.parameters repeated string 5
DeviceCommand.response bytes 6
Device.name string 1
Device.spec DeviceSpec 2
Device.status DeviceStatus 3
Device.namespace string 4
DeviceSpec.deviceModelReference string 1
DeviceSpec.protocol ProtocolConfig 2
DeviceSpec.properties repeated DeviceProperty 3
DeviceSpec.methods repeated DeviceMethod 4
DeviceMethod.name string 1
DeviceMethod.description string 2
DeviceMethod.propertyNames repeated string 3
DeviceProperty.name string 1
DeviceProperty.desired TwinProperty 2
DeviceProperty.visitors VisitorConfig 3
DeviceProperty.reportCycle int64 4
DeviceProperty.collectCycle int64 5
DeviceProperty.reportToCloud bool 6
DeviceProperty.pushMethod PushMethod 7
ProtocolConfig.protocolName string 1
ProtocolConfig.configData CustomizedValue 2
VisitorConfig.protocolName string 1
VisitorConfig.configData CustomizedValue 2
CustomizedValue.data map<string,google.protobuf.Any> 1
PushMethod.http PushMethodHTTP 1
PushMethod.mqtt PushMethodMQTT 2
PushMethod.otel PushMethodOTEL 4
PushMethod.dbMethod DBMethod 3
PushMethod.anomalyDetection AnomalyDetection 5
PushMethodHTTP.hostname string 1
PushMethodHTTP.port int64 2
PushMethodHTTP.requestpath string 3
PushMethodHTTP.timeout int64 4
PushMethodMQTT.address string 1
PushMethodMQTT.topic string 2
PushMethodMQTT.qos int32 3
PushMethodMQTT.retained bool 4
PushMethodOTEL.endpointURL string 1
DBMethod.influxdb2 DBMethodInfluxdb2 1
DBMethod.redis DBMethodRedis 2
DBMethod.tdengine DBMethodTDEngine 3
DBMethod.mysql DBMethodMySQL 4
DBMethodInfluxdb2.influxdb2ClientConfig Influxdb2ClientConfig 1
DBMethodInfluxdb2.influxdb2DataConfig Influxdb2DataConfig 2
Influxdb2DataConfig.measurement string 1
Influxdb2DataConfig.tag map<string,string> 2
Influxdb2DataConfig.fieldKey string 3
Influxdb2ClientConfig.url string 1
Influxdb2ClientConfig.org string 2
Influxdb2ClientConfig.bucket string 3
DBMethodRedis.redisClientConfig RedisClientConfig 1
RedisClientConfig.addr string 1
RedisClientConfig.db int32 2
RedisClientConfig.poolsize int32 3
RedisClientConfig.minIdleConns int32 4
DBMethodTDEngine.tdEngineClientConfig TDEngineClientConfig 1
TDEngineClientConfig.addr string 1
TDEngineClientConfig.dbname string 2
DBMethodMySQL.mysqlClientConfig MySQLClientConfig 1
MySQLClientConfig.addr string 1
MySQLClientConfig.database string 2
MySQLClientConfig.userName string 3
DBMethodOTEL.otelExporterConfig OTELExporterConfig 1
OTELExporterConfig.endpointURL string 1
AnomalyDetection.data map<string,google.protobuf.Any> 1
MapperInfo.name string 1
MapperInfo.version string 2
MapperInfo.api_version string 3
MapperInfo.protocol string 4
MapperInfo.address bytes 5
MapperInfo.state string 6
ReportDeviceStatusRequest.deviceName string 1
ReportDeviceStatusRequest.reportedDevice DeviceStatus 2
ReportDeviceStatusRequest.deviceNamespace string 3
ReportDeviceStatesRequest.deviceName string 1
ReportDeviceStatesRequest.deviceNamespace string 2
ReportDeviceStatesRequest.state string 3
DeviceStatus.twins repeated Twin 1
DeviceStatus.reportToCloud bool 2
DeviceStatus.reportCycle int64 3
Twin.propertyName string 1
Twin.observedDesired TwinProperty 2
Twin.reported TwinProperty 3
TwinProperty.value string 1
TwinProperty.metadata map<string,string> 2
ReportDeviceStatusResponse: -
ReportDeviceStatesResponse: -
RegisterDeviceRequest.device Device 1
RegisterDeviceResponse.deviceName string 1
RegisterDeviceResponse.deviceNamespace string 2
CreateDeviceModelRequest.model DeviceModel 1
CreateDeviceModelResponse.deviceModelName string 1
CreateDeviceModelResponse.deviceModelNamespace string 2
RemoveDeviceRequest.deviceName string 1
RemoveDeviceRequest.deviceNamespace string 2
RemoveDeviceResponse: -
RemoveDeviceModelRequest.modelName string 1
RemoveDeviceModelRequest.modelNamespace string 2
RemoveDeviceModelResponse: -
UpdateDeviceRequest.device Device 1
UpdateDeviceResponse: -
UpdateDeviceModelRequest.model DeviceModel 1
UpdateDeviceModelResponse: -
GetDeviceRequest.deviceName string 1
GetDeviceRequest.deviceNamespace string 2
GetDeviceResponse.device Device 1
"""

SERVICES = {
    "DeviceManagerService": {
        "MapperRegister": ("MapperRegisterRequest", "MapperRegisterResponse"),
        "ReportDeviceStatus": ("ReportDeviceStatusRequest", "ReportDeviceStatusResponse"),
        "ReportDeviceStates": ("ReportDeviceStatesRequest", "ReportDeviceStatesResponse"),
    },
    "DeviceMapperService": {
        "RegisterDevice": ("RegisterDeviceRequest", "RegisterDeviceResponse"),
        "RemoveDevice": ("RemoveDeviceRequest", "RemoveDeviceResponse"),
        "UpdateDevice": ("UpdateDeviceRequest", "UpdateDeviceResponse"),
        "CreateDeviceModel": ("CreateDeviceModelRequest", "CreateDeviceModelResponse"),
        "RemoveDeviceModel": ("RemoveDeviceModelRequest", "RemoveDeviceModelResponse"),
        "UpdateDeviceModel": ("UpdateDeviceModelRequest", "UpdateDeviceModelResponse"),
        "GetDevice": ("GetDeviceRequest", "GetDeviceResponse"),
    },
}

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
}


def _type_of(field: FieldDescriptor) -> str:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        return f"map<{_type_of(key)},{_type_of(value)}>"
    if message is not None:
        name = message.full_name.removeprefix("v1beta1.")
    else:
        name = _SCALARS[field.type]
    return f"repeated {name}" if field.is_repeated else name


def _table() -> dict[str, dict[str, tuple[str, int]]]:
    table: dict[str, dict[str, tuple[str, int]]] = {}
    for line in WIRE_TABLE.strip().splitlines():
        if line.endswith(": -"):
            table.setdefault(line.removesuffix(": -"), {})
            continue
        qualified, *type_words, number = line.split()
        message, name = qualified.split(".")
        table.setdefault(message, {})[name] = (" ".join(type_words), int(number))
    return table


# --- the proto ---------------------------------------------------------------------------------


def test_every_message_field_and_number_matches_the_wire_table() -> None:
    table = _table()
    file = pb.DESCRIPTOR
    assert file.package == "v1beta1"
    assert set(file.message_types_by_name) == set(table)
    for message_name, fields in table.items():
        descriptor = file.message_types_by_name[message_name]
        actual = {f.name: (_type_of(f), f.number) for f in descriptor.fields}
        assert actual == fields, message_name


def test_services_and_method_paths_match_the_contract() -> None:
    file = pb.DESCRIPTOR
    assert set(file.services_by_name) == set(SERVICES)
    for service_name, methods in SERVICES.items():
        service = file.services_by_name[service_name]
        assert service.full_name == f"v1beta1.{service_name}"
        actual = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
        assert actual == methods


def test_generated_modules_import_as_package_modules() -> None:
    from mapper_sdk.dmi._generated import api_pb2_grpc

    assert api_pb2_grpc.mapper__sdk_dot_dmi_dot_api__pb2 is pb  # the relative import
    assert pb.Device.__module__ == "mapper_sdk.dmi._generated.api_pb2"


def test_grpc_is_imported_only_by_the_link() -> None:
    code = (
        "import sys, mapper_sdk, mapper_sdk.runtime, mapper_sdk.testing, mapper_sdk.dmi, "
        "mapper_sdk.dmi.convert\n"
        "assert 'grpc' not in sys.modules, 'grpc imported'\n"
        "import mapper_sdk.dmi.link\n"
        "assert 'grpc' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- configData: Any values --------------------------------------------------------------------


def _any(wrapper: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(wrapper)  # type: ignore[arg-type]
    return packed


@pytest.mark.parametrize(
    ("wrapper", "expected"),
    [
        (wrappers_pb2.FloatValue(value=502.0), 502),
        (wrappers_pb2.FloatValue(value=0.1), 0.1),
        (wrappers_pb2.FloatValue(value=-2.5), -2.5),
        (wrappers_pb2.FloatValue(value=0.0), 0),
        (wrappers_pb2.StringValue(value="5502"), "5502"),
        (wrappers_pb2.BoolValue(value=True), True),
        (wrappers_pb2.Int32Value(value=-7), -7),
        (wrappers_pb2.Int64Value(value=2**40), 2**40),
        (wrappers_pb2.DoubleValue(value=3.0), 3),
        (wrappers_pb2.DoubleValue(value=0.1), 0.1),
    ],
)
def test_any_values_decode_to_python_scalars(wrapper: object, expected: object) -> None:
    decoded = convert.decode_config({"k": _any(wrapper)}, "configData")["k"]
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_float_value_loses_integers_above_2_24_as_edgecore_does() -> None:
    # The precision quirk of §1.5: documented, not repairable on the mapper side.
    data = {"id": _any(wrappers_pb2.FloatValue(value=16_777_217))}
    assert convert.decode_config(data, "configData") == {"id": 16_777_216}


def test_unknown_any_type_is_refused_with_its_path() -> None:
    data = {"when": _any(wrappers_pb2.BytesValue(value=b"x"))}
    with pytest.raises(convert.DmiConversionError) as info:
        convert.decode_config(data, "spec.protocol.configData")
    assert "spec.protocol.configData.when" in str(info.value)
    assert "BytesValue" in str(info.value)


def test_encoding_follows_edgecore_numbers_become_float_values() -> None:
    target = pb.CustomizedValue()
    convert.encode_config({"port": 502, "on": True, "host": "h", "scale": 0.5}, target, "c")
    urls = {k: v.type_url.rpartition(".")[2] for k, v in target.data.items()}
    assert urls == {
        "port": "FloatValue",
        "on": "BoolValue",
        "host": "StringValue",
        "scale": "FloatValue",
    }
    assert convert.decode_config(target.data, "c") == {
        "host": "h",
        "on": True,
        "port": 502,
        "scale": 0.5,
    }


@pytest.mark.parametrize(("value", "kind"), [({"a": 1}, "dict"), ([1, 2], "list"), (None, "null")])
def test_nested_config_data_is_refused_as_edgecore_would(value: object, kind: str) -> None:
    model = make_model("m", model_property("temp"))
    device = make_device("d1", model, {"slave": value})
    with pytest.raises(convert.DmiConversionError) as info:
        convert.device_to_dmi(device, model)
    message = str(info.value)
    assert "spec.protocol.configData.slave" in message
    assert kind in message
    assert "flat map of scalars" in message


def test_nested_visitor_config_is_refused_with_the_property_path() -> None:
    model = make_model("m", model_property("temp"))
    device = make_device("d1", model, {}, {"temp": {"register": {"kind": "holding"}}})
    with pytest.raises(convert.DmiConversionError, match=r"spec\.properties\.0\.visitors"):
        convert.device_to_dmi(device)


# --- devices and models --------------------------------------------------------------------------


def _full_device() -> tuple[Device, DeviceModel]:
    model = make_model(
        "thermo-model",
        model_property("temp", "FLOAT", "ReadOnly", minimum="-40", maximum="125", unit="C"),
        model_property("setpoint", "INT", "ReadWrite", minimum="0", maximum="100"),
        namespace="plant",
    )
    device = Device.model_validate(
        {
            "metadata": {"name": "thermo-1", "namespace": "plant"},
            "spec": {
                "deviceModelRef": {"name": "thermo-model"},
                "nodeName": "",
                "protocol": {
                    "protocolName": "virtual",
                    "configData": {"port": 502, "ip": "10.0.0.2", "rs485": False},
                },
                "properties": [
                    {
                        "name": "temp",
                        "visitors": {
                            "protocolName": "virtual",
                            "configData": {"register": "InputRegister", "offset": 3, "scale": 0.1},
                        },
                        "collectCycle": 1000,
                        "reportCycle": 5000,
                        "reportToCloud": True,
                        "pushMethod": {
                            "http": {
                                "hostName": "http://127.0.0.1",
                                "port": 8080,
                                "requestPath": "/temp",
                                "timeout": 1000,
                            },
                            "mqtt": {
                                "address": "tcp://127.0.0.1:1883",
                                "topic": "t",
                                "qos": 1,
                                "retained": True,
                            },
                            "otel": {"endpointURL": "http://127.0.0.1:4318/v1/metrics"},
                            "dbMethod": {
                                "influxdb2": {
                                    "influxdb2ClientConfig": {
                                        "url": "http://influx",
                                        "org": "o",
                                        "bucket": "b",
                                    },
                                    "influxdb2DataConfig": {
                                        "measurement": "m",
                                        "tag": {"unit": "C"},
                                        "fieldKey": "temp",
                                    },
                                },
                                "redis": {
                                    "redisClientConfig": {
                                        "addr": "r:6379",
                                        "db": 1,
                                        "poolsize": 4,
                                        "minIdleConns": 1,
                                    }
                                },
                                "TDEngine": {"TDEngineClientConfig": {"addr": "td", "dbName": "x"}},
                                "mysql": {
                                    "mysqlClientConfig": {
                                        "addr": "my:3306",
                                        "database": "d",
                                        "userName": "u",
                                    }
                                },
                            },
                            "anomalyDetection": {"threshold": 3, "enabled": True},
                        },
                    },
                    {
                        "name": "setpoint",
                        "desired": {"value": "21", "metadata": {"type": "int"}},
                        "visitors": {"protocolName": "virtual", "configData": {"offset": 7}},
                        "reportToCloud": True,
                    },
                ],
                "methods": [
                    {"name": "set", "description": "write it", "propertyNames": ["setpoint"]}
                ],
            },
            "status": {"reportToCloud": True, "reportCycle": 10000},
        }
    )
    return device, model


def test_device_round_trips_through_the_wire_bytes() -> None:
    device, _ = _full_device()
    wire = convert.device_to_dmi(device).SerializeToString()
    back = convert.device_from_dmi(pb.Device.FromString(wire))
    assert back.model_dump(by_alias=True) == device.model_dump(by_alias=True)


def test_device_from_dmi_fills_what_the_wire_lacks() -> None:
    device, model = _full_device()
    message = convert.device_to_dmi(device, model)
    message.namespace = ""  # KubeEdge 1.15 had no namespaces
    back = convert.device_from_dmi(message)
    assert back.metadata.namespace == "default"
    assert back.spec.node_name == ""
    assert back.spec.device_model_ref.name == "thermo-model"
    assert back.spec.protocol.config_data == {"ip": "10.0.0.2", "port": 502, "rs485": False}
    visitors = back.spec.properties[0].visitors
    assert visitors is not None
    assert visitors.config_data == {"offset": 3, "register": "InputRegister", "scale": 0.1}
    assert back.status is not None
    assert (back.status.report_to_cloud, back.status.report_cycle) == (True, 10000)


def test_device_to_dmi_merges_the_model_as_edgecore_does() -> None:
    model = DeviceModel.model_validate(
        {
            "metadata": {"name": "m"},
            "spec": {
                "protocol": "virtual",
                "protocolConfigData": {"ip": "10.0.0.1", "port": "502"},
                "properties": [
                    {
                        "name": "temp",
                        "type": "FLOAT",
                        "visitors": {
                            "protocolName": "virtual",
                            "configData": {"register": "HoldingRegister", "offset": 1},
                        },
                    }
                ],
            },
        }
    )
    device = make_device("d1", model, {"ip": "10.0.0.9"}, {"temp": {"offset": 4}})
    back = convert.device_from_dmi(convert.device_to_dmi(device, model))
    assert back.spec.protocol.config_data == {"ip": "10.0.0.9", "port": "502"}
    visitors = back.spec.properties[0].visitors
    assert visitors is not None
    assert visitors.config_data == {"offset": 4, "register": "HoldingRegister"}


def test_bad_names_from_the_wire_are_refused_with_the_field() -> None:
    message = pb.Device(name="Not_A_Name", namespace="default")
    with pytest.raises(convert.DmiConversionError, match=r"metadata\.name"):
        convert.device_from_dmi(message)


def test_model_round_trip_with_the_mappers_protocol() -> None:
    _, model = _full_device()
    wire = convert.model_to_dmi(model).SerializeToString()
    back = convert.model_from_dmi(pb.DeviceModel.FromString(wire), "virtual")
    assert back == model
    assert convert.model_from_dmi(pb.DeviceModel.FromString(wire)).spec.protocol == ""


def test_model_from_dmi_reads_empty_strings_as_unset() -> None:
    message = pb.DeviceModel(name="m", namespace="ns")
    message.spec.properties.add(name="raw")
    prop = convert.model_from_dmi(message).spec.properties[0]
    assert (prop.type, prop.access_mode, prop.minimum, prop.unit) == (None, None, None, None)


# --- reports -------------------------------------------------------------------------------


def test_twin_report_carries_all_twins_with_both_values() -> None:
    ref = DeviceRef("plant", "thermo-1")
    report = TwinReport(
        ref,
        1_700_000_000_123,
        (TwinValue("temp", "21.5", "float"), TwinValue("setpoint", "20", "int", desired="22")),
    )
    request = convert.twin_report_to_dmi(report)
    assert (request.deviceNamespace, request.deviceName) == ("plant", "thermo-1")
    twins = {t.propertyName: t for t in request.reportedDevice.twins}
    assert list(twins) == ["temp", "setpoint"]
    for twin in twins.values():
        assert twin.HasField("reported")
        assert twin.HasField("observedDesired")  # EdgeCore crashes without it (§3.5a.10)
        meta = {"timestamp": "1700000000123", "type": twin.reported.metadata["type"]}
        assert dict(twin.reported.metadata) == meta
        assert dict(twin.observedDesired.metadata) == meta
    assert twins["temp"].reported.value == "21.5"
    assert twins["temp"].observedDesired.value == ""  # no desired value: empty, never absent
    assert twins["setpoint"].observedDesired.value == "22"  # the current desired (§3.5a.11)
    assert dict(twins["setpoint"].reported.metadata)["type"] == "int"
    # Set, even when empty: the field is present on the wire.
    again = pb.ReportDeviceStatusRequest.FromString(request.SerializeToString())
    assert all(t.HasField("observedDesired") for t in again.reportedDevice.twins)


def test_state_request() -> None:
    request = convert.state_to_dmi(DeviceRef("ns", "d"), DeviceState.ONLINE)
    assert (request.deviceNamespace, request.deviceName, request.state) == ("ns", "d", "online")
