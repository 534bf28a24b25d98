"""The ``Driver`` base class: what a protocol author implements to add a protocol.

A driver is a live connection to one device. The runtime owns everything else (scheduling,
reconnects with backoff, twins, writes, reporting), so a driver only moves values::

    class MyDriver(Driver[MyProtocolConfig, MyVisitorConfig]):
        protocol = "my-protocol"
        protocol_config_model = MyProtocolConfig
        visitor_config_model = MyVisitorConfig

        async def connect(self) -> None: ...
        async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]: ...
        async def write(self, point: BoundProperty, value: Value) -> None: ...
        async def aclose(self) -> None: ...

and registers it through the entry-point group ``mapper_sdk.drivers``.

Rules the runtime relies on:

- ``__init__`` does no I/O; ``connect`` opens the connection, ``aclose`` always releases it.
- ``read`` gets every property due in one tick, so a protocol can coalesce them into few
  requests. A failure of one property is returned in its slot as a ``DriverError``; raising
  means the whole batch (usually the connection) failed.
- Raise only ``mapper_sdk.errors.DriverError`` subclasses; translate library exceptions with
  ``raise DeviceTimeoutError(...) from exc`` so the runtime can tell a timeout from a lost link.
- Protocol libraries are imported inside the driver module (or lazily in ``connect``), never by
  the config models, so that loading a YAML file does not import every protocol's library.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, cast

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from mapper_sdk.errors import DriverError, UnsupportedOperation

if TYPE_CHECKING:
    from mapper_sdk.binding import BoundDevice, BoundProperty

Value = int | float | bool | str | bytes
"""A typed value as a driver reads or writes it; conversion to twin strings is the runtime's job."""

P = TypeVar("P", bound=BaseModel)
V = TypeVar("V", bound=BaseModel)

Emit = Callable[["BoundProperty", Value | DriverError], None]
"""Callback a subscribing driver calls for every value the device pushes."""


class DeviceState(StrEnum):
    """Device states EdgeCore accepts (contract §3.4 rule 9), as the runtime reports them."""

    ONLINE = "online"
    OFFLINE = "offline"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class DriverConfig(BaseModel):
    """Convenient base for driver config models.

    Field names are snake_case in Python and camelCase in YAML (``slave_id`` reads ``slaveId``;
    give an explicit alias for spellings like KubeEdge's ``slaveID``). Unknown keys are refused,
    so a typo in ``configData`` is an error instead of a silently ignored setting. Pydantic's lax
    mode already takes config the way EdgeCore delivers it (contract §1.5: every number arrives
    as a float such as ``502.0``, ports often as strings).
    """

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Driver(abc.ABC, Generic[P, V]):
    """A live connection to one device, speaking one protocol."""

    protocol: ClassVar[str]
    """The protocol name: equals ``spec.protocol.protocolName`` and the entry-point name."""

    protocol_config_model: ClassVar[type[BaseModel]]
    """Validates the merged ``spec.protocol.configData`` of a device."""

    visitor_config_model: ClassVar[type[BaseModel]]
    """Validates the merged ``properties[].visitors.configData`` of each property."""

    supports_subscribe: ClassVar[bool] = False
    """True if the device pushes values (``subscribe`` is implemented)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "__abstractmethods__", None):
            return  # an intermediate base class
        for attr in ("protocol", "protocol_config_model", "visitor_config_model"):
            if not hasattr(cls, attr):
                raise TypeError(f"driver class {cls.__qualname__} must define {attr!r}")

    def __init__(self, device: BoundDevice) -> None:
        self.device = device

    @property
    def config(self) -> P:
        """The device's protocol config, validated by ``protocol_config_model``."""
        return cast(P, self.device.protocol_config)

    @staticmethod
    def visitor(point: BoundProperty) -> V:
        """The property's visitor config, validated by ``visitor_config_model``."""
        return cast(V, point.visitor)

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection. Raise ``DeviceConnectError`` if the device cannot be reached."""

    @abc.abstractmethod
    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        """Read every point; return one value or ``DriverError`` per point, in order."""

    async def write(self, point: BoundProperty, value: Value) -> None:
        """Write ``value`` (already checked against the model) to the device."""
        raise UnsupportedOperation(f"the {self.protocol} driver cannot write {point.name!r}")

    async def write_many(self, writes: Sequence[tuple[BoundProperty, Value]]) -> None:
        """Write several checked values at once; raise if any failed.

        The runtime calls this when several desired values of one device are waiting. The
        default writes them one by one; a protocol that can merge writes (Modbus FC16)
        overrides it. On an error the runtime retries the values one by one, so each gets
        its own answer.
        """
        for point, value in writes:
            await self.write(point, value)

    def is_pushed(self, point: BoundProperty) -> bool:
        """True if ``point`` is delivered by ``subscribe`` instead of being polled."""
        return False

    async def subscribe(self, points: Sequence[BoundProperty], emit: Emit) -> None:
        """Deliver pushed values through ``emit`` until cancelled (push devices only)."""
        raise UnsupportedOperation(f"the {self.protocol} driver does not support subscriptions")

    async def state(self) -> DeviceState:
        """The device's health as the driver sees it; the runtime reports it as device state."""
        return DeviceState.ONLINE

    async def aclose(self) -> None:
        """Release the connection. Must not raise and must be safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


AnyDriver = Driver[Any, Any]
DriverClass = type[Driver[Any, Any]]

__all__ = [
    "AnyDriver",
    "DeviceState",
    "Driver",
    "DriverClass",
    "DriverConfig",
    "Emit",
    "Value",
]
