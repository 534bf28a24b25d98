"""Modbus configData models: KubeEdge samples, EdgeCore's number forms, extras and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from mapper_modbus.config import (
    ByteOrder,
    CommunicateMode,
    DataType,
    ModbusProtocolConfig,
    ModbusVisitorConfig,
    Parity,
    Register,
    ValueType,
    resolve_value_type,
)

SAMPLES = (
    Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "kubeedge" / "samples"
)
TCP = {"ip": "10.0.0.2"}


def protocol(**data: Any) -> ModbusProtocolConfig:
    return ModbusProtocolConfig.model_validate(data)


def visitor(**data: Any) -> ModbusVisitorConfig:
    return ModbusVisitorConfig.model_validate(data)


def refused(model: type[ModbusProtocolConfig | ModbusVisitorConfig], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


# -- the KubeEdge samples ------------------------------------------------------------------------


def test_v1beta1_sample_instance_validates_as_intended() -> None:
    device = yaml.safe_load((SAMPLES / "v1beta1" / "modbus-temperature-instance.yaml").read_text())
    proto = ModbusProtocolConfig.model_validate(device["spec"]["protocol"]["configData"])
    assert (proto.communicate_mode, proto.ip, proto.port, proto.slave_id) == (
        CommunicateMode.TCP,
        "10.244.1.13",
        5502,
        1,
    )
    temperature, switch = (
        ModbusVisitorConfig.model_validate(p["visitors"]["configData"])
        for p in device["spec"]["properties"]
    )
    assert (temperature.table, temperature.offset, temperature.limit) == (Register.HOLDING, 0, 1)
    assert (temperature.scale, temperature.data_type) == (0.1, DataType.FLOAT)
    assert "max" not in temperature.model_dump()
    assert "min" not in temperature.model_dump()
    assert (switch.table, switch.data_type, switch.scale) == (Register.COIL, DataType.INT, 1.0)


def test_v1alpha2_sample_visitors_validate() -> None:
    device = yaml.safe_load((SAMPLES / "v1alpha2" / "modbustcp-instance.yaml").read_text())
    visitors = [
        ModbusVisitorConfig.model_validate(v["modbus"]) for v in device["spec"]["propertyVisitors"]
    ]
    assert [(v.table, v.offset, v.word_swap, v.byte_swap) for v in visitors] == [
        (Register.COIL, 0, True, True),
        (Register.COIL, 3, True, True),
    ]
    tcp = device["spec"]["protocol"]["common"]["tcp"]
    assert protocol(slaveID=device["spec"]["protocol"]["modbus"]["slaveID"], **tcp).port == 502


# -- numbers as EdgeCore delivers them (contract §1.5) ---------------------------------------------


def test_edgecore_float32_numbers_validate() -> None:
    proto = protocol(port=5502.0, slaveID=1.0, timeout=1000.0, retries=2.0, **TCP)
    assert (proto.port, proto.slave_id, proto.retries, proto.timeout_s) == (5502, 1, 2, 1.0)
    assert all(isinstance(v, int) for v in (proto.port, proto.slave_id, proto.retries))
    v = visitor(register="HoldingRegister", offset=7.0, limit=2.0, scale=0.10000000149011612)
    assert (v.offset, v.limit) == (7, 2)
    assert v.scale == 0.1  # the float32 noise is gone, so readings are not off by 1.5e-9
    assert visitor(register="HoldingRegister", addOffset=-40.0).add_offset == -40.0


def test_genuine_float64_scale_is_kept() -> None:
    assert visitor(register="HoldingRegister", scale=0.123456789012).scale == 0.123456789012


@pytest.mark.parametrize("port", ["5502", 5502, 5502.0, " 5502 "])
def test_port_as_string_or_number(port: object) -> None:
    assert protocol(port=port, **TCP).port == 5502


@pytest.mark.parametrize(
    "bad", [{"slaveID": 1.5}, {"port": 70000}, {"port": "http"}, {"slaveID": 256}]
)
def test_bad_numbers_are_refused(bad: dict[str, Any]) -> None:
    refused(ModbusProtocolConfig, {**TCP, **bad})


# -- protocol -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("TCP", CommunicateMode.TCP),
        ("tcp", CommunicateMode.TCP),
        ("Rtu", CommunicateMode.RTU),
        ("ascii", CommunicateMode.ASCII),
        ("rtuovertcp", CommunicateMode.RTU_OVER_TCP),
        ("RTU_over_TCP", CommunicateMode.RTU_OVER_TCP),
        ("udp", CommunicateMode.UDP),
        ("tls", CommunicateMode.TLS),
    ],
)
def test_communicate_mode_any_case(text: str, mode: CommunicateMode) -> None:
    extra = {"serialName": "/dev/ttyS0"} if mode.is_serial else TCP
    assert protocol(communicateMode=text, **extra).communicate_mode is mode


def test_default_mode_and_ports() -> None:
    assert protocol(**TCP).communicate_mode is CommunicateMode.TCP
    assert protocol(**TCP).resolved_port == 502
    assert protocol(communicateMode="TLS", **TCP).resolved_port == 802
    assert protocol(communicateMode="TLS", port="8020", **TCP).resolved_port == 8020


@pytest.mark.parametrize(
    ("text", "parity"),
    [
        ("none", Parity.NONE),
        ("N", Parity.NONE),
        ("even", Parity.EVEN),
        ("E", Parity.EVEN),
        ("Odd", Parity.ODD),
        ("o", Parity.ODD),
    ],
)
def test_parity_spellings(text: str, parity: Parity) -> None:
    assert protocol(communicateMode="RTU", serialName="/dev/ttyS0", parity=text).parity is parity


def test_serial_settings_and_v1alpha2_serial_port() -> None:
    proto = protocol(
        communicateMode="RTU",
        serialPort="/dev/ttyUSB0",
        baudRate=19200.0,
        dataBits=7,
        stopBits=2.0,
        rs485Enabled=True,
        interFrameDelay=5,
    )
    assert proto.serial_name == "/dev/ttyUSB0"
    assert (proto.baud_rate, proto.data_bits, proto.stop_bits) == (19200, 7, 2)
    assert proto.rs485_enabled
    assert proto.inter_frame_delay == 5
    assert proto.model_dump(by_alias=True)["serialName"] == "/dev/ttyUSB0"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"communicateMode": "RTU"}, "needs serialName"),
        ({}, "needs ip"),
        ({"communicateMode": "CAN", **TCP}, "communicateMode"),
        ({"stopBits": 3, **TCP}, "stopBits must be 1, 1.5 or 2"),
        ({"certFile": "/etc/certs/c.pem", **TCP}, "only used with communicateMode TLS"),
        ({"communicateMode": "TLS", "keyFile": "-----BEGIN PRIVATE KEY-----", **TCP}, "file path"),
        ({"slaveId": 1, **TCP}, "did you mean 'slaveID'"),
        ({"password": "x", **TCP}, "unknown key 'password'"),
        ({"communicateMode": "RTU", "serialName": "/dev/ttyS0", "maxInFlight": 2}, "maxInFlight"),
        ({"maxInFlight": 0, **TCP}, "maxInFlight"),
    ],
)
def test_protocol_refusals(data: dict[str, Any], message: str) -> None:
    assert message in refused(ModbusProtocolConfig, data)


def test_driver_options() -> None:
    proto = protocol(verifyWrites=True, maxInFlight=4, **TCP)
    assert (proto.verify_writes, proto.max_in_flight) == (True, 4)
    assert (protocol(**TCP).verify_writes, protocol(**TCP).max_in_flight) == (False, 1)


def test_tls_files_are_paths() -> None:
    proto = protocol(
        communicateMode="TLS", certFile="/c.pem", keyFile="/k.pem", caFile="/ca.pem", **TCP
    )
    assert (proto.cert_file, proto.key_file, proto.ca_file) == ("/c.pem", "/k.pem", "/ca.pem")


# -- visitor --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("HoldingRegister", Register.HOLDING),
        ("holdingregister", Register.HOLDING),
        ("holding", Register.HOLDING),
        ("InputRegister", Register.INPUT),
        ("CoilRegister", Register.COIL),
        ("coil", Register.COIL),
        ("DiscreteInputRegister", Register.DISCRETE_INPUT),
        ("discrete_input", Register.DISCRETE_INPUT),
    ],
)
def test_register_spellings(text: str, table: Register) -> None:
    assert visitor(register=text).table is table


def test_visitor_defaults_match_kubeedge() -> None:
    v = visitor(register="HoldingRegister")
    assert (v.offset, v.limit, v.scale, v.add_offset) == (0, 1, 1.0, 0.0)
    assert (v.word_swap, v.byte_swap, v.data_type, v.value_type) == (False, False, None, None)
    assert (v.string_encoding, v.string_padding, v.max_block, v.bit) == ("utf-8", "nul", None, None)


@pytest.mark.parametrize(
    ("register", "value_type", "limit"),
    [
        ("HoldingRegister", "float32", 2),
        ("HoldingRegister", "double", 4),
        ("InputRegister", "INT64", 4),
        ("HoldingRegister", "int16", 1),
        ("HoldingRegister", "string", 1),
        ("CoilRegister", "uint16", 16),
        ("CoilRegister", "bool", 1),
    ],
)
def test_value_type_sets_default_limit(register: str, value_type: str, limit: int) -> None:
    assert visitor(register=register, valueType=value_type).limit == limit


@pytest.mark.parametrize(
    ("order", "word_swap", "byte_swap"),
    [
        ("ABCD", False, False),
        ("BADC", False, True),
        ("CDAB", True, False),
        ("dcba", True, True),
        ("ABCDEFGH", False, False),
        ("BADCFEHG", False, True),
        ("GHEFCDAB", True, False),
        ("HGFEDCBA", True, True),
    ],
)
def test_byte_order_flags(order: str, word_swap: bool, byte_swap: bool) -> None:
    v = visitor(register="HoldingRegister", valueType="float32", byteOrder=order)
    assert (v.word_swap, v.byte_swap) == (word_swap, byte_swap)
    assert ByteOrder(order.upper()).word_swap is word_swap


def test_kubeedge_swap_flags_without_byte_order() -> None:
    v = visitor(register="HoldingRegister", limit=2, isSwap=True, isRegisterSwap=False)
    assert (v.word_swap, v.byte_swap) == (False, True)


def test_byte_order_agreeing_with_flags_is_fine() -> None:
    v = visitor(
        register="HoldingRegister",
        valueType="float32",
        byteOrder="CDAB",
        isRegisterSwap=True,
        isSwap=False,
    )
    assert (v.word_swap, v.byte_swap) == (True, False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "register": "Holding",
                "valueType": "float32",
                "byteOrder": "CDAB",
                "isRegisterSwap": False,
            },
            "contradicts isRegisterSwap",
        ),
        ({"register": "Holding", "byteOrder": "BADC", "isSwap": False}, "contradicts isSwap"),
        ({"register": "Holding", "ofset": 1}, "did you mean 'offset'"),
        ({"register": "Holding", "color": 1}, "known keys:"),
        ({"register": "Holding", "offset": -1}, "greater than or equal to 0"),
        ({"register": "Holding", "offset": 1.5}, "offset"),
        ({"register": "Holding", "offset": 65535, "limit": 2}, "runs past address 65535"),
        ({"register": "Holding", "limit": 126, "dataType": "string"}, "exceeds 125"),
        ({"register": "Coil", "limit": 2001, "dataType": "bytes"}, "exceeds 2000"),
        ({"register": "Holding", "limit": 0}, "limit"),
        ({"register": "Holding", "scale": 0}, "scale must not be 0"),
        ({"register": "Holding", "dataType": "int", "limit": 3}, "use limit 1, 2 or 4"),
        ({"register": "Holding", "valueType": "float32", "limit": 1}, "needs limit 2"),
        (
            {"register": "Holding", "valueType": "string", "dataType": "int"},
            "dataType string or bytes",
        ),
        (
            {"register": "Holding", "valueType": "int16", "dataType": "bytes"},
            "dataType bytes needs",
        ),
        ({"register": "Holding", "bit": 16}, "less than or equal to 15"),
        ({"register": "Holding", "bit": 3, "limit": 2, "dataType": "string"}, "bit needs limit 1"),
        ({"register": "Coil", "bit": 3}, "coils and discrete inputs are bits"),
        ({"register": "Coil", "dataType": "string"}, "cannot be read as a string"),
        ({"register": "Coil", "valueType": "float32"}, "reads bits"),
        ({"register": "Coil", "valueType": "uint8", "limit": 9}, "reads bits"),
        (
            {"register": "Holding", "limit": 4, "maxBlock": 2, "dataType": "int"},
            "maxBlock must be between",
        ),
        ({"register": "Holding", "maxBlock": 126}, "maxBlock must be between"),
        ({"register": "Holding", "stringEncoding": "klingon"}, "unknown stringEncoding"),
        ({"register": "Holding", "stringPadding": "zeros"}, "stringPadding"),
        ({"register": "Tape"}, "register"),
    ],
)
def test_visitor_refusals(data: dict[str, Any], message: str) -> None:
    assert message in refused(ModbusVisitorConfig, data)


def test_max_min_are_ignored_but_other_keys_are_not() -> None:
    v = visitor(register="HoldingRegister", max=100.0, min=1.0)
    assert not hasattr(v, "max")
    assert "unknown key 'maximum'" in refused(
        ModbusVisitorConfig, {"register": "Coil", "maximum": 1}
    )


def test_config_is_frozen() -> None:
    v = visitor(register="HoldingRegister")
    with pytest.raises(ValidationError):
        v.offset = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("register", "data_type", "limit", "expected"),
    [
        ("HoldingRegister", "int", 1, ValueType.UINT16),
        ("HoldingRegister", "int", 2, ValueType.UINT32),
        ("HoldingRegister", "int", 4, ValueType.UINT64),
        ("InputRegister", "float", 1, ValueType.UINT16),
        ("InputRegister", "float", 2, ValueType.FLOAT32),
        ("HoldingRegister", "float", 4, ValueType.FLOAT64),
        ("HoldingRegister", "double", 2, ValueType.FLOAT32),
        ("HoldingRegister", "double", 4, ValueType.FLOAT64),
        ("HoldingRegister", "boolean", 1, ValueType.BOOL),
        ("HoldingRegister", "string", 8, ValueType.STRING),
        ("HoldingRegister", "bytes", 3, ValueType.BYTES),
        ("CoilRegister", "int", 1, ValueType.BOOL),
        ("CoilRegister", "boolean", 1, ValueType.BOOL),
        ("CoilRegister", "int", 12, ValueType.UINT64),
        ("DiscreteInputRegister", "bytes", 20, ValueType.BYTES),
    ],
)
def test_kubeedge_layouts(register: str, data_type: str, limit: int, expected: ValueType) -> None:
    v = visitor(register=register, dataType=data_type, limit=limit)
    assert resolve_value_type(v, v.data_type) is expected


def test_model_type_resolves_when_visitor_has_no_data_type() -> None:
    v = visitor(register="HoldingRegister", limit=2)
    assert resolve_value_type(v, DataType.FLOAT) is ValueType.FLOAT32
    assert resolve_value_type(v, None) is ValueType.UINT32


def test_no_protocol_library_is_imported() -> None:
    code = (
        "import sys\n"
        "import mapper_modbus, mapper_modbus.config, mapper_modbus.codec, mapper_modbus.planner\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pymodbus', 'serial')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    root = Path(__file__).resolve().parents[3]  # so mapper_sdk imports as in the test run
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=root
    )
    assert result.returncode == 0, result.stdout + result.stderr
