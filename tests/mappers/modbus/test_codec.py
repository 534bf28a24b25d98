"""Modbus codec: known byte patterns for every type and order, KubeEdge's intended decoding,
encode/decode round trips, the compiled block decoder and raw-bytes change detection."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapper_modbus.codec import (
    BlockDecoder,
    CodecError,
    EncodeError,
    PointCodec,
    bits_to_bytes,
    registers_to_bytes,
    slice_changed,
)
from mapper_modbus.config import ModbusVisitorConfig, ValueType
from mapper_sdk.errors import DesiredValueError, ValueConversionError

ORDERS_32 = ["ABCD", "BADC", "CDAB", "DCBA"]
ORDERS_64 = ["ABCDEFGH", "BADCFEHG", "GHEFCDAB", "HGFEDCBA"]


def codec(model_type: str | None = None, **data: Any) -> PointCodec:
    data.setdefault("register", "HoldingRegister")
    return PointCodec(ModbusVisitorConfig.model_validate(data), model_type)


def wire(hex_bytes: str) -> bytes:
    return bytes.fromhex(hex_bytes.replace(" ", ""))


def regs(hex_bytes: str) -> tuple[int, ...]:
    data = wire(hex_bytes)
    return struct.unpack(f">{len(data) // 2}H", data)


# -- known byte patterns ---------------------------------------------------------------------------

F32 = struct.unpack(">f", struct.pack(">f", 123.456))[0]  # 0x42F6E979


@pytest.mark.parametrize(
    ("order", "on_wire"),
    [
        ("ABCD", "42 F6 E9 79"),
        ("BADC", "F6 42 79 E9"),
        ("CDAB", "E9 79 42 F6"),
        ("DCBA", "79 E9 F6 42"),
    ],
)
def test_float32_123_456_in_every_order(order: str, on_wire: str) -> None:
    c = codec(valueType="float32", byteOrder=order)
    assert c.decode(wire(on_wire)) == F32
    assert c.decode(list(regs(on_wire))) == F32  # pymodbus's register list works too
    assert c.encode(123.456) == regs(on_wire)


@pytest.mark.parametrize(
    ("flags", "on_wire"),
    [
        ({}, "42 F6 E9 79"),
        ({"isSwap": True}, "F6 42 79 E9"),
        ({"isRegisterSwap": True}, "E9 79 42 F6"),
        ({"isSwap": True, "isRegisterSwap": True}, "79 E9 F6 42"),
    ],
)
def test_kubeedge_swap_flags_are_the_byte_orders(flags: dict[str, bool], on_wire: str) -> None:
    c = codec(dataType="float", limit=2, **flags)
    assert c.decode(wire(on_wire)) == F32
    assert c.encode(123.456) == regs(on_wire)


@pytest.mark.parametrize(
    ("order", "on_wire"),
    [
        ("ABCDEFGH", "40 5E DD 2F 1A 9F BE 77"),
        ("BADCFEHG", "5E 40 2F DD 9F 1A 77 BE"),
        ("GHEFCDAB", "BE 77 1A 9F DD 2F 40 5E"),
        ("HGFEDCBA", "77 BE 9F 1A 2F DD 5E 40"),
    ],
)
def test_float64_123_456_in_every_order(order: str, on_wire: str) -> None:
    c = codec(valueType="float64", byteOrder=order)
    assert c.decode(wire(on_wire)) == 123.456
    assert c.encode(123.456) == regs(on_wire)


@pytest.mark.parametrize(
    ("value_type", "order", "on_wire", "value"),
    [
        ("int16", "ABCD", "FF 38", -200),
        ("int16", "BADC", "38 FF", -200),
        ("uint16", "ABCD", "FF 38", 65336),
        ("uint16", "DCBA", "38 FF", 65336),
        ("int32", "ABCD", "FF FE 1D C0", -123456),
        ("int32", "CDAB", "1D C0 FF FE", -123456),
        ("int32", "BADC", "FE FF C0 1D", -123456),
        ("int32", "DCBA", "C0 1D FE FF", -123456),
        ("uint32", "ABCD", "DE AD BE EF", 0xDEADBEEF),
        ("uint32", "CDAB", "BE EF DE AD", 0xDEADBEEF),
        ("int64", "ABCDEFGH", "FF FF FF FF FF FF FF FE", -2),
        ("int64", "HGFEDCBA", "FE FF FF FF FF FF FF FF", -2),
        ("uint64", "ABCDEFGH", "01 02 03 04 05 06 07 08", 0x0102030405060708),
        ("uint64", "GHEFCDAB", "07 08 05 06 03 04 01 02", 0x0102030405060708),
        ("uint64", "BADCFEHG", "02 01 04 03 06 05 08 07", 0x0102030405060708),
        ("uint64", "HGFEDCBA", "08 07 06 05 04 03 02 01", 0x0102030405060708),
        ("int8", "ABCD", "00 FE", -2),
        ("int8", "BADC", "FE 00", -2),
        ("uint8", "ABCD", "00 FE", 254),
    ],
)
def test_integer_patterns(value_type: str, order: str, on_wire: str, value: int) -> None:
    c = codec(valueType=value_type, byteOrder=order)
    assert c.decode(wire(on_wire)) == value
    assert c.encode(value) == regs(on_wire)


def test_8_bit_values_ignore_the_other_byte() -> None:
    assert codec(valueType="uint8").decode(wire("12 FE")) == 254
    assert codec(valueType="int8").decode(wire("7F 80")) == -128


# -- KubeEdge's visitors decode as their mapper intends (contract §6.1) -------------------------


def test_sample_temperature_is_one_unsigned_register_times_scale() -> None:
    c = codec(dataType="float", register="HoldingRegister", offset=0, limit=1, scale=0.1)
    assert c.value_type is ValueType.UINT16
    assert c.decode([250]) == pytest.approx(25.0)
    assert isinstance(c.decode([250]), float)
    assert c.decode([0xFFFF]) == pytest.approx(6553.5)  # unsigned, as the Go mapper reads it
    assert c.encode(25.0) == (250,)  # the demo divides by scale before writing


def test_sample_switch_coil_is_0_or_1() -> None:
    c = codec(dataType="int", register="CoilRegister", limit=1, scale=1)
    assert (c.decode([True]), c.decode([False]), c.decode(b"\x01")) == (1, 0, 1)
    assert c.encode("1") == (1,)
    assert c.encode(0) == (0,)


@pytest.mark.parametrize(
    ("data", "on_wire", "value"),
    [
        ({"dataType": "int", "limit": 1}, "12 34", 0x1234),
        ({"dataType": "int", "limit": 2}, "FF FF FF FE", 0xFFFFFFFE),  # unsigned
        ({"dataType": "int", "limit": 4}, "00 00 00 01 00 00 00 00", 1 << 32),
        ({"dataType": "int", "limit": 1, "scale": 0.1}, "00 FF", 25),  # truncated like Go
        ({"dataType": "int", "limit": 1, "scale": 0.7}, "00 5A", 63),  # 90 * 0.7 = 62.999...
        ({"dataType": "int", "limit": 2, "isRegisterSwap": True}, "00 02 00 01", 0x00010002),
        ({"dataType": "int", "limit": 1, "isSwap": True}, "01 00", 1),
        ({"dataType": "float", "limit": 2}, "42 F6 E9 79", F32),
        ({"dataType": "double", "limit": 4}, "40 5E DD 2F 1A 9F BE 77", 123.456),
        ({"dataType": "boolean", "limit": 1}, "00 01", True),  # Go's first-byte test says false
        ({"dataType": "boolean", "limit": 1}, "00 00", False),
        ({"dataType": "string", "limit": 2}, "41 42 43 00", "ABC"),
        ({"dataType": "bytes", "limit": 2}, "41 42 43 00", b"ABC\x00"),
        ({"dataType": "int", "register": "InputRegister"}, "AB CD", 0xABCD),  # whole register
    ],
)
def test_kubeedge_data_types(data: dict[str, Any], on_wire: str, value: object) -> None:
    result = codec(**data).decode(wire(on_wire))
    assert result == value
    assert type(result) is type(value)


def test_model_type_fills_in_for_a_missing_data_type() -> None:
    assert codec("FLOAT", limit=2).decode(wire("42 F6 E9 79")) == F32
    assert codec("INT").decode(wire("00 07")) == 7
    assert codec(None).decode(wire("00 07")) == 7
    with pytest.raises(CodecError, match="STREAM"):
        codec("STREAM")
    with pytest.raises(CodecError, match="limit 1, 2 or 4"):
        codec("INT", limit=3)


# -- scale, addOffset, results -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "raw", "value"),
    [
        ({"valueType": "int16", "scale": 0.1, "addOffset": -40, "dataType": "float"}, [650], 25.0),
        ({"valueType": "int16", "scale": 0.5, "dataType": "double"}, [0xFFFE], -1.0),
        ({"valueType": "uint16", "addOffset": 1000}, [5], 1005),
        ({"valueType": "float32", "dataType": "int"}, list(regs("42 F6 E9 79")), 123),
        ({"valueType": "int16", "dataType": "string"}, [0xFFFF], "-1"),
        ({"valueType": "float32", "dataType": "string"}, [0x3FC0, 0], "1.5"),
        ({"valueType": "uint16", "dataType": "boolean"}, [2], True),
    ],
)
def test_scale_offset_and_result_types(data: dict[str, Any], raw: list[int], value: object) -> None:
    result = codec(**data).decode(raw)
    assert result == pytest.approx(value) if isinstance(value, float) else result == value
    assert type(result) is type(value)


def test_encode_inverts_scale_and_offset_with_rounding() -> None:
    c = codec(valueType="int16", scale=0.1, addOffset=-40, dataType="float")
    assert c.encode(25.0) == (650,)
    assert c.encode(25.04) == (650,)
    assert c.encode(25.06) == (651,)
    assert c.encode("-50") == (0xFF9C,)  # (-50 + 40) / 0.1 = -100


def test_64_bit_integers_stay_exact_without_scale() -> None:
    c = codec(valueType="uint64")
    assert c.decode(c.encode(2**64 - 1)) == 2**64 - 1
    assert c.decode(c.encode("18446744073709551614")) == 2**64 - 2


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value", "reason"),
    [
        ({"valueType": "uint16"}, -1, "out_of_range"),
        ({"valueType": "uint16"}, 65536, "out_of_range"),
        ({"valueType": "int16"}, 40000, "out_of_range"),
        ({"valueType": "int8"}, 128, "out_of_range"),
        ({"valueType": "uint32", "scale": 0.001}, 4294968, "out_of_range"),
        ({"valueType": "int32"}, math.nan, "out_of_range"),
        ({"valueType": "float32"}, 1e39, "out_of_range"),
        ({"valueType": "int16"}, "warm", "invalid"),
        ({"valueType": "int16"}, b"\x01", "invalid"),
        ({"dataType": "string", "limit": 2}, "hello", "out_of_range"),
        ({"dataType": "string", "limit": 2, "stringEncoding": "ascii"}, "é", "invalid"),
        ({"dataType": "string", "limit": 2}, 5, "invalid"),
        ({"register": "CoilRegister", "dataType": "boolean"}, 2, "out_of_range"),
        ({"register": "CoilRegister", "valueType": "uint8"}, 256, "out_of_range"),
        ({"dataType": "boolean", "bit": 2}, True, "needs_current"),
        ({"register": "InputRegister", "dataType": "int"}, 1, "read_only"),
        ({"register": "DiscreteInputRegister", "dataType": "boolean"}, True, "read_only"),
    ],
)
def test_encode_refusals(data: dict[str, Any], value: Any, reason: str) -> None:
    with pytest.raises(EncodeError) as info:
        codec(**data).encode(value)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DesiredValueError)


def test_decode_refusals() -> None:
    with pytest.raises(CodecError, match="needs 4"):
        codec(valueType="float32").decode([1])
    with pytest.raises(CodecError, match=r"0\.\.65535"):
        codec().decode([70000])
    assert issubclass(CodecError, ValueConversionError)
    assert issubclass(CodecError, ValueError)


def test_non_finite_float_cannot_be_an_int() -> None:
    with pytest.raises(CodecError, match="as an int"):
        codec(valueType="float32", dataType="int").decode(list(regs("7F C0 00 00")))


# -- strings, bytes, bits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "on_wire", "value"),
    [
        ({}, "68 65 6C 6C 6F 00 00 00", "hello"),
        ({"isSwap": True}, "65 68 6C 6C 00 6F 00 00", "hello"),
        ({"isRegisterSwap": True}, "00 00 6F 00 6C 6C 68 65", "hello"),
        ({"byteOrder": "DCBA"}, "00 00 00 6F 6C 6C 65 68", "hello"),
        ({"stringPadding": "space"}, "68 65 6C 6C 6F 20 20 20", "hello"),
        ({"stringPadding": "none"}, "68 69 00 00 00 00 00 00", "hi\x00\x00\x00\x00\x00\x00"),
        ({"stringEncoding": "latin-1"}, "E9 74 E9 00 00 00 00 00", "été"),
    ],
)
def test_string_patterns(data: dict[str, Any], on_wire: str, value: str) -> None:
    c = codec(dataType="string", limit=4, **data)
    assert c.decode(wire(on_wire)) == value
    assert c.encode(value) == regs(on_wire)


def test_string_decoding_stops_at_nul_and_strips_per_padding() -> None:
    assert codec(dataType="string", limit=3).decode(b"ab\x00garb") == "ab"
    assert codec(dataType="string", limit=3, stringPadding="both").decode(b"ab  \x00\x00") == "ab"
    assert codec(dataType="string", limit=3, stringPadding="space").decode(b" ab   ") == " ab"
    assert codec(dataType="string", limit=1).decode(b"\xff\xfe") == "\ufffd\ufffd"


def test_bytes_keep_padding_and_apply_swaps() -> None:
    c = codec(dataType="bytes", limit=2, isSwap=True)
    assert c.decode(wire("02 01 00 03")) == b"\x01\x02\x03\x00"
    assert c.encode(b"\x01\x02\x03") == regs("02 01 00 03")


@pytest.mark.parametrize(
    ("bit", "register", "value"),
    [(0, 0x0001, True), (3, 0x0008, True), (3, 0xFFF7, False), (15, 0x8000, True)],
)
def test_bit_of_a_register(bit: int, register: int, value: bool) -> None:
    c = codec(dataType="boolean", bit=bit)
    assert c.decode([register]) is value


def test_bit_write_is_read_modify_write() -> None:
    assert codec(dataType="boolean", bit=0).encode(True, current=0x00F0) == (0x00F1,)
    assert codec(dataType="boolean", bit=4).encode("false", current=0x00F0) == (0x00E0,)
    assert codec(dataType="int", bit=15).encode(1, current=0) == (0x8000,)


def test_coil_bit_fields_and_packed_bytes() -> None:
    field = codec(register="CoilRegister", valueType="uint8", limit=5)
    assert field.decode([1, 0, 1, 1, 0]) == 0b01101
    assert field.encode(0b01101) == (1, 0, 1, 1, 0)
    packed = codec(register="DiscreteInputRegister", dataType="bytes", limit=10)
    assert packed.decode(b"\x0d\x02") == b"\x0d\x02"
    assert packed.decode([1, 0, 1, 1, 0, 0, 0, 0, 0, 1]) == b"\x0d\x02"
    flag = codec(register="CoilRegister", dataType="boolean")
    assert flag.decode([1]) is True
    assert flag.encode(True) == (1,)


def test_scaled_coil() -> None:
    c = codec(register="CoilRegister", dataType="float", scale=2.5)
    assert c.decode([1]) == 2.5
    assert c.encode(2.5) == (1,)
    assert c.encode(True) == (1,)


def test_helpers() -> None:
    assert bits_to_bytes([1, 0, 1, 1, 0, 0, 0, 0, 1]) == b"\x0d\x01"
    assert bits_to_bytes([]) == b""
    assert registers_to_bytes([0x1234, 0xABCD]) == b"\x12\x34\xab\xcd"
    assert slice_changed(b"abcd", None, 0, 2)
    assert not slice_changed(b"abcd", b"abXX", 0, 2)
    assert slice_changed(b"abcd", b"abXX", 2, 4)


# -- round trips (hypothesis) ------------------------------------------------------------------

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
ORDERS = st.sampled_from(ORDERS_32 + ORDERS_64)
SCALES = st.sampled_from([(1.0, 0.0), (0.1, 0.0), (10.0, -40.0), (0.5, 273.15), (-2.0, 1.0)])


@given(st.sampled_from(sorted(INT_RANGES)), ORDERS, st.data())
def test_integers_round_trip_exactly_unscaled(
    value_type: str, order: str, data: st.DataObject
) -> None:
    low, high = INT_RANGES[value_type]
    value = data.draw(st.integers(low, high))
    c = codec(valueType=value_type, byteOrder=order)
    registers = c.encode(value)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert c.decode(list(registers)) == value


@given(st.sampled_from(sorted(INT_RANGES)), ORDERS, SCALES, st.data())
def test_integers_round_trip_through_scale(
    value_type: str, order: str, transform: tuple[float, float], data: st.DataObject
) -> None:
    low, high = INT_RANGES[value_type]
    raw = data.draw(st.integers(max(low, -(2**40)), min(high, 2**40)))  # float-exact raws
    scale, add = transform
    c = codec(valueType=value_type, byteOrder=order, scale=scale, addOffset=add, dataType="double")
    value = raw * scale + add
    assert c.decode(list(c.encode(value))) == pytest.approx(value, rel=1e-12, abs=1e-9)
    assert c.encode(value) == c.encode(c.decode(list(c.encode(value))))


@given(st.sampled_from(["float32", "float64"]), ORDERS, st.data())
def test_floats_round_trip_exactly_unscaled(
    value_type: str, order: str, data: st.DataObject
) -> None:
    width = 32 if value_type == "float32" else 64
    value = data.draw(st.floats(width=width, allow_nan=False))
    c = codec(valueType=value_type, byteOrder=order)
    assert c.decode(list(c.encode(value))) == value


@given(st.sampled_from(["float32", "float64"]), ORDERS, SCALES, st.floats(-1e6, 1e6))
def test_floats_round_trip_through_scale(
    value_type: str, order: str, transform: tuple[float, float], value: float
) -> None:
    scale, add = transform
    c = codec(valueType=value_type, byteOrder=order, scale=scale, addOffset=add)
    rel = 1e-6 if value_type == "float32" else 1e-12
    assert c.decode(list(c.encode(value))) == pytest.approx(value, rel=rel, abs=rel * 1e3)


@given(ORDERS, st.integers(1, 8), st.data())
def test_strings_round_trip(order: str, limit: int, data: st.DataObject) -> None:
    text = data.draw(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=2 * limit)
    )
    c = codec(dataType="string", limit=limit, byteOrder=order, stringPadding="nul")
    assert c.decode(list(c.encode(text))) == text


@given(ORDERS, st.binary(min_size=6, max_size=6))
def test_bytes_round_trip(order: str, value: bytes) -> None:
    c = codec(dataType="bytes", limit=3, byteOrder=order)
    assert c.decode(list(c.encode(value))) == value


@given(st.sampled_from(["bool", "int16", "uint16"]), ORDERS, st.integers(0, 1))
def test_flags_round_trip(value_type: str, order: str, flag: int) -> None:
    c = codec(valueType=value_type, byteOrder=order, dataType="boolean")
    assert c.decode(list(c.encode(bool(flag)))) is bool(flag)


@given(st.integers(1, 64), st.data())
def test_coil_fields_round_trip(limit: int, data: st.DataObject) -> None:
    value = data.draw(st.integers(0, 2**limit - 1))
    c = codec(register="CoilRegister", valueType="uint64", limit=limit)
    bits = c.encode(value)
    assert len(bits) == limit
    assert c.decode(list(bits)) == value


# -- the compiled block decoder -------------------------------------------------------------------


def test_100_contiguous_floats_decode_with_one_struct() -> None:
    codecs = [codec(valueType="float32", offset=2 * i) for i in range(62)]
    block = BlockDecoder(0, 124, codecs)
    data = b"".join(struct.pack(">f", i + 0.5) for i in range(62))
    assert block.struct_count == 1
    assert block.decode(data) == [i + 0.5 for i in range(62)]


def test_mixed_block_equals_decoding_each_property_alone() -> None:
    codecs = [
        codec(valueType="float32", offset=10),
        codec(valueType="int16", offset=12, scale=0.5, dataType="float"),
        codec(valueType="uint32", offset=13, byteOrder="CDAB"),
        codec(dataType="string", offset=16, limit=3),
        codec(dataType="boolean", offset=20, bit=2),
        codec(valueType="uint16", offset=20),  # same register as the bit: overlapping fields
        codec(valueType="float64", offset=22, byteOrder="BADCFEHG"),
        codec(valueType="int8", offset=26, byteOrder="BADC"),
    ]
    data = bytes(range(1, 35))  # registers 10..26
    block = BlockDecoder(10, 17, codecs)
    alone = [c.decode(data[2 * (c.offset - 10) : 2 * (c.offset - 10 + c.count)]) for c in codecs]
    assert block.decode(data) == alone
    assert 1 < block.struct_count <= 4


def test_one_register_values_share_the_struct_of_word_swapped_ones() -> None:
    codecs = [
        codec(valueType="float32", offset=0, byteOrder="CDAB"),
        codec(valueType="int16", offset=2),
    ]
    block = BlockDecoder(0, 3, codecs)
    assert block.struct_count == 1
    assert block.decode(wire("E9 79 42 F6 FF 38")) == [F32, -200]


def test_gaps_and_result_order_follow_the_codecs() -> None:
    codecs = [codec(valueType="uint16", offset=9), codec(valueType="uint16", offset=0)]
    block = BlockDecoder(0, 10, codecs)
    data = registers_to_bytes([7] + [0] * 8 + [9])
    assert block.decode(data) == [9, 7]
    assert block.decode([7, 0, 0, 0, 0, 0, 0, 0, 0, 9]) == [9, 7]


def test_bit_block() -> None:
    codecs = [
        codec(register="CoilRegister", dataType="boolean", offset=100),
        codec(register="CoilRegister", dataType="int", offset=103),
        codec(register="CoilRegister", valueType="uint8", offset=105, limit=4),
        codec(register="CoilRegister", dataType="boolean", offset=115),
    ]
    block = BlockDecoder(100, 16, codecs)
    bits = [1, 0, 0, 1, 0, 1, 1, 0, 1] + [0] * 6 + [1]
    assert block.struct_count == 0
    assert block.decode(bits) == [True, 1, 0b1011, True]
    assert block.decode(bits_to_bytes(bits)) == [True, 1, 0b1011, True]


def test_block_refusals() -> None:
    with pytest.raises(CodecError, match="outside the block"):
        BlockDecoder(0, 2, [codec(valueType="float32", offset=1)])
    with pytest.raises(CodecError, match="single table"):
        BlockDecoder(0, 2, [codec(offset=0), codec(register="InputRegister", offset=1)])
    with pytest.raises(CodecError, match="needs 20"):
        BlockDecoder(0, 10, [codec(offset=0)]).decode(bytes(19))


# -- change detection -------------------------------------------------------------------------


def test_decode_changed_reports_only_changed_slices() -> None:
    codecs = [codec(valueType="float32", offset=2 * i) for i in range(5)]
    block = BlockDecoder(0, 10, codecs)
    first = b"".join(struct.pack(">f", i) for i in range(5))
    assert block.decode_changed(first, None) == {i: float(i) for i in range(5)}
    assert block.decode_changed(first, first) == {}
    second = first[:8] + struct.pack(">f", 9.0) + first[12:]
    assert block.changed(second, first) == [2]
    assert block.decode_changed(second, first) == {2: 9.0}
    assert block.changed(second, first[:-2]) == [0, 1, 2, 3, 4]  # length differs: all


def test_change_detection_in_bit_blocks_never_misses() -> None:
    codecs = [codec(register="CoilRegister", dataType="boolean", offset=i) for i in (0, 7, 8, 15)]
    block = BlockDecoder(0, 16, codecs)
    before = bits_to_bytes([0] * 16)
    after = bits_to_bytes([0] * 8 + [1] + [0] * 7)
    changed = block.decode_changed(after, before)
    assert changed[2] is True
    assert 0 not in changed
    assert 1 not in changed
