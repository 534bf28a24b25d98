"""Models for the Modbus ``protocol.configData`` and ``visitors.configData`` maps.

KubeEdge's own keys (contract §6.1) keep exactly their meaning; everything else is an opt-in
extra. Values arrive the way EdgeCore delivers them (contract §1.5): every number as a float32
(``1.0``, ``0.10000000149011612``), ports often as strings (``"5502"``); all of these validate.
"""

from __future__ import annotations

import codecs
import difflib
import math
import struct
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mapper_modbus.tables import MAX_ADDRESS, Register

__all__ = [
    "ByteOrder",
    "CommunicateMode",
    "DataType",
    "ModbusProtocolConfig",
    "ModbusVisitorConfig",
    "Parity",
    "Register",
    "ValueType",
    "natural_data_type",
    "resolve_value_type",
]


class CommunicateMode(StrEnum):
    TCP = "TCP"
    RTU = "RTU"
    ASCII = "ASCII"
    RTU_OVER_TCP = "RTUoverTCP"
    UDP = "UDP"
    TLS = "TLS"

    @property
    def is_serial(self) -> bool:
        return self in (CommunicateMode.RTU, CommunicateMode.ASCII)


class Parity(StrEnum):
    """Serial parity, valued as pyserial spells it."""

    NONE = "N"
    EVEN = "E"
    ODD = "O"


class DataType(StrEnum):
    """KubeEdge's visitor ``dataType`` (the model type, lower-cased): what a read returns."""

    INT = "int"
    FLOAT = "float"
    DOUBLE = "double"
    STRING = "string"
    BOOLEAN = "boolean"
    BYTES = "bytes"


class ValueType(StrEnum):
    """How the raw registers are laid out on the device (the ``valueType`` extra)."""

    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BYTES = "bytes"
    BOOL = "bool"

    @property
    def registers(self) -> int | None:
        """Registers one value occupies; ``None`` for text, whose length is ``limit``."""
        return _REGISTERS.get(self)

    @property
    def is_text(self) -> bool:
        return self in (ValueType.STRING, ValueType.BYTES)


_REGISTERS = {
    ValueType.INT8: 1,
    ValueType.UINT8: 1,
    ValueType.BOOL: 1,
    ValueType.INT16: 1,
    ValueType.UINT16: 1,
    ValueType.INT32: 2,
    ValueType.UINT32: 2,
    ValueType.FLOAT32: 2,
    ValueType.INT64: 4,
    ValueType.UINT64: 4,
    ValueType.FLOAT64: 4,
}
# On coils and discrete inputs an unsigned type is a bit field of up to that many bits.
_BIT_FIELD_WIDTH = {
    ValueType.UINT8: 8,
    ValueType.UINT16: 16,
    ValueType.UINT32: 32,
    ValueType.UINT64: 64,
}


class ByteOrder(StrEnum):
    """Order of the value's bytes on the wire, ``A`` being the most significant.

    Every order is two independent flags, so a 32-bit name also applies to 16- and 64-bit
    values (and vice versa): ``word_swap`` is KubeEdge's ``isRegisterSwap``, ``byte_swap`` its
    ``isSwap``.
    """

    ABCD = "ABCD"
    BADC = "BADC"
    CDAB = "CDAB"
    DCBA = "DCBA"
    ABCDEFGH = "ABCDEFGH"
    BADCFEHG = "BADCFEHG"
    GHEFCDAB = "GHEFCDAB"
    HGFEDCBA = "HGFEDCBA"

    @property
    def word_swap(self) -> bool:
        return self in (ByteOrder.CDAB, ByteOrder.DCBA, ByteOrder.GHEFCDAB, ByteOrder.HGFEDCBA)

    @property
    def byte_swap(self) -> bool:
        return self in (ByteOrder.BADC, ByteOrder.DCBA, ByteOrder.BADCFEHG, ByteOrder.HGFEDCBA)


def _squash(value: str) -> str:
    return "".join(ch for ch in value.lower() if ch.isalnum())


def _enum_lookup(enum: type[StrEnum], aliases: Mapping[str, str]) -> Callable[[Any], Any]:
    """A parser accepting any capitalisation and punctuation (and a few aliases) of the values."""
    table = {_squash(member.value): member.value for member in enum}
    table |= {_squash(alias): value for alias, value in aliases.items()}

    def parse(value: Any) -> Any:
        return table.get(_squash(value), value) if isinstance(value, str) else value

    return parse


def _undo_float32(value: Any) -> Any:
    """Give back the decimal the user wrote when EdgeCore turned it into a float32.

    ``scale: 0.1`` reaches the mapper as 0.10000000149011612; multiplying by that would put the
    noise into every reading. A float64 that is exactly a float32 is replaced by the shortest
    decimal with the same float32 bits; anything else is left alone.
    """
    if not isinstance(value, float) or not math.isfinite(value) or abs(value) > 3.4e38:
        return value
    packed = struct.pack("<f", value)
    if struct.unpack("<f", packed)[0] != value:
        return value
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


_parse_register = _enum_lookup(
    Register,
    {"coil": "CoilRegister", "discreteinput": "DiscreteInputRegister"}
    | {"holding": "HoldingRegister", "input": "InputRegister"},
)
_parse_value_type = _enum_lookup(
    ValueType, {"boolean": "bool", "float": "float32", "double": "float64"}
)

Mode = Annotated[CommunicateMode, BeforeValidator(_enum_lookup(CommunicateMode, {}))]
ParityField = Annotated[
    Parity, BeforeValidator(_enum_lookup(Parity, {"none": "N", "even": "E", "odd": "O"}))
]
RegisterField = Annotated[Register, BeforeValidator(_parse_register)]
DataTypeField = Annotated[DataType, BeforeValidator(_enum_lookup(DataType, {"bool": "boolean"}))]
ValueTypeField = Annotated[ValueType, BeforeValidator(_parse_value_type)]
ByteOrderField = Annotated[ByteOrder, BeforeValidator(_enum_lookup(ByteOrder, {}))]
Decimal = Annotated[float, BeforeValidator(_undo_float32), Field(allow_inf_nan=False)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _ConfigData(BaseModel):
    """Frozen, camelCase, with unknown keys refused by name (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    _ignored_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def config_keys(cls) -> set[str]:
        """The keys a user writes in ``configData`` (the camelCase names and v1alpha2 spellings)."""
        keys: set[str] = set()
        for name, field in cls.model_fields.items():
            keys.add(field.alias or name)
            if isinstance(field.validation_alias, AliasChoices):
                keys.update(c for c in field.validation_alias.choices if isinstance(c, str))
        return keys

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        known = cls.config_keys()
        accepted = known | set(cls.model_fields) | cls._ignored_keys  # Python names too
        unknown = sorted(str(k) for k in data if k not in accepted)
        if unknown:
            raise ValueError("; ".join(_unknown_key_message(key, known) for key in unknown))
        return {k: v for k, v in data.items() if k not in cls._ignored_keys}


def _unknown_key_message(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return f"unknown key {key!r} ({hint})"


def _check_file_path(name: str, value: str | None) -> None:
    # Key material must stay in files the operator protects, never in a CRD anyone can read.
    if value is not None and ("-----BEGIN" in value or "\n" in value):
        raise ValueError(f"{name} must be a file path, not the certificate or key itself")


class ModbusProtocolConfig(_ConfigData):
    """``spec.protocol.configData`` of a Modbus device."""

    communicate_mode: Mode = Field(CommunicateMode.TCP, alias="communicateMode")
    ip: str | None = None
    port: Port | None = None
    slave_id: int = Field(1, ge=0, le=255, alias="slaveID")
    serial_name: str | None = Field(
        None,
        validation_alias=AliasChoices("serialName", "serialPort"),
        serialization_alias="serialName",
    )
    baud_rate: int = Field(9600, gt=0, alias="baudRate")
    data_bits: int = Field(8, ge=5, le=8, alias="dataBits")
    parity: ParityField = Parity.NONE
    stop_bits: float = Field(1.0, alias="stopBits")
    rs485_enabled: bool = Field(False, alias="rs485Enabled")
    timeout: Decimal = Field(5000.0, gt=0, description="ms; KubeEdge's legacy mapper fixed 5 s")
    retries: int = Field(1, ge=0, le=10)
    inter_frame_delay: Decimal | None = Field(None, ge=0, alias="interFrameDelay")
    cert_file: str | None = Field(None, alias="certFile")
    key_file: str | None = Field(None, alias="keyFile")
    ca_file: str | None = Field(None, alias="caFile")
    always_multiple_write: bool = Field(False, alias="alwaysMultipleWrite")
    max_gap: int = Field(10, ge=0, le=124, alias="maxGap")
    max_gap_bits: int = Field(64, ge=0, le=1999, alias="maxGapBits")
    verify_writes: bool = Field(False, alias="verifyWrites", description="read back every write")
    max_in_flight: int = Field(
        1, ge=1, le=16, alias="maxInFlight", description="TCP requests outstanding at once"
    )

    @property
    def resolved_port(self) -> int:
        """The port to dial: the configured one, else 802 for Modbus/TLS and 502 otherwise."""
        if self.port is not None:
            return self.port
        return 802 if self.communicate_mode is CommunicateMode.TLS else 502

    @property
    def timeout_s(self) -> float:
        return self.timeout / 1000.0

    @model_validator(mode="after")
    def _check_transport(self) -> Self:
        mode = self.communicate_mode
        if self.stop_bits not in (1, 1.5, 2):
            raise ValueError(f"stopBits must be 1, 1.5 or 2, not {self.stop_bits}")
        if mode.is_serial and not self.serial_name:
            raise ValueError(f"communicateMode {mode} needs serialName (the serial device path)")
        if not mode.is_serial and not self.ip:
            raise ValueError(f"communicateMode {mode} needs ip")
        if mode.is_serial and self.max_in_flight != 1:
            raise ValueError("maxInFlight must be 1: a serial bus carries one request at a time")
        tls_files = {"certFile": self.cert_file, "keyFile": self.key_file, "caFile": self.ca_file}
        for name, value in tls_files.items():
            _check_file_path(name, value)
            if value is not None and mode is not CommunicateMode.TLS:
                raise ValueError(f"{name} is only used with communicateMode TLS")
        return self


StringPadding = Literal["nul", "space", "both", "none"]


class ModbusVisitorConfig(_ConfigData):
    """``visitors.configData`` of one property of a Modbus device."""

    # KubeEdge's sample carries the property's bounds here; they belong to the model, not the wire.
    _ignored_keys: ClassVar[frozenset[str]] = frozenset({"max", "min"})

    # Not named `register`: pydantic models are ABCs, whose metaclass owns that name.
    table: RegisterField = Field(alias="register")
    offset: int = Field(0, ge=0, le=MAX_ADDRESS)
    limit: int = Field(1, ge=1, description="registers (or bits) to read")
    scale: Decimal = 1.0
    is_swap: bool = Field(False, alias="isSwap")
    is_register_swap: bool = Field(False, alias="isRegisterSwap")
    data_type: DataTypeField | None = Field(None, alias="dataType")
    byte_order: ByteOrderField | None = Field(None, alias="byteOrder")
    value_type: ValueTypeField | None = Field(None, alias="valueType")
    bit: int | None = Field(None, ge=0, le=15)
    string_encoding: str = Field("utf-8", alias="stringEncoding")
    string_padding: StringPadding = Field("nul", alias="stringPadding")
    add_offset: Decimal = Field(0.0, alias="addOffset")
    max_block: int | None = Field(None, ge=1, alias="maxBlock")

    @property
    def word_swap(self) -> bool:
        """Reverse the 16-bit word order (``isRegisterSwap``, or what ``byteOrder`` implies)."""
        return self.byte_order.word_swap if self.byte_order else self.is_register_swap

    @property
    def byte_swap(self) -> bool:
        """Swap the two bytes of every word (``isSwap``, or what ``byteOrder`` implies)."""
        return self.byte_order.byte_swap if self.byte_order else self.is_swap

    @model_validator(mode="before")
    @classmethod
    def _limit_from_value_type(cls, data: Any) -> Any:
        # `valueType: float32` alone should read two registers, not KubeEdge's default of one.
        if not isinstance(data, Mapping) or "limit" in data or "valueType" not in data:
            return data
        try:
            value_type = ValueType(_parse_value_type(data["valueType"]))
            bit_table = Register(_parse_register(data.get("register"))).is_bit
        except ValueError:
            return data  # the field validators report it
        size = _BIT_FIELD_WIDTH.get(value_type) if bit_table else value_type.registers
        return {**data, "limit": size} if size else data

    @model_validator(mode="after")
    def _check_layout(self) -> Self:
        for check in _VISITOR_CHECKS:
            check(self)
        if self.data_type is not None or self.value_type is not None:
            resolve_value_type(self, self.data_type)
        return self


def _check_numbers(v: ModbusVisitorConfig) -> None:
    if v.scale == 0:
        raise ValueError("scale must not be 0 (writes divide by it)")


def _check_span(v: ModbusVisitorConfig) -> None:
    if v.limit > v.table.max_read:
        raise ValueError(f"limit {v.limit} exceeds {v.table.max_read}, the most one read allows")
    if v.offset + v.limit - 1 > MAX_ADDRESS:
        raise ValueError(f"offset {v.offset} + limit {v.limit} runs past address {MAX_ADDRESS}")
    if v.max_block is not None and not v.limit <= v.max_block <= v.table.max_read:
        raise ValueError(f"maxBlock must be between limit ({v.limit}) and {v.table.max_read}")


def _check_byte_order(v: ModbusVisitorConfig) -> None:
    # byteOrder is an alternative spelling, never a silent override of KubeEdge's own flags.
    if v.byte_order is None:
        return
    for key, field, implied in (
        ("isSwap", "is_swap", v.byte_order.byte_swap),
        ("isRegisterSwap", "is_register_swap", v.byte_order.word_swap),
    ):
        flag = getattr(v, field)
        if field in v.model_fields_set and flag != implied:
            raise ValueError(
                f"byteOrder {v.byte_order} contradicts {key}: {str(flag).lower()}; "
                f"drop {key} or make it agree"
            )


def _check_bit(v: ModbusVisitorConfig) -> None:
    if v.bit is None:
        return
    if v.table.is_bit:
        raise ValueError("bit selects a bit of a register; coils and discrete inputs are bits")
    if v.limit != 1 or v.value_type not in (None, ValueType.BOOL):
        raise ValueError("bit needs limit 1 and no valueType other than bool")


def _check_encoding(v: ModbusVisitorConfig) -> None:
    try:
        codecs.lookup(v.string_encoding)
    except LookupError:
        raise ValueError(f"unknown stringEncoding {v.string_encoding!r}") from None


_VISITOR_CHECKS: tuple[Callable[[ModbusVisitorConfig], None], ...] = (
    _check_numbers,
    _check_span,
    _check_byte_order,
    _check_bit,
    _check_encoding,
)

_NATURAL_DATA_TYPE = {ValueType.STRING: DataType.STRING, ValueType.BYTES: DataType.BYTES}
_NATURAL_DATA_TYPE |= {ValueType.BOOL: DataType.BOOLEAN, ValueType.FLOAT32: DataType.FLOAT}
_NATURAL_DATA_TYPE |= {ValueType.FLOAT64: DataType.DOUBLE}


def natural_data_type(value_type: ValueType) -> DataType:
    """The Python result a value type gives when neither ``dataType`` nor the model says."""
    return _NATURAL_DATA_TYPE.get(value_type, DataType.INT)


# KubeEdge's mapper picks the layout from dataType and the register count (contract §6.1):
# 1 register is always an unsigned 16-bit number, scaled; 2 and 4 are 32/64-bit.
_KUBEEDGE_LAYOUT = {
    (DataType.INT, 1): ValueType.UINT16,
    (DataType.INT, 2): ValueType.UINT32,
    (DataType.INT, 4): ValueType.UINT64,
    (DataType.FLOAT, 1): ValueType.UINT16,
    (DataType.FLOAT, 2): ValueType.FLOAT32,
    (DataType.FLOAT, 4): ValueType.FLOAT64,
    (DataType.DOUBLE, 1): ValueType.UINT16,
    (DataType.DOUBLE, 2): ValueType.FLOAT32,
    (DataType.DOUBLE, 4): ValueType.FLOAT64,
    (DataType.BOOLEAN, 1): ValueType.BOOL,
}


def resolve_value_type(v: ModbusVisitorConfig, data_type: DataType | None) -> ValueType:
    """The wire layout of a property; ``data_type`` is its visitor's ``dataType`` or model type.

    Raises ``ValueError`` when the combination cannot be read, naming the fix.
    """
    if v.table.is_bit:
        return _resolve_bits(v, data_type)
    if v.value_type is None:
        if v.bit is not None:
            return ValueType.BOOL
        if data_type in (DataType.STRING, DataType.BYTES):
            return ValueType(data_type.value)
        layout = _KUBEEDGE_LAYOUT.get((data_type or DataType.INT, v.limit))
        if layout is None:
            raise ValueError(
                f"dataType {data_type or 'int'} with limit {v.limit} has no layout; "
                "use limit 1, 2 or 4, or set valueType"
            )
        return layout
    return _check_explicit(v, v.value_type, data_type)


def _check_explicit(v: ModbusVisitorConfig, vt: ValueType, data_type: DataType | None) -> ValueType:
    if vt.registers is not None and v.limit != vt.registers:
        raise ValueError(f"valueType {vt} needs limit {vt.registers}, not {v.limit}")
    text_result = data_type in (DataType.STRING, DataType.BYTES)
    if vt.is_text and data_type is not None and not text_result:
        raise ValueError(f"valueType {vt} can only be read as dataType string or bytes")
    if data_type is DataType.BYTES and not vt.is_text:
        raise ValueError("dataType bytes needs valueType string or bytes")
    return vt


def _resolve_bits(v: ModbusVisitorConfig, data_type: DataType | None) -> ValueType:
    vt = v.value_type
    if vt is None:
        if data_type is DataType.BYTES:
            return ValueType.BYTES
        vt = ValueType.BOOL if v.limit == 1 else ValueType.UINT64
    if data_type is DataType.STRING or vt is ValueType.STRING:
        raise ValueError(f"{v.table} holds bits and cannot be read as a string")
    if vt is ValueType.BYTES:
        return vt
    width = 1 if vt is ValueType.BOOL else _BIT_FIELD_WIDTH.get(vt)
    if width is None or v.limit > width:
        raise ValueError(
            f"{v.table} with limit {v.limit} reads bits: use bool (limit 1), "
            "uint8..uint64 (a bit field of up to that many bits) or bytes"
        )
    if data_type is DataType.BYTES:
        raise ValueError("dataType bytes needs valueType bytes")
    return vt
