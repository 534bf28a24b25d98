"""Property values: KubeEdge twin strings <-> typed Python values, and the write check.

This module owns every change of representation of a property value:

* ``parse_value``: twin or desired text -> the Python value of the model type;
* ``coerce``: whatever a driver returned -> the model type's Python type, never lossy;
* ``format_value``: Python value -> the text reported as a twin. Its output always passes
  EdgeCore's checks (value pattern and 512 characters, typed check; contract §3.4 rules 3-4,
  §3.5a point 2), because EdgeCore answers a rejected report on a topic that cannot be matched
  to the message (§3.5a point 1) and one bad twin rejects the whole message (§3.5a point 3);
* ``parse_bounds`` / ``check_desired``: the single validation every write goes through.

It is pure (no I/O, no logging). Every refusal is a ``ValueConversionError`` (or, for writes,
a ``DesiredValueError`` with a ``reason``) whose message says what to change.

============  ===============  ==================  ===========================================
model type    Python type      twin metadata.type  twin text
============  ===============  ==================  ===========================================
INT           int (int64)      int                 decimal, e.g. ``-42``
FLOAT         float (32-bit)   float               shortest text; float32-shortest for float32s
DOUBLE        float            float               shortest text, e.g. ``23.5``, ``1e20``
BOOLEAN       bool             boolean             ``true`` / ``false``
STRING        str              string              the text itself (must fit the pattern)
BYTES         bytes            string              base64url without padding
STREAM        (none)           never a twin        never reported, never written
============  ===============  ==================  ===========================================

Bounds: ``minimum``/``maximum`` bound the value of INT, FLOAT and DOUBLE properties and the
length of STRING (characters) and BYTES (bytes) properties; they are ignored for BOOLEAN,
STREAM and untyped properties. An empty bound text means "no bound".

``DesiredValueError.reason`` codes raised by ``check_desired``: ``read_only``,
``not_writable`` (STREAM or no type), ``bad_type``, ``out_of_range`` and ``bad_bounds`` (the
model's own minimum/maximum do not parse).
"""

from __future__ import annotations

import base64
import math
import re
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from mapper_sdk.errors import DesiredValueError, ValueConversionError
from mapper_sdk.models.device_model import AccessMode, ModelProperty, PropertyType

Value: TypeAlias = int | float | bool | str | bytes
"""What drivers return from reads and accept for writes."""

TWIN_VALUE_PATTERN: re.Pattern[str] = re.compile(r"^[a-zA-Z0-9-_.,:/@#]{1,512}$")
"""EdgeCore's rule for a non-empty twin value (contract §3.4 rule 3). Use ``fullmatch``:
Python's ``$`` also matches before a final newline, Go's does not."""

_MAX_TWIN_CHARS = 512
_TWIN_CHARS = frozenset(string.ascii_letters + string.digits + "-_.,:/@#")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
# Decimal notation only (what Go's ParseFloat and Python's float() both read the same way);
# Python's float() alone would also take "1_0", " 1", "infinity" and non-ASCII digits.
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE_TEXT = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Go's strconv.ParseBool spellings: desired values may come from Go tools that accept them.
_TRUE_TEXTS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE_TEXTS = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_TWIN_TYPES = {
    PropertyType.INT: "int",
    PropertyType.FLOAT: "float",
    PropertyType.DOUBLE: "float",  # EdgeCore refuses "double" as a twin type (§3.4 rule 4)
    PropertyType.BOOLEAN: "boolean",
    PropertyType.STRING: "string",
    PropertyType.BYTES: "string",  # base64url text; EdgeCore refuses "bytes"
}
_SHOW_CHARS = 40
_FLOAT32 = struct.Struct("<f")
_FLOAT32_MIN_NORMAL = 2.0**-126
_FLOAT32_TEXTS: dict[float, str] = {}
"""Memo of ``_float32_text`` (sensors repeat values): non-zero float32s only, since -0.0 and
0.0 are one key; cleared when it reaches ``_FLOAT32_TEXTS_MAX``."""
_FLOAT32_TEXTS_MAX = 16_384
_EMPTY_MESSAGE = "an empty value cannot be reported as a twin (EdgeCore's typed checks refuse it)"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The inclusive limits of a property's desired values; ``None`` means unbounded.

    For STRING and BYTES properties the limits apply to the length.
    """

    minimum: int | float | None = None
    maximum: int | float | None = None


def is_twin_value(text: str) -> bool:
    """Whether EdgeCore accepts ``text`` as a twin value. ``""`` is ``False``: EdgeCore skips
    the pattern for it, but every typed check then fails and it means nothing as a report."""
    return TWIN_VALUE_PATTERN.fullmatch(text) is not None


def twin_type(ptype: PropertyType) -> str:
    """The twin ``metadata.type`` to report for a model type (contract §6.5)."""
    try:
        return _TWIN_TYPES[ptype]
    except KeyError:
        raise ValueConversionError(f"{ptype} properties are never reported as twins") from None


# --- parsing text ------------------------------------------------------------------------


def parse_value(text: str, ptype: PropertyType) -> Value:
    """Read twin or desired ``text`` as a value of ``ptype``.

    INT: decimal int64, optional sign. FLOAT/DOUBLE: decimal notation, finite (FLOAT also
    within float32 range). BOOLEAN: Go ``ParseBool`` spellings. STRING: unchanged. BYTES:
    base64url or standard base64, padded or not. STREAM: refused.
    """
    match ptype:
        case PropertyType.INT:
            return _parse_int(text)
        case PropertyType.FLOAT | PropertyType.DOUBLE:
            return _parse_float(text, ptype)
        case PropertyType.BOOLEAN:
            return _parse_bool(text)
        case PropertyType.STRING:
            return text
        case PropertyType.BYTES:
            return _parse_bytes(text)
    raise ValueConversionError(f"{ptype} values cannot be converted from or to text")


def _parse_int(text: str) -> int:
    if _INT_TEXT.fullmatch(text) is None:
        if _FLOAT_TEXT.fullmatch(text) is not None:
            raise ValueConversionError(
                f"{_show(text)} is not an INT: it is not an integer "
                "(write a whole number such as 42, without a decimal point or exponent)"
            )
        raise ValueConversionError(
            f"{_show(text)} is not an INT (expected a whole number such as 42)"
        )
    try:
        number = int(text)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise ValueConversionError(f"{_show(text)} is too long for an INT") from None
    return _check_int64(number)


def _check_int64(number: int) -> int:
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueConversionError(
            f"{number} is outside the INT range (64-bit: {_INT64_MIN} to {_INT64_MAX})"
        )
    return number


def _parse_float(text: str, ptype: PropertyType) -> float:
    if _NON_FINITE_TEXT.fullmatch(text) is not None:
        raise ValueConversionError(_non_finite_message(text))
    if _FLOAT_TEXT.fullmatch(text) is None:
        raise ValueConversionError(
            f"{_show(text)} is not a {ptype} (expected a decimal number such as 23.5 or 1e-3)"
        )
    number = float(text)
    if math.isinf(number):  # the text was finite, so it overflowed a float64
        raise ValueConversionError(f"{_show(text)} is too large for a {ptype}")
    return _check_float_range(number, ptype)


def _non_finite_message(shown: object) -> str:
    return f"{_show(shown)} is not a finite number; twins and devices cannot carry NaN or infinity"


def _check_float_range(number: float, ptype: PropertyType) -> float:
    # KubeEdge's FLOAT is 32-bit (the framework uses ParseFloat(s, 32)), so a larger value
    # could never be written to the device.
    if ptype is PropertyType.FLOAT and math.isinf(_round_float32(number)):
        raise ValueConversionError(
            f"{_float_text(number)} is outside the range of a FLOAT (32-bit, magnitude at most "
            "about 3.4e38); declare the property DOUBLE for larger values"
        )
    return number


def _round_float32(number: float) -> float:
    """``number`` rounded to the nearest float32 (ties to even); infinite on overflow."""
    try:
        return float(_FLOAT32.unpack(_FLOAT32.pack(number))[0])
    except OverflowError:  # struct refuses what C's rounding would make infinite
        return math.copysign(math.inf, number)


def _parse_bool(text: str) -> bool:
    if text in _TRUE_TEXTS:
        return True
    if text in _FALSE_TEXTS:
        return False
    raise ValueConversionError(f"{_show(text)} is not a BOOLEAN (expected true or false)")


def _parse_bytes(text: str) -> bytes:
    body = text.rstrip("=")
    padding = len(text) - len(body)
    # A base64 text never has a lone final character, and padding only completes a quad.
    if padding > 2 or (padding and len(text) % 4) or len(body) % 4 == 1:
        raise ValueConversionError(_bad_base64_message(text))
    standard = body.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise ValueConversionError(_bad_base64_message(text)) from None


def _bad_base64_message(text: str) -> str:
    return (
        f"{_show(text)} is not BYTES (expected base64url text such as 3q2-7w, "
        "padded or not; standard base64 is accepted too)"
    )


# --- coercing driver values --------------------------------------------------------------


def coerce(value: Value, ptype: PropertyType) -> Value:
    """Convert a driver's raw ``value`` to the Python type of ``ptype`` without losing data.

    Text is parsed as by ``parse_value``; numbers convert when exact (an integral float
    becomes an INT, a fractional one is refused rather than truncated); ``bool`` gives 1/0
    for INT; 0/1 give a BOOLEAN; BYTES <-> STRING goes through UTF-8.
    """
    match ptype:
        case PropertyType.INT:
            return _coerce_int(value)
        case PropertyType.FLOAT | PropertyType.DOUBLE:
            return _coerce_float(value, ptype)
        case PropertyType.BOOLEAN:
            return _coerce_bool(value)
        case PropertyType.STRING:
            return _coerce_str(value)
        case PropertyType.BYTES:
            return _coerce_bytes(value)
    raise ValueConversionError(f"{ptype} values cannot be converted from or to text")


def _coerce_int(value: Value) -> int:
    if isinstance(value, str):
        return _parse_int(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _check_int64(value)
    if isinstance(value, float):
        if not value.is_integer():  # also NaN and infinity
            raise ValueConversionError(
                f"{value!r} is not a whole number, so it cannot be an INT; round it in the "
                "driver or declare the property FLOAT or DOUBLE"
            )
        return _check_int64(int(value))
    raise _wrong_kind(value, PropertyType.INT)


def _coerce_float(value: Value, ptype: PropertyType) -> float:
    if isinstance(value, str):
        return _parse_float(value, ptype)
    if isinstance(value, bytes):
        raise _wrong_kind(value, ptype)
    try:
        number = float(value)  # an int above 2**53 rounds, as any float would hold it
    except OverflowError:
        raise ValueConversionError(f"{value} is too large for a {ptype}") from None
    if not math.isfinite(number):
        raise ValueConversionError(_non_finite_message(number))
    return _check_float_range(number, ptype)


def _coerce_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _parse_bool(value)
    if isinstance(value, int):
        if value in (0, 1):
            return value == 1
        raise ValueConversionError(
            f"{value} is not a BOOLEAN (only the numbers 0 and 1 mean false and true)"
        )
    raise _wrong_kind(value, PropertyType.BOOLEAN)


def _coerce_str(value: Value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueConversionError(
                f"{_show(value)} is not UTF-8 text, so it cannot be a STRING; "
                "declare the property BYTES to report it base64-encoded"
            ) from None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueConversionError(_non_finite_message(value))
    return _float_text(value)


def _coerce_bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise ValueConversionError(f"{_show(value)} cannot be encoded as UTF-8") from None
    raise _wrong_kind(value, PropertyType.BYTES)


def _wrong_kind(value: object, ptype: PropertyType) -> ValueConversionError:
    return ValueConversionError(
        f"a {type(value).__name__} value ({_show(value)}) cannot be converted to {ptype}; "
        "convert it in the driver or change the property's type in the DeviceModel"
    )


# --- formatting twin text ----------------------------------------------------------------


def format_value(value: Value, ptype: PropertyType) -> str:
    """The twin text of ``value`` as a ``ptype``: coerced first, then written so that it
    matches ``TWIN_VALUE_PATTERN`` and ``parse_value`` gives the value back."""
    return to_twin(value, ptype)[1]


def to_twin(value: Value, ptype: PropertyType) -> tuple[Value, str]:
    """``(coerce(value, ptype), format_value(value, ptype))`` with a single conversion."""
    if type(value) is float:  # the hot path of most numeric devices
        if ptype is PropertyType.FLOAT:
            text = _FLOAT32_TEXTS.get(value)  # holds finite float32s only
            if text is not None:
                return value, text
            if math.isfinite(value):
                rounded = _round_float32(value)
                if rounded == value:  # read as a float32
                    return value, _float32_text(value)
                if not math.isinf(rounded):  # within float32 range: kept exactly
                    return value, _float_text(value)
        elif ptype is PropertyType.DOUBLE and math.isfinite(value):
            return value, _float_text(value)
    typed = coerce(value, ptype)
    return typed, _format_typed(typed, ptype)


def _format_typed(typed: Value, ptype: PropertyType) -> str:
    if isinstance(typed, bool):
        return "true" if typed else "false"
    if isinstance(typed, int):
        return str(typed)
    if isinstance(typed, float):
        return _format_float(typed, ptype)
    if isinstance(typed, bytes):
        return _format_bytes(typed)
    return _check_twin_string(typed)


def _format_float(number: float, ptype: PropertyType) -> str:
    # A FLOAT read from a 32-bit register is exactly a float32; its float64 text
    # (0.10000000149011612) is noise, so print the shortest text that reads back as it.
    if ptype is PropertyType.FLOAT and _round_float32(number) == number:
        return _float32_text(number)
    return _float_text(number)


def _float_text(number: float) -> str:
    """Shortest round-trip text of a finite float, without '+' (EdgeCore refuses it)."""
    text = repr(number)
    mantissa, marker, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if marker else text  # '1e+20' -> '1e20'


def _float32_text(number: float) -> str:
    """Shortest text that reads back as the float32 ``number``, whether it is rounded to
    float32 directly (Go's ParseFloat(s, 32)) or through a float64 (our ``parse_value``)."""
    text = _FLOAT32_TEXTS.get(number)
    if text is None:
        text = _shortest_float32_text(number)
        if number:  # not 0.0 / -0.0: equal as keys, different as texts
            if len(_FLOAT32_TEXTS) >= _FLOAT32_TEXTS_MAX:
                _FLOAT32_TEXTS.clear()
            _FLOAT32_TEXTS[number] = text
    return text


def _shortest_float32_text(number: float) -> str:
    # Candidates of 1 to 5 digits need not be tried for a normal float32: one that reads back
    # lies within half a float32 step (< 6e-8 relative) of the number, so the number rounded
    # to 6 digits is that same candidate (the 6-digit grid's half step is >= 5e-7 relative)
    # and is tried first; ties (skipped below) are the same value at 6 digits too.
    first = 6 if abs(number) >= _FLOAT32_MIN_NORMAL else 1  # subnormals: fewer bits
    for digits in range(first, 10):  # 9 significant digits always identify a float32
        candidate = float(f"{number:.{digits}g}")
        # Through a float64 the two roundings agree unless the float64 lands exactly on a
        # float32 tie: then the direct rounding may depend on digits the float64 dropped, so
        # such a candidate is skipped (costing at most a digit).
        if _round_float32(candidate) == number and not _is_float32_tie(candidate):
            return _float_text(candidate)
    return _float_text(number)  # exact, so it reads back as itself either way


def _is_float32_tie(number: float) -> bool:
    """Whether ``number`` lies exactly halfway between two adjacent float32 values."""
    exponent = math.frexp(number)[1]  # 2**(exponent - 1) <= abs(number) < 2**exponent
    # Ties are odd multiples of 2**(exponent - 25) in the float32 normal range (24-bit
    # significands) and of 2**-150 below it (subnormals); scaling by a power of 2 is exact.
    scale = 25 - exponent if exponent >= -125 else 150
    scaled = math.ldexp(number, scale)
    return scaled.is_integer() and int(scaled) % 2 == 1


def _format_bytes(data: bytes) -> str:
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    if len(text) > _MAX_TWIN_CHARS:
        raise ValueConversionError(
            f"{len(data)} bytes encode to {len(text)} base64 characters, but EdgeCore accepts "
            f"at most {_MAX_TWIN_CHARS} (at most 384 bytes)"
        )
    if not text:
        raise ValueConversionError(_EMPTY_MESSAGE)
    return text


def _check_twin_string(text: str) -> str:
    if not text:
        raise ValueConversionError(_EMPTY_MESSAGE)
    problems = []
    refused = sorted(set(text) - _TWIN_CHARS)
    if refused:
        shown = " ".join(repr(char) for char in refused[:10])
        problems.append(
            f"EdgeCore accepts only letters, digits and - _ . , : / @ # in a twin value, "
            f"so it refuses {shown} (spaces, '=', ';', quotes, '+' and braces are common "
            "culprits); declare the property BYTES to report arbitrary data base64-encoded"
        )
    if len(text) > _MAX_TWIN_CHARS:
        problems.append(
            f"it is {len(text)} characters long, but EdgeCore accepts at most {_MAX_TWIN_CHARS}"
        )
    if problems:
        raise ValueConversionError(f"{_show(text)} cannot be a twin value: " + "; ".join(problems))
    return text


def _show(value: object) -> str:
    """``repr`` of a value, shortened so a huge value cannot flood a message."""
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else f"{text[: _SHOW_CHARS - 3]}..."


# --- bounds and the write check ----------------------------------------------------------


def parse_bounds(prop: ModelProperty) -> Bounds:
    """The ``minimum``/``maximum`` of ``prop`` as numbers (see the module docstring).

    Raises ``ValueConversionError`` naming the field when a bound does not parse, or when
    minimum is greater than maximum.
    """
    parse = _bound_parser(prop.type)
    if parse is None:
        return Bounds()
    minimum = _parse_bound(prop, "minimum", prop.minimum, parse)
    maximum = _parse_bound(prop, "maximum", prop.maximum, parse)
    if minimum is not None and maximum is not None and minimum > maximum:
        raise ValueConversionError(
            f"property {prop.name!r}: minimum {minimum} is greater than maximum {maximum}"
        )
    return Bounds(minimum, maximum)


def _bound_parser(ptype: PropertyType | None) -> Callable[[str], int | float] | None:
    match ptype:
        case PropertyType.INT:
            return _parse_int
        case PropertyType.FLOAT | PropertyType.DOUBLE:
            return lambda text: _parse_float(text, ptype)
        case PropertyType.STRING | PropertyType.BYTES:
            return _parse_length
    return None


def _parse_length(text: str) -> int:
    if _INT_TEXT.fullmatch(text) is None or int(text) < 0:
        raise ValueConversionError(
            f"{_show(text)} is not a length (expected a whole number of at least 0)"
        )
    return int(text)


def _parse_bound(
    prop: ModelProperty, field: str, text: str | None, parse: Callable[[str], int | float]
) -> int | float | None:
    if not text:  # generated CRDs often carry "" for an unset bound
        return None
    try:
        return parse(text)
    except ValueConversionError as exc:
        raise ValueConversionError(f"property {prop.name!r}: {field}: {exc}") from None


def check_desired(text: str, prop: ModelProperty, bounds: Bounds | None = None) -> Value:
    """Validate a desired value for ``prop`` and return it typed; every write goes here.

    ``access_mode`` ``None`` counts as ReadWrite, as in KubeEdge's framework, which writes
    every property that is not ReadOnly. ``bounds`` defaults to ``parse_bounds(prop)``; pass
    them in to avoid parsing the model on every write. An empty STRING or BYTES desired value
    is returned as is; a minimum length of 1 refuses it. Raises ``DesiredValueError``.
    """
    ptype = _writable_type(prop)
    try:
        value = parse_value(text, ptype)
    except ValueConversionError as exc:
        raise DesiredValueError(f"property {prop.name!r}: {exc}", reason="bad_type") from exc
    limits = bounds if bounds is not None else _bounds_for_write(prop)
    _check_range(value, prop, limits)
    return value


def _writable_type(prop: ModelProperty) -> PropertyType:
    if prop.access_mode is AccessMode.READ_ONLY:
        raise DesiredValueError(
            f"property {prop.name!r} is ReadOnly in its DeviceModel", reason="read_only"
        )
    if prop.type is None or prop.type is PropertyType.STREAM:
        what = "has no type" if prop.type is None else "is a STREAM"
        raise DesiredValueError(
            f"property {prop.name!r} {what}, so a desired value cannot be written to it",
            reason="not_writable",
        )
    return prop.type


def _bounds_for_write(prop: ModelProperty) -> Bounds:
    try:
        return parse_bounds(prop)
    except ValueConversionError as exc:
        raise DesiredValueError(str(exc), reason="bad_bounds") from exc


def _check_range(value: Value, prop: ModelProperty, bounds: Bounds) -> None:
    if isinstance(value, bool):  # a bool is an int to Python, but has no order worth bounding
        return
    measure: int | float
    if isinstance(value, str | bytes):
        measure, what, limit = len(value), f"{_show(value)} (length {len(value)})", "length "
    else:
        measure, what, limit = value, repr(value), ""
    if bounds.minimum is not None and measure < bounds.minimum:
        side = f"below the minimum {limit}{bounds.minimum}"
    elif bounds.maximum is not None and measure > bounds.maximum:
        side = f"above the maximum {limit}{bounds.maximum}"
    else:
        return
    raise DesiredValueError(
        f"property {prop.name!r}: desired value {what} is {side}", reason="out_of_range"
    )
