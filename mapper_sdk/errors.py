"""The one exception tree of mapper-sdk.

Every error the library raises on purpose is a ``MapperError``::

    MapperError
    ├── ConfigError                 a CRD, YAML file or setting is invalid
    │   ├── YamlError               unsafe or unparsable YAML (bomb, tag, syntax)
    │   └── UnknownProtocolError    no installed driver speaks this protocol
    ├── DriverError                 talking to a device failed
    │   ├── DeviceConnectError      could not open or lost the connection
    │   ├── DeviceTimeoutError      the device did not answer in time
    │   ├── DeviceProtocolError     the device answered with an error
    │   └── UnsupportedOperation    the driver cannot do this (e.g. subscribe)
    ├── ValueConversionError        a value cannot be represented as the model type
    ├── DesiredValueError           a write was refused (read-only, out of range, ...)
    └── EventBusError               the link to EdgeCore failed

Drivers translate their library's exceptions into the ``DriverError`` family at one boundary
(``raise DeviceTimeoutError(...) from exc``), so the runtime never sees pymodbus or asyncua types.
"""

from __future__ import annotations

from dataclasses import dataclass


class MapperError(Exception):
    """Base class of every error raised by mapper-sdk on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a file, located as precisely as the input allows.

    ``str(problem)`` gives ``file:line:column: path: message``, the format editors and CI
    annotators understand; parts that are unknown are left out.
    """

    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    path: str = ""
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        prefix = "warning: " if self.severity == "warning" else ""
        path = f"{self.path}: " if self.path else ""
        return f"{where}{prefix}{path}{self.message}"


class ConfigError(MapperError):
    """A CRD, YAML file or setting is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class YamlError(ConfigError):
    """YAML that is unsafe (aliases, tags, too big or too deep) or does not parse."""


class UnknownProtocolError(ConfigError):
    """No installed driver registers this protocol name."""


class DriverError(MapperError):
    """Talking to a device failed. Raised by drivers; handled by the device supervisor."""


class DeviceConnectError(DriverError):
    """The connection to the device could not be opened or was lost."""


class DeviceTimeoutError(DriverError):
    """The device did not answer within the timeout."""


class DeviceProtocolError(DriverError):
    """The device answered, but with an error (for example a Modbus exception code)."""


class UnsupportedOperation(DriverError):
    """The driver does not support this operation (for example subscriptions)."""


class ValueConversionError(MapperError):
    """A value cannot be represented as the property's model type or as a twin value."""


class DesiredValueError(MapperError):
    """A desired value was refused. ``reason`` is a short machine-readable code."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        self.reason = reason
        super().__init__(message)


class EventBusError(MapperError):
    """The link to EdgeCore (MQTT or DMI) failed."""
