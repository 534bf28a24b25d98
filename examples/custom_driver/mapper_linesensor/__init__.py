"""A mapper for sensors speaking a line protocol over TCP: ``GET name`` / ``SET name value``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mapper_sdk import (
    BoundProperty,
    DeviceConnectError,
    DeviceProtocolError,
    DeviceTimeoutError,
    Driver,
    DriverConfig,
    DriverError,
    Value,
)


class LineSensorConfig(DriverConfig):
    """``spec.protocol.configData``: where the sensor listens."""

    host: str
    port: int  # "7000" and 7000.0 (as EdgeCore sends numbers) both validate
    timeout_ms: int = 1000


class LineSensorVisitor(DriverConfig):
    """``visitors.configData``: the sensor's own name for the value."""

    channel: str


class LineSensorDriver(Driver[LineSensorConfig, LineSensorVisitor]):
    """One TCP connection per sensor; requests are pipelined, one batch per tick."""

    protocol = "linesensor"
    protocol_config_model = LineSensorConfig
    visitor_config_model = LineSensorVisitor

    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.config.host, self.config.port
            )
        except OSError as exc:
            raise DeviceConnectError(f"{self.config.host}:{self.config.port}: {exc}") from exc

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        lines = "".join(f"GET {self.visitor(p).channel}\n" for p in points)
        answers = await self._exchange(lines, len(points))
        return [_parse(answer) for answer in answers]

    async def write(self, point: BoundProperty, value: Value) -> None:
        text = value.decode() if isinstance(value, bytes) else str(value)
        (answer,) = await self._exchange(f"SET {self.visitor(point).channel} {text}\n", 1)
        if answer != "OK":
            raise DeviceProtocolError(f"sensor refused {point.name}={text}: {answer}")

    async def _exchange(self, request: str, count: int) -> list[str]:
        if self._writer is None:
            raise DeviceConnectError("not connected")
        try:
            async with asyncio.timeout(self.config.timeout_ms / 1000):
                self._writer.write(request.encode())
                await self._writer.drain()
                return [(await self._reader.readline()).decode().strip() for _ in range(count)]
        except TimeoutError as exc:
            raise DeviceTimeoutError("sensor did not answer in time") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DeviceConnectError(f"connection lost: {exc}") from exc

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _parse(answer: str) -> Value | DriverError:
    if answer == "":
        return DeviceConnectError("connection closed by the sensor")
    if answer.startswith("ERR"):
        return DeviceProtocolError(answer)
    try:
        return float(answer)
    except ValueError:
        return answer
