"""Test kit for the Modbus driver: a catalogue of properties with known register contents,
and builders for devices, server images and configs.

Every ``Case`` says what a device holds (``content``, laid out by ``sim.wire_words``, which is
written from the byte-order letters and not from the driver's codec) and what the property must
read (``expected``). ``lossless`` cases also write back to exactly ``content``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mapper_modbus.driver import ModbusDriver
from mapper_sdk import values
from mapper_sdk.binding import BoundDevice
from mapper_sdk.models import Device, DeviceModel, PropertyType
from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property

from .sim import HOST, ORDERS_32, ORDERS_64, Image, text_words, wire_words

TABLES = {
    "holding": "HoldingRegister",
    "input": "InputRegister",
    "coils": "CoilRegister",
    "discrete": "DiscreteInputRegister",
}


def f32(x: float) -> float:
    """``x`` rounded to the nearest float32, as a device would hold it."""
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


SAMPLES: dict[str, int | float] = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3_000_000_000,
    "int64": -1_234_567_890_123_456_789,
    "uint64": 2**62 + 12345,  # the twin type INT is an int64
    "float32": f32(-273.15),
    "float64": 2.718281828459045,
}
MODEL_TYPES = {"float32": "FLOAT", "float64": "DOUBLE"}


@dataclass(frozen=True)
class Case:
    name: str
    model_type: str
    table: str  # sim table: holding, input, coils, discrete
    offset: int
    visitor: dict[str, Any]  # complete visitor configData
    content: list[int] | list[bool]
    expected: values.Value
    lossless: bool = True  # writing ``expected`` gives back exactly ``content``

    @property
    def twin(self) -> str:
        """The twin text the property must report."""
        return values.format_value(self.expected, PropertyType(self.model_type))

    @property
    def writable(self) -> bool:
        return self.table in ("holding", "coils")


class Catalog:
    """Cases laid out one after another in each table."""

    def __init__(self) -> None:
        self.cases: list[Case] = []
        self._next = dict.fromkeys(TABLES, 0)

    def add(
        self,
        name: str,
        model_type: str,
        table: str,
        visitor: dict[str, Any],
        content: Sequence[int] | Sequence[bool],
        expected: values.Value,
        *,
        lossless: bool = True,
        gap: int = 0,
        offset: int | None = None,
    ) -> Case:
        start = self._next[table] + gap if offset is None else offset
        config = {"register": TABLES[table], "offset": start, **visitor}
        case = Case(name, model_type, table, start, config, list(content), expected, lossless)
        self._next[table] = max(self._next[table], start + len(content))
        self.cases.append(case)
        return case


def every_type() -> list[Case]:
    """Every value type in every byte order, KubeEdge's own spellings, bits, text, scaling."""
    cat = Catalog()
    for vt, orders in (*((t, ORDERS_32) for t in list(SAMPLES)[:4]), ("float32", ORDERS_32)):
        for order in orders:
            _numeric(cat, vt, order)
    for vt in ("int64", "uint64", "float64"):
        for order in ORDERS_64:
            _numeric(cat, vt, order)
    _small_and_text(cat)
    _kubeedge_spellings(cat)
    _bits(cat)
    return cat.cases


def _numeric(cat: Catalog, vt: str, order: str, table: str = "holding") -> None:
    value = SAMPLES[vt]
    visitor = {"valueType": vt, "byteOrder": order}
    model = MODEL_TYPES.get(vt, "INT")
    cat.add(
        f"{vt}-{order.lower()}-{table}", model, table, visitor, wire_words(vt, value, order), value
    )


def _small_and_text(cat: Catalog) -> None:
    cat.add("int8", "INT", "holding", {"valueType": "int8"}, [0xABFE], -2, lossless=False)
    cat.add("uint8-badc", "INT", "holding", {"valueType": "uint8", "byteOrder": "BADC"},
            [0x3412], 0x34, lossless=False)  # fmt: skip
    flags = 0b0000_0000_0010_0000
    cat.add("flag-bit5", "BOOLEAN", "holding", {"bit": 5}, [flags], True)
    # A second property on the same register: two fields of one block, one response.
    cat.add(
        "flag-bit4", "BOOLEAN", "holding", {"bit": 4}, [flags], False, offset=cat.cases[-1].offset
    )
    cat.add("label", "STRING", "holding", {"dataType": "string", "limit": 5},
            text_words(b"Modbus-1", 5), "Modbus-1")  # fmt: skip
    cat.add("label-badc", "STRING", "holding",
            {"valueType": "string", "limit": 4, "byteOrder": "BADC"},
            text_words(b"ABCDEFG", 4, swap=True), "ABCDEFG")  # fmt: skip
    cat.add("label-space", "STRING", "holding", {"limit": 4, "stringPadding": "space"},
            text_words(b"hi", 4, pad=b" "), "hi")  # fmt: skip
    cat.add("raw", "BYTES", "holding", {"valueType": "bytes", "limit": 2},
            text_words(b"\x01\x02\xfe\xff", 2), b"\x01\x02\xfe\xff")  # fmt: skip
    raw = -400
    cat.add("celsius", "FLOAT", "holding",
            {"valueType": "int16", "scale": 0.1, "addOffset": -40.0},
            wire_words("int16", raw), raw * 0.1 + -40.0)  # fmt: skip


def _kubeedge_spellings(cat: Catalog) -> None:
    # As KubeEdge's examples write them: one register times scale, int truncates.
    cat.add("ke-temperature", "FLOAT", "holding",
            {"dataType": "float", "limit": 1, "scale": 0.1, "isSwap": False,
             "isRegisterSwap": False}, [235], 235 * 0.1)  # fmt: skip
    cat.add("ke-int-scaled", "INT", "holding", {"dataType": "int", "limit": 1, "scale": 0.5},
            [201], 100, lossless=False)  # fmt: skip
    cat.add("ke-uint32-swapped", "INT", "holding",
            {"dataType": "int", "limit": 2, "isRegisterSwap": True},
            wire_words("uint32", 3_000_000_123, "CDAB"), 3_000_000_123)  # fmt: skip
    cat.add("ke-float32", "FLOAT", "holding", {"dataType": "float", "limit": 2},
            wire_words("float32", f32(21.75)), f32(21.75))  # fmt: skip
    # The Go example keeps only the first byte of an input register; all 16 bits count.
    cat.add("ke-input", "INT", "input", {"dataType": "int", "limit": 1}, [0x1234], 0x1234)
    _numeric(cat, "float32", "CDAB", "input")
    _numeric(cat, "int64", "HGFEDCBA", "input")


def _bits(cat: Catalog) -> None:
    cat.add("relay", "BOOLEAN", "coils", {}, [True], True)
    cat.add("ke-switch", "INT", "coils", {"dataType": "int", "limit": 1, "scale": 1}, [True], 1)
    field = [False, True, False, False, True, True, False, True]  # first coil = least significant
    cat.add("mode-bits", "INT", "coils", {"valueType": "uint8"}, field, 0b10110010)
    cat.add("door", "BOOLEAN", "discrete", {}, [True], True, gap=3)
    alarms = [True, False, True, True, False, False, False, False, True, False, True]
    cat.add("alarms", "BYTES", "discrete", {"dataType": "bytes", "limit": len(alarms)}, alarms,
            bytes([0b00001101, 0b00000101]))  # fmt: skip


# -- builders ------------------------------------------------------------------------------


def image_of(cases: Iterable[Case], size: int = 256) -> Image:
    image = Image(size=size)
    for case in cases:
        content = case.content
        if case.table in ("coils", "discrete"):
            image.put_bits(case.table, case.offset, content)
        else:
            image.put_words(case.table, case.offset, [int(w) for w in content])
    return image


def tcp_config(port: int, unit: int = 1, **extra: Any) -> dict[str, Any]:
    """KubeEdge's spelling: port as a string, timeout in ms."""
    return {"communicateMode": "TCP", "ip": HOST, "port": str(port), "slaveID": unit,
            "timeout": 1000, **extra}  # fmt: skip


def device_of(
    cases: Sequence[Case],
    protocol_config: dict[str, Any],
    *,
    name: str = "meter",
    collect_cycle_ms: int = 100,
) -> tuple[Device, DeviceModel]:
    props = [model_property(c.name, c.model_type, "ReadWrite") for c in cases]
    model = make_model(f"{name}-model", *props, protocol="modbus")
    visitors = {c.name: c.visitor for c in cases}
    device = make_device(name, model, protocol_config, visitors, collect_cycle_ms=collect_cycle_ms)
    return device, model


def bound_of(cases: Sequence[Case], protocol_config: dict[str, Any], **kw: Any) -> BoundDevice:
    device, model = device_of(cases, protocol_config, **kw)
    return bind_or_raise(device, model, ModbusDriver)
