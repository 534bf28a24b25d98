"""configData on the DMI wire: ``map<string, google.protobuf.Any>`` <-> a flat dict of scalars.

Contract §1.5. EdgeCore turns each free-form configData object into
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

Encoding does what EdgeCore does: numbers become ``FloatValue``, and a nested object, array or
``null`` raises ``DmiConversionError`` naming the key, because EdgeCore would never deliver such
a device.

``DmiConversionError`` lives here, the first thing every conversion may raise. Pure: no I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.errors import ConfigError, Problem

Scalar = str | bool | int | float
"""What a configData value can be on the DMI wire."""


class DmiConversionError(ConfigError):
    """A DMI message (or a model to be sent as one) cannot be converted; ``problems`` say where."""


def fail(path: str, message: str) -> DmiConversionError:
    """A ``DmiConversionError`` with one problem at ``path``."""
    return DmiConversionError([Problem(message, path=path)])


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
        raise fail(
            path,
            f"unsupported value type {value.type_url!r}: EdgeCore sends only "
            "StringValue, FloatValue, BoolValue, Int32Value and Int64Value",
        )
    wrapper = wrapper_cls()
    if not value.Unpack(wrapper):
        raise fail(path, f"cannot decode a {type_name} from its bytes")
    decoded: Scalar = getattr(wrapper, "value")  # noqa: B009 - every wrapper type has .value
    if wrapper_cls is wrappers_pb2.FloatValue:
        return _from_float32(float(decoded))
    if wrapper_cls is wrappers_pb2.DoubleValue:
        return _integral(float(decoded))
    return decoded


def decode_config(data: Mapping[str, any_pb2.Any], path: str) -> dict[str, Scalar]:
    """A configData map from the wire as a flat dict of Python scalars (sorted by key)."""
    return {key: _decode_any(data[key], f"{path}.{key}") for key in sorted(data)}


def encode_scalar(value: object, path: str) -> any_pb2.Any:
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
        raise fail(
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
        target.data[key].CopyFrom(encode_scalar(value, f"{path}.{key}"))
