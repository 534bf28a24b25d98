"""mapper-sdk: write KubeEdge-compatible IoT device mappers in Python.

The public API is what this module exports; modules whose names start with ``_`` are internal
and may change in any release.
"""

from mapper_sdk._registry import Registry
from mapper_sdk._supervisor import DeviceStats, SupervisorSettings
from mapper_sdk._version import __version__
from mapper_sdk.binding import BoundDevice, BoundProperty, DeviceRef, bind
from mapper_sdk.bus import (
    DesiredChange,
    EventBus,
    TwinReport,
    TwinValue,
    WriteResult,
    WriteStatus,
)
from mapper_sdk.driver import DeviceState, Driver, DriverConfig, Emit, Value
from mapper_sdk.errors import (
    ConfigError,
    DesiredValueError,
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    DriverError,
    EventBusError,
    MapperError,
    Problem,
    UnknownProtocolError,
    UnsupportedOperation,
    ValueConversionError,
    YamlError,
)
from mapper_sdk.runtime import ApplyResult, MapperRuntime

__all__ = [
    "ApplyResult",
    "BoundDevice",
    "BoundProperty",
    "ConfigError",
    "DesiredChange",
    "DesiredValueError",
    "DeviceConnectError",
    "DeviceProtocolError",
    "DeviceRef",
    "DeviceState",
    "DeviceStats",
    "DeviceTimeoutError",
    "Driver",
    "DriverConfig",
    "DriverError",
    "Emit",
    "EventBus",
    "EventBusError",
    "MapperError",
    "MapperRuntime",
    "Problem",
    "Registry",
    "SupervisorSettings",
    "TwinReport",
    "TwinValue",
    "UnknownProtocolError",
    "UnsupportedOperation",
    "Value",
    "ValueConversionError",
    "WriteResult",
    "WriteStatus",
    "YamlError",
    "__version__",
    "bind",
]
