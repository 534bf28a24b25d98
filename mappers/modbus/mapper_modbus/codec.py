"""Registers and bits to Python values and back: pure, no I/O.

Byte order model: a register table is read as wire bytes (every register big-endian, as Modbus
sends it). KubeEdge's ``isRegisterSwap`` reverses the 16-bit words of the property, then
``isSwap`` swaps the two bytes of each word; the result is read big-endian. The same two flags
describe every ``byteOrder`` (ABCD = none, BADC = byte swap, CDAB = word swap, DCBA = both).

Speed: a property reads as one ``struct`` field either of the wire bytes or of the wire bytes
with every word's bytes swapped, big- or little-endian (``_view_options``). A block of properties
therefore decodes with one ``struct.Struct`` per (view, endianness) in use, usually exactly one.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from mapper_modbus.config import (
    DataType,
    ModbusVisitorConfig,
    ValueType,
    natural_data_type,
    resolve_value_type,
)
from mapper_sdk.errors import DesiredValueError, ValueConversionError

__all__ = [
    "BlockDecoder",
    "CodecError",
    "EncodeError",
    "PointCodec",
    "RawData",
    "Value",
    "bits_to_bytes",
    "registers_to_bytes",
    "slice_changed",
]

Value = int | float | bool | str | bytes
"""A typed value as the driver API carries it (same union as ``mapper_sdk.driver.Value``)."""

RawData = bytes | bytearray | memoryview | Sequence[int] | Sequence[bool]
"""A response: raw data bytes, 16-bit register values, or bit values as pymodbus returns them."""

Converter = Callable[[Any], Value]


class CodecError(ValueConversionError, ValueError):
    """A response cannot be decoded as the property's configuration says (length, type)."""


class EncodeError(DesiredValueError, ValueError):
    """A value cannot be written.

    ``reason`` is ``out_of_range``, ``invalid``, ``read_only`` or ``needs_current``.
    """


_FORMAT = {
    ValueType.INT16: "h",
    ValueType.UINT16: "H",
    ValueType.INT32: "i",
    ValueType.UINT32: "I",
    ValueType.INT64: "q",
    ValueType.UINT64: "Q",
    ValueType.FLOAT32: "f",
    ValueType.FLOAT64: "d",
    # 8-bit and bool values read their whole register; the converter picks the bits.
    ValueType.INT8: "H",
    ValueType.UINT8: "H",
    ValueType.BOOL: "H",
}
_INT_RANGE = {
    ValueType.INT8: (-(2**7), 2**7 - 1),
    ValueType.UINT8: (0, 2**8 - 1),
    ValueType.INT16: (-(2**15), 2**15 - 1),
    ValueType.UINT16: (0, 2**16 - 1),
    ValueType.INT32: (-(2**31), 2**31 - 1),
    ValueType.UINT32: (0, 2**32 - 1),
    ValueType.INT64: (-(2**63), 2**63 - 1),
    ValueType.UINT64: (0, 2**64 - 1),
}


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """16-bit register values (as pymodbus returns them) to the bytes on the wire."""
    try:
        return struct.pack(f">{len(registers)}H", *registers)
    except struct.error as exc:
        raise CodecError(f"register values must be 0..65535: {exc}") from None


def bits_to_bytes(bits: Sequence[int] | Sequence[bool]) -> bytes:
    """Bit values to Modbus's packing: the first bit is the least significant bit of byte 0."""
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i >> 3] |= 1 << (i & 7)
    return bytes(packed)


def _as_bytes(data: RawData, bit_table: bool) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    return bits_to_bytes(data) if bit_table else registers_to_bytes(data)


def _swap_pairs(data: bytes) -> bytes:
    # array.byteswap is one C loop over the buffer; 'H' is 2 bytes on every CPython platform.
    words = array("H", data[: len(data) & ~1])
    words.byteswap()
    return words.tobytes()


def _reorder(data: bytes, word_swap: bool, byte_swap: bool) -> bytes:
    """Apply KubeEdge's swaps; each is its own inverse, so this also undoes them."""
    if byte_swap:
        data = _swap_pairs(data)
    if word_swap:
        data = b"".join(data[i : i + 2] for i in range(len(data) - 2, -1, -2))
    return data


def _view_options(vt: ValueType, word_swap: bool, byte_swap: bool) -> list[tuple[bool, bool]]:
    """(read the pair-swapped bytes?, little-endian?) choices that give the value's layout.

    ABCD is big-endian wire bytes, DCBA little-endian wire bytes, BADC big-endian and CDAB
    little-endian pair-swapped bytes. A one-register value has no word order, so both choices
    that swap its bytes the right way work; the block decoder takes whichever it already uses.
    """
    if vt.is_text:  # raw bytes: endianness is irrelevant, the converter reorders
        return [(False, False), (False, True)]
    if vt.registers == 1:
        return [(False, byte_swap), (True, not byte_swap)]
    return [(word_swap != byte_swap, word_swap)]


def _to_int(x: float | int) -> int:
    if isinstance(x, int):
        return x
    if not math.isfinite(x):
        raise CodecError(f"{x} cannot be read as an int")
    # KubeEdge truncates after scaling; rounding first keeps 0.7 * 10 = 6.999... from becoming 6.
    return math.trunc(round(x, 9))


def _to_text(x: float | int) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def _chain(steps: Sequence[Converter | None]) -> Converter | None:
    """Compose the steps into one callable; ``None`` when there is nothing to do."""
    todo = [step for step in steps if step is not None]
    if not todo:
        return None
    composed = todo[0]
    for step in todo[1:]:
        # nested closures: cheaper per call than looping over a list of steps
        composed = (lambda f, g: lambda x: g(f(x)))(composed, step)
    return composed


class PointCodec:
    """How one property's registers or bits become a value and back; built once per binding."""

    __slots__ = (
        "_single",
        "add_offset",
        "bit",
        "byte_swap",
        "convert",
        "count",
        "data_type",
        "encoding",
        "format",
        "offset",
        "padding",
        "scale",
        "table",
        "value_type",
        "views",
        "word_swap",
    )

    def __init__(self, visitor: ModbusVisitorConfig, model_type: str | None = None) -> None:
        """``model_type``: the DeviceModel property type, used when the visitor has no dataType."""
        data_type = visitor.data_type or _parse_model_type(model_type)
        try:
            self.value_type = resolve_value_type(visitor, data_type)
        except ValueError as exc:
            raise CodecError(str(exc)) from None
        self.data_type = data_type or natural_data_type(self.value_type)
        self.table, self.offset, self.count = visitor.table, visitor.offset, visitor.limit
        self.word_swap, self.byte_swap = visitor.word_swap, visitor.byte_swap
        self.scale, self.add_offset, self.bit = visitor.scale, visitor.add_offset, visitor.bit
        self.encoding, self.padding = visitor.string_encoding, visitor.string_padding
        if self.table.is_bit:
            self.format, self.views = "", []
        else:
            self.format = _FORMAT.get(self.value_type) or f"{2 * self.count}s"
            self.views = _view_options(self.value_type, self.word_swap, self.byte_swap)
        self.convert: Converter | None = _chain(self._steps())
        self._single: BlockDecoder | None = None

    def decode(self, data: RawData) -> Value:
        """Decode a response holding exactly this property's registers or bits."""
        if self._single is None:
            self._single = BlockDecoder(self.offset, self.count, [self])
        return self._single.decode(data)[0]

    # -- decoding steps -------------------------------------------------------------------

    def _steps(self) -> list[Converter | None]:
        if self.value_type.is_text:
            return self._text_steps()
        scaled = self.scale != 1 or self.add_offset != 0
        steps = [self._raw_step()]
        if scaled:
            scale, add = self.scale, self.add_offset
            steps.append(lambda x: x * scale + add)
        steps.append(self._result_step(scaled))
        return steps

    def _raw_step(self) -> Converter | None:
        vt, bit = self.value_type, self.bit
        if vt is ValueType.INT8:
            return lambda r: ((r & 0xFF) ^ 0x80) - 0x80
        if vt is ValueType.UINT8 and not self.table.is_bit:
            return lambda r: r & 0xFF
        if vt is ValueType.BOOL and not self.table.is_bit:
            return (lambda r: (r >> bit) & 1) if bit is not None else (lambda r: 1 if r else 0)
        return None

    def _result_step(self, scaled: bool) -> Converter | None:
        dt, vt = self.data_type, self.value_type
        if dt is DataType.INT:
            # KubeEdge truncates a scaled value to an int; unscaled ints are already ints.
            return _to_int if scaled or vt in (ValueType.FLOAT32, ValueType.FLOAT64) else None
        if dt in (DataType.FLOAT, DataType.DOUBLE):
            # x * scale + add is already a float, and so is what struct reads as "f" or "d"
            plain_float = vt in (ValueType.FLOAT32, ValueType.FLOAT64)
            return None if scaled or plain_float else float
        if dt is DataType.BOOLEAN:
            return bool
        return _to_text if dt is DataType.STRING else None

    def _text_steps(self) -> list[Converter | None]:
        if self.table.is_bit:  # bytes of packed bits, as Modbus packs them
            nbytes = (self.count + 7) // 8
            return [lambda raw: raw.to_bytes(nbytes, "little")]
        word_swap, byte_swap = self.word_swap, self.byte_swap
        reorder = (lambda b: _reorder(b, word_swap, byte_swap)) if word_swap or byte_swap else None
        return [reorder, self._to_str if self.data_type is DataType.STRING else None]

    def _to_str(self, raw: bytes) -> str:
        if self.padding in ("nul", "both"):
            raw = raw.split(b"\0", 1)[0]  # a NUL ends the string; what follows is garbage
        text = raw.decode(self.encoding, errors="replace")
        return text.rstrip(" ") if self.padding in ("space", "both") else text

    # -- encoding -------------------------------------------------------------------------

    def encode(self, value: Value, current: int | None = None) -> tuple[int, ...]:
        """Registers (0..65535) or bits (0/1) to write so that reading gives back ``value``.

        ``current`` is the register's present value; it is needed only to set one ``bit`` of a
        holding register (read-modify-write). Raises ``EncodeError``.
        """
        if not self.table.writable:
            raise EncodeError(f"{self.table} is read-only", reason="read_only")
        if self.table.is_bit:
            return self._encode_bits(value)
        if self.value_type.is_text:
            return self._encode_text(value)
        if self.value_type is ValueType.BOOL:
            return (self._encode_flag(value, current),)
        return self._encode_number(value)

    def _encode_number(self, value: Value) -> tuple[int, ...]:
        x = self._unscale(_as_number(value))
        vt = self.value_type
        if vt in _INT_RANGE:
            n = _round_int(x)
            low, high = _INT_RANGE[vt]
            if not low <= n <= high:
                raise EncodeError(f"{value!r} is outside {vt} after scaling", reason="out_of_range")
            x = n & 0xFF if vt in (ValueType.INT8, ValueType.UINT8) else n
        swapped, little = self.views[0]
        try:
            data = struct.pack(("<" if little else ">") + self.format, x)
        except (OverflowError, struct.error):
            raise EncodeError(f"{value!r} does not fit {vt}", reason="out_of_range") from None
        return self._registers(_swap_pairs(data) if swapped else data)

    def _encode_flag(self, value: Value, current: int | None) -> int:
        flag = self._flag(value)
        if self.bit is None:
            return flag
        if current is None:
            raise EncodeError("writing one bit needs the register's value", reason="needs_current")
        return (current & ~(1 << self.bit) & 0xFFFF) | (flag << self.bit)

    def _encode_text(self, value: Value) -> tuple[int, ...]:
        if isinstance(value, str):
            try:
                data = value.encode(self.encoding)
            except UnicodeEncodeError as exc:
                raise EncodeError(f"{value!r}: {exc.reason}", reason="invalid") from None
        elif isinstance(value, bytes):
            data = value
        else:
            raise EncodeError(f"{value!r} is not text", reason="invalid")
        size = 2 * self.count
        if len(data) > size:
            raise EncodeError(f"{len(data)} bytes do not fit {size}", reason="out_of_range")
        pad = b" " if self.padding == "space" else b"\0"
        data = _reorder(data + pad * (size - len(data)), self.word_swap, self.byte_swap)
        return self._registers(data)

    def _encode_bits(self, value: Value) -> tuple[int, ...]:
        if self.value_type is ValueType.BOOL:
            return (self._flag(value),)
        if self.value_type is ValueType.BYTES and isinstance(value, bytes):
            n = int.from_bytes(value, "little")
        else:
            n = _round_int(self._unscale(_as_number(value)))
        if not 0 <= n < 1 << self.count:
            raise EncodeError(f"{value!r} does not fit {self.count} bits", reason="out_of_range")
        return tuple((n >> i) & 1 for i in range(self.count))

    def _flag(self, value: Value) -> int:
        # A number is unscaled like any other (a coil read as 0.0/2.5 is written as 0.0/2.5).
        n = value if isinstance(value, bool) else self._unscale(_as_number(value))
        if n not in (0, 1):
            raise EncodeError(f"{value!r} is not a boolean (0/1)", reason="out_of_range")
        return int(n)

    def _unscale(self, x: float | int) -> float | int:
        if self.scale == 1 and self.add_offset == 0:
            return x  # keeps 64-bit integers exact
        return (x - self.add_offset) / self.scale

    @staticmethod
    def _registers(data: bytes) -> tuple[int, ...]:
        return struct.unpack(f">{len(data) // 2}H", data)


def _parse_model_type(model_type: str | None) -> DataType | None:
    if model_type is None:
        return None
    try:
        return DataType(model_type.lower())
    except ValueError:
        raise CodecError(f"model type {model_type!r} cannot be read over Modbus") from None


def _as_number(value: Value) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return int(text == "true")
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
    raise EncodeError(f"{value!r} is not a number", reason="invalid")


def _round_int(x: float | int) -> int:
    if isinstance(x, int):
        return x
    if not math.isfinite(x):
        raise EncodeError(f"{x} is not a finite number", reason="out_of_range")
    return round(x)


class _Lane:
    """Properties of a block read by one ``struct.Struct`` (one view, one endianness)."""

    __slots__ = ("end", "fields", "little", "swapped")

    def __init__(self, swapped: bool, little: bool) -> None:
        self.swapped, self.little = swapped, little
        self.fields: list[tuple[int, int]] = []  # (byte start, codec index), by start
        self.end = 0

    def compile(self, codecs: Sequence[PointCodec]) -> tuple[bool, struct.Struct, list[int]]:
        fmt, pos = "<" if self.little else ">", 0
        for start, i in self.fields:
            fmt += (f"{start - pos}x" if start > pos else "") + codecs[i].format
            pos = start + 2 * codecs[i].count
        return self.swapped, struct.Struct(fmt), [i for _, i in self.fields]


def _plan_lanes(address: int, codecs: Sequence[PointCodec]) -> list[_Lane]:
    """Fit the properties into as few lanes as possible; overlapping ones need another lane."""
    lanes: list[_Lane] = []
    for i in sorted(range(len(codecs)), key=lambda i: codecs[i].offset):
        codec, start = codecs[i], 2 * (codecs[i].offset - address)
        fits = (ln for view in codec.views for ln in lanes if (ln.swapped, ln.little) == view)
        lane = next((ln for ln in fits if ln.end <= start), None)
        if lane is None:
            lane = _Lane(*codec.views[0])
            lanes.append(lane)
        lane.fields.append((start, i))
        lane.end = start + 2 * codec.count
    return lanes


class BlockDecoder:
    """Decodes all properties of one read block from one response; compile once per plan.

    ``codecs`` are the block's properties in the order results are returned. Register blocks
    decode with one precompiled ``struct.Struct`` per byte-order family in use (normally one);
    bit blocks with one integer conversion and a shift and mask per property.
    """

    __slots__ = (
        "_bits",
        "_converters",
        "_fields",
        "_in_order",
        "_lanes",
        "_n",
        "_plain",
        "_size",
        "_slices",
        "_swap",
    )

    def __init__(self, address: int, count: int, codecs: Sequence[PointCodec]) -> None:
        if len({c.table for c in codecs}) > 1:
            raise CodecError("a block reads a single table")
        for c in codecs:
            if c.offset < address or c.offset + c.count > address + count:
                raise CodecError(f"address {c.offset} (+{c.count}) is outside the block")
        self._bits = bool(codecs) and codecs[0].table.is_bit
        self._n = len(codecs)
        self._converters = [c.convert for c in codecs]
        self._size = (count + 7) // 8 if self._bits else 2 * count
        self._slices = [_byte_slice(c, address) for c in codecs]
        # bit blocks: (shift, mask) per property; register blocks: compiled lanes
        self._fields = [(c.offset - address, (1 << c.count) - 1) for c in codecs if self._bits]
        lanes = [] if self._bits else _plan_lanes(address, codecs)
        self._lanes = [lane.compile(codecs) for lane in lanes]
        self._swap = any(swapped for swapped, _, _ in self._lanes)
        # The common case: one struct whose fields come out in result order.
        self._in_order = len(self._lanes) == 1 and self._lanes[0][2] == list(range(self._n))
        self._plain = all(conv is None for conv in self._converters)

    @property
    def struct_count(self) -> int:
        """How many ``struct.Struct`` one decode runs (0 for bit blocks)."""
        return len(self._lanes)

    def decode(self, data: RawData) -> list[Value]:
        """Every property's value, in the order of ``codecs``."""
        buf = self._checked(data)
        if self._bits:
            return self._decode_bits(buf)
        convs = self._converters
        swapped = _swap_pairs(buf) if self._swap else buf
        if self._in_order:
            raws = self._lanes[0][1].unpack_from(swapped if self._lanes[0][0] else buf)
            if self._plain:  # nothing to convert: the struct's fields are the values
                return list(raws)
            return [r if c is None else c(r) for r, c in zip(raws, convs, strict=True)]
        out: list[Value] = [0] * self._n
        for is_swapped, layout, order in self._lanes:
            raws = layout.unpack_from(swapped if is_swapped else buf)
            for i, raw in zip(order, raws, strict=True):
                conv = convs[i]
                out[i] = raw if conv is None else conv(raw)
        return out

    def changed(self, data: bytes, previous: bytes | None) -> list[int]:
        """Indexes of the properties whose bytes differ from ``previous`` (all if none).

        Compares raw bytes, not values, so an unchanged block costs one ``bytes`` comparison.
        In bit blocks a property shares bytes with its neighbours, so it may be reported
        changed when only a neighbour changed; it is never missed.
        """
        if previous is None or len(previous) != len(data):
            return list(range(self._n))
        if data == previous:
            return []
        return [i for i, (a, b) in enumerate(self._slices) if data[a:b] != previous[a:b]]

    def decode_changed(self, data: bytes, previous: bytes | None) -> dict[int, Value]:
        """Values of only the properties whose bytes changed since ``previous``."""
        indexes = self.changed(data, previous)
        if not indexes:
            return {}
        values = self.decode(data)
        return {i: values[i] for i in indexes}

    def _checked(self, data: RawData) -> bytes:
        buf = _as_bytes(data, bit_table=self._bits)
        if len(buf) < self._size:
            raise CodecError(f"response has {len(buf)} data bytes, the block needs {self._size}")
        return buf

    def _decode_bits(self, buf: bytes) -> list[Value]:
        word = int.from_bytes(buf, "little")
        out: list[Value] = []
        for (shift, mask), conv in zip(self._fields, self._converters, strict=True):
            raw = (word >> shift) & mask
            out.append(raw if conv is None else conv(raw))
        return out


def _byte_slice(codec: PointCodec, address: int) -> tuple[int, int]:
    start = codec.offset - address
    if codec.table.is_bit:
        return start >> 3, (start + codec.count + 7) >> 3
    return 2 * start, 2 * (start + codec.count)


def slice_changed(data: bytes, previous: bytes | None, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` differs from the same bytes of the previous response."""
    return previous is None or data[start:end] != previous[start:end]
