"""Tests of mapper_sdk.values: twin text <-> typed values, and the write check."""

from __future__ import annotations

import base64
import math
import random
import re
import string
import struct
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapper_sdk import values
from mapper_sdk.errors import DesiredValueError, MapperError, ValueConversionError
from mapper_sdk.models.device_model import AccessMode, ModelProperty, PropertyType
from mapper_sdk.values import (
    TWIN_VALUE_PATTERN,
    Bounds,
    Value,
    check_desired,
    coerce,
    format_value,
    is_twin_value,
    parse_bounds,
    parse_value,
    twin_type,
)

INT = PropertyType.INT
FLOAT = PropertyType.FLOAT
DOUBLE = PropertyType.DOUBLE
BOOLEAN = PropertyType.BOOLEAN
STRING = PropertyType.STRING
BYTES = PropertyType.BYTES
STREAM = PropertyType.STREAM

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FLT_MAX = 3.4028234663852886e38
TWIN_ALPHABET = string.ascii_letters + string.digits + "-_.,:/@#"


def f32(number: float) -> float:
    """``number`` rounded to float32, as a register read would give it."""
    return float(struct.unpack("<f", struct.pack("<f", number))[0])


def prop(ptype: PropertyType | None = INT, **fields: Any) -> ModelProperty:
    return ModelProperty(name="p", type=ptype, **fields)


def same(left: Value, right: Value) -> bool:
    """Equal, of the same type, and (for floats) with the same sign of zero."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and isinstance(right, float):
        return left == right and math.copysign(1, left) == math.copysign(1, right)
    return left == right


# --- the pattern and twin types ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", True),
        (TWIN_ALPHABET, True),
        ("x" * 512, True),  # exactly 512 is accepted (contract §3.5a point 2)
        ("x" * 513, False),
        ("", False),  # EdgeCore skips the pattern for "", but a typed check then fails
        ("a b", False),
        ("a=b", False),
        ("a;b", False),
        ('"a"', False),
        ("'a'", False),
        ("a+b", False),
        ("{}", False),
        ("abc\n", False),  # Python's $ matches before a final newline; Go's does not
        ("\nabc", False),
        ("é", False),
        ("٣", False),
    ],
)
def test_is_twin_value(text: str, expected: bool) -> None:
    assert is_twin_value(text) is expected


def test_pattern_is_edgecores_rule() -> None:
    assert TWIN_VALUE_PATTERN.pattern == r"^[a-zA-Z0-9-_.,:/@#]{1,512}$"


@pytest.mark.parametrize(
    ("ptype", "expected"),
    [
        (INT, "int"),
        (FLOAT, "float"),
        (DOUBLE, "float"),
        (BOOLEAN, "boolean"),
        (STRING, "string"),
        (BYTES, "string"),
    ],
)
def test_twin_type(ptype: PropertyType, expected: str) -> None:
    assert twin_type(ptype) == expected


def test_twin_type_of_stream_is_refused() -> None:
    with pytest.raises(ValueConversionError, match="never reported"):
        twin_type(STREAM)


# --- parse_value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ptype", "expected"),
    [
        ("42", INT, 42),
        ("-42", INT, -42),
        ("+7", INT, 7),
        ("007", INT, 7),
        ("0", INT, 0),
        (str(INT64_MAX), INT, INT64_MAX),
        (str(INT64_MIN), INT, INT64_MIN),
        ("23.5", DOUBLE, 23.5),
        ("23.5", FLOAT, 23.5),
        ("-0.5", DOUBLE, -0.5),
        ("+1.5", DOUBLE, 1.5),
        ("1e20", DOUBLE, 1e20),
        ("1E-3", DOUBLE, 0.001),
        ("1e+3", DOUBLE, 1000.0),
        (".5", DOUBLE, 0.5),
        ("5.", DOUBLE, 5.0),
        ("3", DOUBLE, 3.0),
        ("-0.0", DOUBLE, -0.0),
        ("1e-400", DOUBLE, 0.0),  # underflow is not an error, as in Go
        ("3.4028235e38", FLOAT, 3.4028235e38),
        ("3.5e38", DOUBLE, 3.5e38),
        ("1", BOOLEAN, True),
        ("t", BOOLEAN, True),
        ("T", BOOLEAN, True),
        ("TRUE", BOOLEAN, True),
        ("true", BOOLEAN, True),
        ("True", BOOLEAN, True),
        ("0", BOOLEAN, False),
        ("f", BOOLEAN, False),
        ("F", BOOLEAN, False),
        ("FALSE", BOOLEAN, False),
        ("false", BOOLEAN, False),
        ("False", BOOLEAN, False),
        ("on", STRING, "on"),
        ("", STRING, ""),
        ("a b = c; {}", STRING, "a b = c; {}"),
        ("3q2-7w", BYTES, b"\xde\xad\xbe\xef"),
        ("3q2-7w==", BYTES, b"\xde\xad\xbe\xef"),
        ("3q2+7w==", BYTES, b"\xde\xad\xbe\xef"),
        ("3q2+7w", BYTES, b"\xde\xad\xbe\xef"),
        ("__4", BYTES, b"\xff\xfe"),
        ("//4=", BYTES, b"\xff\xfe"),
        ("AA", BYTES, b"\x00"),
        ("AAAA", BYTES, b"\x00\x00\x00"),
        ("", BYTES, b""),
    ],
)
def test_parse_value(text: str, ptype: PropertyType, expected: Value) -> None:
    assert same(parse_value(text, ptype), expected)


@pytest.mark.parametrize(
    ("text", "ptype", "message"),
    [
        ("12.0", INT, "not an integer"),
        ("1e3", INT, "not an integer"),
        ("abc", INT, r"'abc' is not an INT \(expected a whole number such as 42\)"),
        ("", INT, "is not an INT"),
        (" 1", INT, "is not an INT"),
        ("1 ", INT, "is not an INT"),
        ("1_000", INT, "is not an INT"),
        ("٣", INT, "is not an INT"),
        ("0x10", INT, "is not an INT"),
        ("true", INT, "is not an INT"),
        (str(INT64_MAX + 1), INT, "outside the INT range"),
        (str(INT64_MIN - 1), INT, "outside the INT range"),
        ("5" * 5000, INT, "too long for an INT"),
        ("nan", DOUBLE, "not a finite number"),
        ("NaN", FLOAT, "not a finite number"),
        ("inf", DOUBLE, "not a finite number"),
        ("-Infinity", DOUBLE, "not a finite number"),
        ("abc", DOUBLE, r"'abc' is not a DOUBLE \(expected a decimal number"),
        ("abc", FLOAT, "is not a FLOAT"),
        ("", DOUBLE, "is not a DOUBLE"),
        (" 1.5", DOUBLE, "is not a DOUBLE"),
        ("1_0.5", DOUBLE, "is not a DOUBLE"),
        ("1,5", DOUBLE, "is not a DOUBLE"),
        ("0x1p-2", DOUBLE, "is not a DOUBLE"),
        ("1e400", DOUBLE, "too large for a DOUBLE"),
        ("3.5e38", FLOAT, "outside the range of a FLOAT.*DOUBLE"),
        ("yes", BOOLEAN, r"'yes' is not a BOOLEAN \(expected true or false\)"),
        ("tRUE", BOOLEAN, "is not a BOOLEAN"),
        ("true ", BOOLEAN, "is not a BOOLEAN"),
        ("2", BOOLEAN, "is not a BOOLEAN"),
        ("", BOOLEAN, "is not a BOOLEAN"),
        ("A", BYTES, "is not BYTES"),
        ("AA=", BYTES, "is not BYTES"),
        ("AA===", BYTES, "is not BYTES"),
        ("A A", BYTES, "is not BYTES"),
        ("QQ==QQ", BYTES, "is not BYTES"),
        ("ab.c", BYTES, "is not BYTES"),
        ("éé", BYTES, "is not BYTES"),
        ("x", STREAM, "STREAM values cannot be converted"),
    ],
)
def test_parse_value_refuses(text: str, ptype: PropertyType, message: str) -> None:
    with pytest.raises(ValueConversionError, match=message):
        parse_value(text, ptype)


def test_parse_error_shortens_huge_text() -> None:
    with pytest.raises(ValueConversionError) as info:
        parse_value("x" * 10_000, INT)
    assert len(str(info.value)) < 200


# --- coerce ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ptype", "expected"),
    [
        (True, INT, 1),
        (False, INT, 0),
        (5, INT, 5),
        (5.0, INT, 5),
        (-0.0, INT, 0),
        (-(2.0**63), INT, INT64_MIN),
        (INT64_MAX, INT, INT64_MAX),
        ("12", INT, 12),
        (3, DOUBLE, 3.0),
        (3, FLOAT, 3.0),
        (True, DOUBLE, 1.0),
        (2.5, DOUBLE, 2.5),
        (2.5, FLOAT, 2.5),
        ("2.5", DOUBLE, 2.5),
        (FLT_MAX, FLOAT, FLT_MAX),
        (True, BOOLEAN, True),
        (False, BOOLEAN, False),
        (1, BOOLEAN, True),
        (0, BOOLEAN, False),
        ("t", BOOLEAN, True),
        ("x", STRING, "x"),
        (b"abc", STRING, "abc"),
        ("é".encode(), STRING, "é"),
        (5, STRING, "5"),
        (True, STRING, "true"),
        (2.5, STRING, "2.5"),
        (1e20, STRING, "1e20"),
        (b"\x00\xff", BYTES, b"\x00\xff"),
        ("hé", BYTES, "hé".encode()),
        ("", BYTES, b""),
    ],
)
def test_coerce(value: Value, ptype: PropertyType, expected: Value) -> None:
    assert same(coerce(value, ptype), expected)


@pytest.mark.parametrize(
    ("value", "ptype", "message"),
    [
        (5.5, INT, "not a whole number"),  # never silently truncated
        (math.nan, INT, "not a whole number"),
        (math.inf, INT, "not a whole number"),
        (2**63, INT, "outside the INT range"),
        (-(2**63) - 1, INT, "outside the INT range"),
        (9.3e18, INT, "outside the INT range"),
        ("1.0", INT, "not an integer"),
        (b"1", INT, "a bytes value .* cannot be converted to INT"),
        (math.nan, DOUBLE, "not a finite number"),
        (math.inf, FLOAT, "not a finite number"),
        (-math.inf, DOUBLE, "not a finite number"),
        (10**400, DOUBLE, "too large for a DOUBLE"),
        (1e39, FLOAT, "outside the range of a FLOAT"),
        (2**200, FLOAT, "outside the range of a FLOAT"),
        ("1e39", FLOAT, "outside the range of a FLOAT"),
        (b"x", FLOAT, "cannot be converted to FLOAT"),
        (2, BOOLEAN, "only the numbers 0 and 1"),
        (-1, BOOLEAN, "only the numbers 0 and 1"),
        (1.0, BOOLEAN, "a float value .* cannot be converted to BOOLEAN"),
        (b"\x01", BOOLEAN, "cannot be converted to BOOLEAN"),
        ("yes", BOOLEAN, "is not a BOOLEAN"),
        (b"\xff", STRING, "not UTF-8 text.*BYTES"),
        (math.nan, STRING, "not a finite number"),
        ("\ud800", BYTES, "cannot be encoded as UTF-8"),
        (5, BYTES, "an? int value .* cannot be converted to BYTES"),
        (1.5, BYTES, "cannot be converted to BYTES"),
        (True, BYTES, "cannot be converted to BYTES"),
        (1, STREAM, "STREAM values cannot be converted"),
    ],
)
def test_coerce_refuses(value: Value, ptype: PropertyType, message: str) -> None:
    with pytest.raises(ValueConversionError, match=message):
        coerce(value, ptype)


# --- format_value ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ptype", "expected"),
    [
        (42, INT, "42"),
        (-42, INT, "-42"),
        (INT64_MIN, INT, "-9223372036854775808"),
        (True, INT, "1"),
        (5.0, INT, "5"),
        ("+7", INT, "7"),
        (True, BOOLEAN, "true"),
        (False, BOOLEAN, "false"),
        (1, BOOLEAN, "true"),
        ("T", BOOLEAN, "true"),
        (23.5, DOUBLE, "23.5"),
        (3, DOUBLE, "3.0"),
        (0.1 + 0.2, DOUBLE, "0.30000000000000004"),
        (1e20, DOUBLE, "1e20"),  # Python's repr is '1e+20'; EdgeCore refuses '+'
        (1.5e300, DOUBLE, "1.5e300"),
        (1e-5, DOUBLE, "1e-5"),
        (5e-324, DOUBLE, "5e-324"),
        (-0.0, DOUBLE, "-0.0"),
        (f32(0.1), FLOAT, "0.1"),  # a float32 register read prints as written
        (f32(0.1), DOUBLE, "0.10000000149011612"),  # a DOUBLE keeps every bit
        (0.1, FLOAT, "0.1"),
        (f32(23.7), FLOAT, "23.7"),
        (f32(1e20), FLOAT, "1e20"),
        (f32(1e-5), FLOAT, "1e-5"),
        (16777216.0, FLOAT, "16777216.0"),
        (FLT_MAX, FLOAT, "3.4028235e38"),
        (f32(1e-45), FLOAT, "1e-45"),  # smallest float32 subnormal
        (0.123456789012345, FLOAT, "0.123456789012345"),  # not a float32: kept exactly
        ("on", STRING, "on"),
        (b"on", STRING, "on"),
        (TWIN_ALPHABET, STRING, TWIN_ALPHABET),
        ("x" * 512, STRING, "x" * 512),
        (5, STRING, "5"),
        (b"\xde\xad\xbe\xef", BYTES, "3q2-7w"),
        (b"\xff\xfe", BYTES, "__4"),
        ("hi", BYTES, "aGk"),
        (b"\x00", BYTES, "AA"),
        (b"\xff" * 384, BYTES, "_" * 512),
    ],
)
def test_format_value(value: Value, ptype: PropertyType, expected: str) -> None:
    text = format_value(value, ptype)
    assert text == expected
    assert is_twin_value(text)
    parsed, typed = parse_value(text, ptype), coerce(value, ptype)
    if ptype is FLOAT:  # a FLOAT text gives back the float32 it was written for
        assert isinstance(parsed, float)
        assert isinstance(typed, float)
        assert f32(parsed) == f32(typed)
    else:
        assert same(parsed, typed)


@pytest.mark.parametrize(
    ("value", "ptype", "message"),
    [
        ("", STRING, "empty value"),
        (b"", BYTES, "empty value"),
        (b"", STRING, "empty value"),
        ("a b", STRING, "refuses ' '"),
        ("x=1;y", STRING, "refuses ';' '='"),
        ('{"a":1}', STRING, "refuses '\"' '{' '}'"),
        ("a+b", STRING, "refuses '\\+'"),
        ("née", STRING, "refuses 'é'"),
        ("ok\n", STRING, "refuses '\\\\n'"),
        ("x" * 513, STRING, "513 characters long.*at most 512"),
        ("a b" * 200, STRING, "refuses ' '.*600 characters long"),
        (b"\x00" * 385, BYTES, "385 bytes encode to 514 base64 characters.*at most 512"),
        (math.nan, DOUBLE, "not a finite number"),
        (math.inf, FLOAT, "not a finite number"),
        (1e39, FLOAT, "outside the range of a FLOAT"),
        (5.5, INT, "not a whole number"),
        (2, BOOLEAN, "only the numbers 0 and 1"),
        (b"\xff", STRING, "not UTF-8"),
        (1, STREAM, "STREAM values cannot be converted"),
    ],
)
def test_format_value_refuses(value: Value, ptype: PropertyType, message: str) -> None:
    with pytest.raises(ValueConversionError, match=message):
        format_value(value, ptype)


def test_format_string_message_names_edgecore_rule() -> None:
    with pytest.raises(ValueConversionError) as info:
        format_value("ns=2;s=Temp", STRING)
    message = str(info.value)
    assert "EdgeCore accepts only letters, digits and - _ . , : / @ #" in message
    assert "BYTES" in message  # the way out


# --- float32 texts are right for Go's ParseFloat(s, 32) too ------------------------------


def _f32_bits(number: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", number))[0])


def _f32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def rounds_exactly_to_float32(text: str, number: float) -> bool:
    """Whether the exact decimal ``text`` is strictly nearer to the float32 ``number`` than to
    either neighbour, so any correct rounding (Go's, or ours) gives ``number`` back."""
    exact = Fraction(text)
    if math.copysign(1, number) < 0:
        exact, number = -exact, -number
    if number == 0:
        return exact == 0
    bits = _f32_bits(number)
    # Above FLT_MAX Go rounds as if the next value were 2**128 (then reports overflow).
    above = Fraction(2**128) if bits + 1 == 0x7F800000 else Fraction(_f32_from_bits(bits + 1))
    below = Fraction(_f32_from_bits(bits - 1))
    distance = abs(exact - Fraction(number))
    return distance < abs(exact - above) and distance < abs(exact - below)


def significant_digits(text: str) -> int:
    mantissa = text.lstrip("-").partition("e")[0].replace(".", "")
    return max(len(mantissa.strip("0")), 1)


@pytest.mark.parametrize(
    "number",
    [
        f32(0.1),
        f32(0.3),
        FLT_MAX,
        -FLT_MAX,
        f32(1e-45),
        f32(1.17549435e-38),  # smallest normal
        f32(3.4e38),
        16777217.0 - 1,
        f32(2.0**-126 * 1.5),
        f32(9.999999e-39),
        # The 7- and 8-digit candidates of these are exact float32 ties; Go's direct rounding
        # and ours through a float64 could disagree on such a text, so it must be avoided.
        52182248.0,
        128311984.0,
    ],
)
def test_float32_text_is_exact_for_go(number: float) -> None:
    text = format_value(number, FLOAT)
    assert rounds_exactly_to_float32(text, number)
    assert significant_digits(text) <= 9


# --- properties --------------------------------------------------------------------------

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_int_round_trip(number: int) -> None:
    text = format_value(number, INT)
    assert is_twin_value(text)
    assert same(parse_value(text, INT), number)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_round_trip(number: float) -> None:
    text = format_value(number, DOUBLE)
    assert is_twin_value(text)
    assert "+" not in text
    assert same(parse_value(text, DOUBLE), number)


@given(float32s)
def test_float32_round_trip(number: float) -> None:
    text = format_value(number, FLOAT)
    assert is_twin_value(text)
    assert f32(float(parse_value(text, FLOAT))) == number
    assert rounds_exactly_to_float32(text, number)
    assert significant_digits(text) <= 9
    assert len(text) <= len(format_value(number, DOUBLE))


@given(st.floats(min_value=-FLT_MAX, max_value=FLT_MAX))
def test_float_property_keeps_non_float32_values_exactly(number: float) -> None:
    parsed = parse_value(format_value(number, FLOAT), FLOAT)
    assert isinstance(parsed, float)
    if f32(number) == number:
        assert f32(parsed) == number
    else:
        assert parsed == number


@given(st.booleans())
def test_bool_round_trip(flag: bool) -> None:
    text = format_value(flag, BOOLEAN)
    assert text in ("true", "false")  # the only spellings EdgeCore's boolean check takes
    assert same(parse_value(text, BOOLEAN), flag)


@given(st.text(alphabet=TWIN_ALPHABET, min_size=1, max_size=512))
def test_string_round_trip(text: str) -> None:
    assert format_value(text, STRING) == text
    assert parse_value(format_value(text, STRING), STRING) == text


@given(st.binary(min_size=1, max_size=300))
def test_bytes_round_trip(data: bytes) -> None:
    text = format_value(data, BYTES)
    assert is_twin_value(text)
    assert "=" not in text
    assert same(parse_value(text, BYTES), data)


@given(st.binary(max_size=300))
def test_bytes_parse_accepts_standard_padded_base64(data: bytes) -> None:
    assert parse_value(base64.b64encode(data).decode(), BYTES) == data
    assert parse_value(base64.urlsafe_b64encode(data).decode(), BYTES) == data


@given(st.text(max_size=600), st.sampled_from([INT, FLOAT, DOUBLE, BOOLEAN, STRING, BYTES]))
def test_any_text_is_formatted_for_edgecore_or_refused(text: str, ptype: PropertyType) -> None:
    try:
        formatted = format_value(text, ptype)
    except ValueConversionError:
        return
    assert is_twin_value(formatted)
    assert re.fullmatch(r"[^+ ]+", formatted)


@given(st.text(max_size=100), st.sampled_from(list(PropertyType)))
def test_parse_only_raises_value_conversion_error(text: str, ptype: PropertyType) -> None:
    result: Value | ValueConversionError
    try:
        result = parse_value(text, ptype)
    except ValueConversionError as exc:
        result = exc
    assert isinstance(result, int | float | bool | str | bytes | ValueConversionError)
    if isinstance(result, ValueConversionError):
        assert str(result)


# --- parse_bounds ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ptype", "minimum", "maximum", "expected"),
    [
        (INT, "0", "100", Bounds(0, 100)),
        (INT, "-5", "-5", Bounds(-5, -5)),
        (INT, None, "10", Bounds(None, 10)),
        (INT, "", "", Bounds(None, None)),
        (INT, None, None, Bounds(None, None)),
        (DOUBLE, "-1.5", "2.5e3", Bounds(-1.5, 2500.0)),
        (FLOAT, "0", "1", Bounds(0.0, 1.0)),
        (STRING, "1", "10", Bounds(1, 10)),  # lengths
        (BYTES, None, "4", Bounds(None, 4)),
        (BOOLEAN, "0", "1", Bounds(None, None)),  # no order to bound
        (BOOLEAN, "garbage", None, Bounds(None, None)),
        (STREAM, "0", "1", Bounds(None, None)),
        (None, "0", "1", Bounds(None, None)),
    ],
)
def test_parse_bounds(
    ptype: PropertyType | None, minimum: str | None, maximum: str | None, expected: Bounds
) -> None:
    bounds = parse_bounds(prop(ptype, minimum=minimum, maximum=maximum))
    assert bounds == expected
    for got, want in ((bounds.minimum, expected.minimum), (bounds.maximum, expected.maximum)):
        assert type(got) is type(want)


def test_parse_bounds_takes_yaml_numbers() -> None:
    model = ModelProperty.model_validate({"name": "p", "type": "INT", "minimum": 0, "maximum": 9})
    assert parse_bounds(model) == Bounds(0, 9)
    model = ModelProperty.model_validate({"name": "p", "type": "DOUBLE", "maximum": 0.5})
    assert parse_bounds(model) == Bounds(None, 0.5)


@pytest.mark.parametrize(
    ("ptype", "minimum", "maximum", "message"),
    [
        (INT, "1.5", None, "property 'p': minimum: '1.5' is not an INT: it is not an integer"),
        (INT, None, "abc", "property 'p': maximum: 'abc' is not an INT"),
        (INT, "10", "1", "property 'p': minimum 10 is greater than maximum 1"),
        (DOUBLE, "2.5", "-2.5", "minimum 2.5 is greater than maximum -2.5"),
        (FLOAT, None, "1e39", "maximum: .*outside the range of a FLOAT"),
        (DOUBLE, "nan", None, "minimum: .*not a finite number"),
        (STRING, "-1", None, "minimum: '-1' is not a length"),
        (BYTES, None, "a", "maximum: 'a' is not a length"),
        (STRING, "5", "2", "minimum 5 is greater than maximum 2"),
    ],
)
def test_parse_bounds_refuses(
    ptype: PropertyType, minimum: str | None, maximum: str | None, message: str
) -> None:
    with pytest.raises(ValueConversionError, match=message):
        parse_bounds(prop(ptype, minimum=minimum, maximum=maximum))


# --- check_desired -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "model", "expected"),
    [
        ("42", prop(INT), 42),
        ("42", prop(INT, access_mode=AccessMode.READ_WRITE), 42),
        ("true", prop(BOOLEAN), True),
        ("1", prop(BOOLEAN), True),
        ("2.5", prop(DOUBLE), 2.5),
        ("on", prop(STRING), "on"),
        ("", prop(STRING), ""),
        ("3q2-7w", prop(BYTES), b"\xde\xad\xbe\xef"),
        ("100", prop(INT, minimum="0", maximum="100"), 100),  # bounds are inclusive
        ("0", prop(INT, minimum="0", maximum="100"), 0),
        ("0.5", prop(DOUBLE, minimum="-0.5", maximum="0.5"), 0.5),
        ("0.1", prop(FLOAT, maximum="0.1"), 0.1),
        ("abc", prop(STRING, minimum="1", maximum="3"), "abc"),
        ("AAA", prop(BYTES, maximum="2"), b"\x00\x00"),
        ("true", prop(BOOLEAN, minimum="5"), True),
    ],
)
def test_check_desired_accepts(text: str, model: ModelProperty, expected: Value) -> None:
    assert same(check_desired(text, model), expected)


@pytest.mark.parametrize(
    ("text", "model", "reason", "message"),
    [
        ("1", prop(INT, access_mode=AccessMode.READ_ONLY), "read_only", "'p' is ReadOnly"),
        ("x", prop(STREAM, access_mode=AccessMode.READ_ONLY), "read_only", "ReadOnly"),
        ("x", prop(STREAM), "not_writable", "'p' is a STREAM"),
        ("x", prop(None), "not_writable", "'p' has no type"),
        ("abc", prop(INT), "bad_type", "property 'p': 'abc' is not an INT"),
        ("12.0", prop(INT), "bad_type", "not an integer"),
        ("", prop(INT), "bad_type", "not an INT"),
        ("nan", prop(DOUBLE), "bad_type", "not a finite number"),
        ("on", prop(BOOLEAN), "bad_type", "not a BOOLEAN"),
        ("!", prop(BYTES), "bad_type", "not BYTES"),
        (
            "101",
            prop(INT, minimum="0", maximum="100"),
            "out_of_range",
            "desired value 101 is above the maximum 100",
        ),
        (
            "-1",
            prop(INT, minimum="0", maximum="100"),
            "out_of_range",
            "desired value -1 is below the minimum 0",
        ),
        ("0.5000001", prop(DOUBLE, maximum="0.5"), "out_of_range", "above the maximum 0.5"),
        (
            "abcd",
            prop(STRING, maximum="3"),
            "out_of_range",
            r"'abcd' \(length 4\) is above the maximum length 3",
        ),
        ("", prop(STRING, minimum="1"), "out_of_range", "below the minimum length 1"),
        ("AAAA", prop(BYTES, maximum="2"), "out_of_range", "above the maximum length 2"),
        ("5", prop(INT, minimum="abc"), "bad_bounds", "property 'p': minimum: 'abc'"),
        ("5", prop(INT, minimum="9", maximum="1"), "bad_bounds", "greater than maximum"),
    ],
)
def test_check_desired_refuses(text: str, model: ModelProperty, reason: str, message: str) -> None:
    with pytest.raises(DesiredValueError, match=message) as info:
        check_desired(text, model)
    assert info.value.reason == reason
    assert isinstance(info.value, MapperError)


def test_check_desired_keeps_the_conversion_error_as_cause() -> None:
    with pytest.raises(DesiredValueError) as info:
        check_desired("abc", prop(INT))
    assert isinstance(info.value.__cause__, ValueConversionError)


def test_check_desired_uses_given_bounds_instead_of_the_model() -> None:
    model = prop(INT, minimum="0", maximum="100")
    with pytest.raises(DesiredValueError) as info:
        check_desired("50", model, Bounds(0, 10))
    assert info.value.reason == "out_of_range"
    assert check_desired("500", model, Bounds()) == 500
    # Given bounds also spare a model whose own bounds do not parse.
    assert check_desired("5", prop(INT, minimum="abc"), Bounds(0, 9)) == 5


def test_check_desired_never_bounds_booleans() -> None:
    assert check_desired("true", prop(BOOLEAN), Bounds(0, 0)) is True


# --- the fast float32 text is the one the plain search finds ------------------------------


def _searched_float32_text(number: float) -> str:
    """The plain search the fast path must agree with: 1 to 9 digits, first fit wins."""
    for digits in range(1, 10):
        candidate = float(f"{number:.{digits}g}")
        if values._round_float32(candidate) == number and not values._is_float32_tie(candidate):
            return values._float_text(candidate)
    return values._float_text(number)


@given(float32s)
def test_fast_float32_text_matches_the_plain_search(number: float) -> None:
    assert values._shortest_float32_text(number) == _searched_float32_text(number)


def test_fast_float32_text_matches_the_plain_search_on_a_sweep() -> None:
    rng = random.Random(20261206)
    # Random bit patterns (every exponent, subnormals included), one-decimal sensor values
    # and the float32 ties found by the tests above.
    numbers = [_f32_from_bits(rng.getrandbits(31)) for _ in range(20_000)]
    numbers += [f32(rng.randrange(-100_000, 100_000) / 10) for _ in range(5_000)]
    numbers += [52182248.0, 128311984.0, f32(1e-45), f32(1.17549435e-38), FLT_MAX]
    for number in numbers:
        if math.isfinite(number):
            for signed in (number, -number):
                assert values._shortest_float32_text(signed) == _searched_float32_text(signed)


def test_float32_texts_are_memoised_but_zero_keeps_its_sign() -> None:
    values._FLOAT32_TEXTS.clear()
    assert format_value(f32(23.4), FLOAT) == "23.4"
    assert values._FLOAT32_TEXTS[f32(23.4)] == "23.4"
    assert values.to_twin(f32(23.4), FLOAT) == (f32(23.4), "23.4")  # served from the memo
    assert format_value(-0.0, FLOAT) == "-0.0"
    assert format_value(0.0, FLOAT) == "0.0"
    assert 0.0 not in values._FLOAT32_TEXTS


def test_float32_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(values, "_FLOAT32_TEXTS_MAX", 8)
    values._FLOAT32_TEXTS.clear()
    for n in range(1, 30):
        format_value(f32(n / 10), FLOAT)
        assert len(values._FLOAT32_TEXTS) <= 8
    values._FLOAT32_TEXTS.clear()
