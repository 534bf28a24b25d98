"""EdgeCore's rules for twin names, values and types, checked the way its Go code checks them."""

from __future__ import annotations

import math

from mapper_sdk.bus.messages.shapes import (
    GO_FLOAT,
    GO_FLOAT_SPECIAL,
    GO_INT,
    INT64_MAX,
    INT64_MIN,
    MAX_VALUE_LEN,
    TWIN_KEY_RE,
    TWIN_TYPES,
    TWIN_VALUE_RE,
)
from mapper_sdk.errors import ValueConversionError

# --- value checks ------------------------------------------------------------------------------


def short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_twin_key(key: object) -> str:
    """Return ``key`` if EdgeCore accepts it as a twin name, else raise ValueConversionError."""
    if not isinstance(key, str) or not TWIN_KEY_RE.fullmatch(key):
        raise ValueConversionError(
            f"twin name {short(key)} must be 1-128 of the characters a-z A-Z 0-9 - _ . , : / @ #"
        )
    return key


def check_twin_value(value: object, type_: str | None = None) -> str:
    """Return ``value`` if EdgeCore accepts it as a twin value of ``type_``.

    ``type_`` ``None`` checks only the pattern (EdgeCore then uses the twin's stored type).
    Raises :class:`ValueConversionError`: for a value outside ``^[a-zA-Z0-9-_.,:/@#]{1,512}$``,
    for a ``type_`` not in :data:`TWIN_TYPES`, or for a value that does not parse as ``type_``
    (Go ``strconv.ParseInt(v, 10, 64)`` / ``ParseFloat(v, 64)`` / exactly ``true|false``; our
    float check is slightly stricter: no hexadecimal floats or ``_`` digit separators).
    """
    if not isinstance(value, str):
        raise ValueConversionError(f"twin value {short(value)} is not a string")
    if not TWIN_VALUE_RE.fullmatch(value):
        if len(value) > MAX_VALUE_LEN:
            raise ValueConversionError(
                f"twin value of {len(value)} characters is longer than {MAX_VALUE_LEN}"
            )
        raise ValueConversionError(
            f"twin value {short(value)} must be 1-512 of the characters a-z A-Z 0-9 - _ . , : / @ #"
        )
    if type_ is None or type_ == "string":
        return value
    if type_ in ("int", "integer"):
        if not GO_INT.fullmatch(value) or not INT64_MIN <= int(value) <= INT64_MAX:
            raise ValueConversionError(f"twin value {short(value)} is not a 64-bit integer")
        return value
    if type_ == "float":
        if value.lower() in GO_FLOAT_SPECIAL:
            return value
        if not GO_FLOAT.fullmatch(value) or math.isinf(float(value)):
            raise ValueConversionError(f"twin value {short(value)} is not a 64-bit float")
        return value
    if type_ == "boolean":
        if value not in ("true", "false"):
            raise ValueConversionError(f"twin value {short(value)} is not 'true' or 'false'")
        return value
    raise ValueConversionError(
        f"twin type {short(type_)} is not one of {', '.join(sorted(TWIN_TYPES))}"
    )


def check_type(type_: object) -> str:
    if not isinstance(type_, str) or type_ not in TWIN_TYPES:
        raise ValueConversionError(
            f"twin type {short(type_)} is not one of {', '.join(sorted(TWIN_TYPES))}"
        )
    return type_
