"""OPC-UA values <-> Python values, both directions, without a server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from asyncua import ua
from mapper_opcua.convert import (
    WireType,
    WriteRefused,
    from_data_value,
    from_variant_value,
    to_variant,
)

from mapper_sdk.errors import DriverError
from mapper_sdk.values import TWIN_VALUE_PATTERN

VT = ua.VariantType


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (-5, -5),
        (2.5, 2.5),
        ("text", "text"),
        (b"\x00\x01", b"\x00\x01"),
        (datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), "2026-01-02T03:04:05.600000Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05Z",
        ),
        (uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), "72962b91-fa75-4ae6-8d28-b404dc7daf63"),
        (ua.LocalizedText("Hello", "en"), "Hello"),
        (ua.QualifiedName("Name", 2), "2:Name"),
        (ua.ServerState.Running, 0),
        ([1, 2, 3], "1,2,3"),
        ([True, False], "true,false"),
        ([0.5, 1.25], "0.5,1.25"),
        ([], ""),
    ],
)
def test_read_values(raw: Any, expected: Any) -> None:
    assert from_variant_value(raw) == expected


def test_date_times_fit_the_twin_charset() -> None:
    text = from_variant_value(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert isinstance(text, str)
    assert TWIN_VALUE_PATTERN.fullmatch(text)


@pytest.mark.parametrize("raw", [ua.ServerStatusDataType(), [ua.ServerStatusDataType()], [b"x"]])
def test_structures_are_an_error_in_their_slot(raw: Any) -> None:
    result = from_variant_value(raw)
    assert isinstance(result, DriverError)
    assert "twin value" in str(result)


def test_bad_status_and_null() -> None:
    bad = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown))
    assert "BadNodeIdUnknown" in str(from_data_value(bad))
    assert "null" in str(from_data_value(ua.DataValue(ua.Variant(None))))
    assert from_data_value(ua.DataValue(ua.Variant(7, VT.Int16))) == 7


@pytest.mark.parametrize(
    ("value", "wire", "expected"),
    [
        (-77, WireType(VT.Int16), ua.Variant(-77, VT.Int16)),
        (65535, WireType(VT.UInt16), ua.Variant(65535, VT.UInt16)),
        (3.0, WireType(VT.Int32), ua.Variant(3, VT.Int32)),
        ("12", WireType(VT.Int64), ua.Variant(12, VT.Int64)),
        (1, WireType(VT.Boolean), ua.Variant(True, VT.Boolean)),
        ("false", WireType(VT.Boolean), ua.Variant(False, VT.Boolean)),
        (2, WireType(VT.Double), ua.Variant(2.0, VT.Double)),
        (0.25, WireType(VT.Float), ua.Variant(0.25, VT.Float)),
        (42, WireType(VT.String), ua.Variant("42", VT.String)),
        ("hi", WireType(VT.ByteString), ua.Variant(b"hi", VT.ByteString)),
        ("1,2", WireType(VT.Int16, array=True), ua.Variant([1, 2], VT.Int16)),
        ("", WireType(VT.Double, array=True), ua.Variant([], VT.Double)),
        (
            "2026-01-02T03:04:05Z",
            WireType(VT.DateTime),
            ua.Variant(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), VT.DateTime),
        ),
    ],
)
def test_writes_take_the_nodes_type(value: Any, wire: WireType, expected: ua.Variant) -> None:
    assert to_variant(value, wire) == expected


@pytest.mark.parametrize(
    ("value", "wire", "reason"),
    [
        (40000, WireType(VT.Int16), "out_of_range"),
        (-1, WireType(VT.UInt32), "out_of_range"),
        (1.5, WireType(VT.Int32), "bad_type"),
        (True, WireType(VT.Int32), "bad_type"),
        (2, WireType(VT.Boolean), "bad_type"),
        (1e39, WireType(VT.Float), "out_of_range"),
        ("1,x", WireType(VT.Int32, array=True), "bad_type"),
        (5, WireType(VT.Int32, array=True), "bad_type"),
        ("x", WireType(VT.NodeId), "bad_type"),
    ],
)
def test_writes_that_do_not_fit_are_refused(value: Any, wire: WireType, reason: str) -> None:
    with pytest.raises(WriteRefused) as refused:
        to_variant(value, wire)
    assert refused.value.reason == reason
