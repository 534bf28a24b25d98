"""OPC-UA values <-> the Python values of the SDK, in both directions.

Reads: a ``DataValue`` becomes an ``int``, ``float``, ``bool``, ``str`` or ``bytes`` (the SDK
formats twin text), or a ``DriverError`` saying why it cannot be a twin value. Arrays become
comma-separated text (the twin charset allows ``,``), so they fit a STRING property.

Writes: a value of the model type becomes a ``Variant`` of the node's real built-in type
(``WireType``): an INT written to an Int16 node is range-checked and sent as Int16, a STRING
written to an array node is split at commas and each element converted.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from mapper_sdk.driver import Value
from mapper_sdk.errors import DeviceProtocolError, DriverError
from mapper_sdk.models import PropertyType

__all__ = [
    "MODEL_TYPES",
    "WireType",
    "WriteRefused",
    "from_data_value",
    "from_variant_value",
    "is_good",
    "to_variant",
]

_INT_RANGES = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_TEXT_TYPES = (ua.VariantType.String, ua.VariantType.LocalizedText)

MODEL_TYPES: dict[ua.VariantType, PropertyType] = {
    ua.VariantType.Boolean: PropertyType.BOOLEAN,
    **dict.fromkeys(_INT_RANGES, PropertyType.INT),
    ua.VariantType.Float: PropertyType.FLOAT,
    ua.VariantType.Double: PropertyType.DOUBLE,
    ua.VariantType.ByteString: PropertyType.BYTES,
    **dict.fromkeys(
        (
            ua.VariantType.String,
            ua.VariantType.LocalizedText,
            ua.VariantType.DateTime,
            ua.VariantType.Guid,
            ua.VariantType.QualifiedName,
            ua.VariantType.StatusCode,
        ),
        PropertyType.STRING,
    ),
}
"""The DeviceModel type of each built-in type a twin can carry (browse uses it)."""


class WriteRefused(DriverError):
    """A value that does not fit the node's type; ``reason`` as in ``DesiredValueError``."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WireType:
    """What a node holds: its built-in type and whether it is an array."""

    variant: ua.VariantType
    array: bool = False

    def __str__(self) -> str:
        return f"{self.variant.name}[]" if self.array else self.variant.name


# -- reads ---------------------------------------------------------------------------------


def is_good(dv: ua.DataValue) -> bool:
    """A missing status code is Good (it is not encoded then)."""
    return dv.StatusCode is None or dv.StatusCode.is_good()


def from_data_value(dv: ua.DataValue) -> Value | DriverError:
    """The Python value of a read result, or the reason there is none."""
    status = dv.StatusCode
    if status is not None and status.is_bad():
        return DeviceProtocolError(f"the server answered {status.name}")
    if dv.Value is None or dv.Value.Value is None:
        return DriverError("the node has no value (null)")
    return from_variant_value(dv.Value.Value)


def from_variant_value(value: Any) -> Value | DriverError:
    """The Python value of a Variant's content (as asyncua decodes it)."""
    if isinstance(value, list):
        return _join_array(value)
    scalar = _scalar(value)
    if scalar is None:
        kind = type(value).__name__
        return DriverError(
            f"a {kind} value cannot be a twin value (structures and ExtensionObjects are not "
            "supported; map one of its fields to its own variable)"
        )
    return scalar


def _scalar(value: Any) -> Value | None:
    match value:
        case None:
            return None
        case bool() | str() | bytes():
            return value
        case enum.Enum():  # enumerations travel as Int32
            return int(value.value) if isinstance(value.value, int) else value.name
        case int() | float():
            return value
        case datetime():
            return _iso(value)
        case uuid.UUID():
            return str(value)
        case ua.LocalizedText():
            return value.Text or ""
        case ua.QualifiedName():
            return value.to_string()
        case ua.StatusCode():
            return value.name
        case ua.NodeId():
            return value.to_string()
    return None


def _iso(value: datetime) -> str:
    # Twin text allows no '+' or space: UTC with a 'Z' suffix fits the charset.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _join_array(items: list[Any]) -> Value | DriverError:
    parts = []
    for item in items:
        scalar = _scalar(item)
        if scalar is None or isinstance(scalar, bytes | list):
            return DriverError(
                f"an array of {type(item).__name__} cannot be a twin value; "
                "only arrays of numbers, booleans and text are reported (comma-separated)"
            )
        parts.append(_element_text(scalar))
    return ",".join(parts)


def _element_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


# -- writes --------------------------------------------------------------------------------


def to_variant(value: Value, wire: WireType) -> ua.Variant:
    """``value`` as a Variant of ``wire``'s type; ``WriteRefused`` when it does not fit."""
    if wire.array:
        if not isinstance(value, str):
            raise WriteRefused(
                f"{wire} takes comma-separated text, not {value!r}", reason="bad_type"
            )
        items = [] if value == "" else value.split(",")
        return ua.Variant([_convert(item.strip(), wire.variant) for item in items], wire.variant)
    return ua.Variant(_convert(value, wire.variant), wire.variant)


def _convert(value: Value, vt: ua.VariantType) -> Any:
    if vt in _INT_RANGES:
        return _to_int(value, vt)
    if vt is ua.VariantType.Boolean:
        return _to_bool(value)
    if vt in (ua.VariantType.Float, ua.VariantType.Double):
        return _to_float(value, vt)
    if vt in _TEXT_TYPES:
        text = value if isinstance(value, str) else _element_text(value)
        return ua.LocalizedText(text) if vt is ua.VariantType.LocalizedText else text
    if vt is ua.VariantType.ByteString:
        return _to_bytes(value)
    if vt is ua.VariantType.DateTime and isinstance(value, str):
        return _to_datetime(value)
    if vt is ua.VariantType.Guid and isinstance(value, str):
        return _parse(uuid.UUID, value, vt)
    raise WriteRefused(
        f"writing {vt.name} nodes from {value!r} is not supported", reason="bad_type"
    )


def _to_int(value: Value, vt: ua.VariantType) -> int:
    if isinstance(value, str):
        value = _parse(int, value, vt)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WriteRefused(f"{value!r} is not a whole number for {vt.name}", reason="bad_type")
    low, high = _INT_RANGES[vt]
    if not low <= value <= high:
        raise WriteRefused(f"{value} is outside {vt.name} ({low}..{high})", reason="out_of_range")
    return value


def _to_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise WriteRefused(f"{value!r} is not a Boolean", reason="bad_type")


def _to_float(value: Value, vt: ua.VariantType) -> float:
    if isinstance(value, str):
        value = _parse(float, value, vt)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WriteRefused(f"{value!r} is not a number for {vt.name}", reason="bad_type")
    number = float(value)
    if vt is ua.VariantType.Float and math.isfinite(number) and abs(number) > 3.4028234663852886e38:
        raise WriteRefused(f"{number} is outside the Float range", reason="out_of_range")
    return number


def _to_bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # a STRING property; BYTES properties arrive decoded
        return value.encode()
    raise WriteRefused(f"{value!r} is not a ByteString", reason="bad_type")


def _to_datetime(text: str) -> datetime:
    parsed: datetime = _parse(datetime.fromisoformat, text, ua.VariantType.DateTime)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse(parser: Any, text: str, vt: ua.VariantType) -> Any:
    try:
        return parser(text)
    except ValueError:
        raise WriteRefused(f"{text!r} is not a {vt.name}", reason="bad_type") from None
