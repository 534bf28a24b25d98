"""The ``modbus`` driver: KubeEdge Modbus devices on pymodbus, with shared links and planned reads.

Where things live:

- ``transport``: pymodbus, and only there;
- ``connection``: shared links (one per endpoint or serial port), the bus scheduler of each and
  the backoff of units that stop answering;
- ``reader``: planned, cached, decoded reads with the exception 02/03 fallback;
- this module: the ``Driver`` API. ``connect`` and ``aclose`` join and leave a link, ``read``
  delegates to the reader, ``write`` encodes, plans (FC5/6/15/16) and optionally verifies.
"""

from __future__ import annotations

from collections.abc import Sequence

from mapper_modbus.codec import (
    CodecError,
    EncodeError,
    PointCodec,
    bits_to_bytes,
    registers_to_bytes,
)
from mapper_modbus.config import ModbusProtocolConfig, ModbusVisitorConfig
from mapper_modbus.connection import Link, LinkPool
from mapper_modbus.planner import ReadPlanner, WriteItem, WriteRequest, plan_writes
from mapper_modbus.reader import BlockReader, Health, PointSpec
from mapper_modbus.tables import FunctionCode, Register
from mapper_modbus.transport import Op
from mapper_sdk.binding import BoundDevice, BoundProperty
from mapper_sdk.driver import DeviceState, Driver, Value
from mapper_sdk.errors import DeviceConnectError, DeviceProtocolError, DriverError

__all__ = ["ModbusDriver", "WriteRefused"]

_COIL_WRITES = (FunctionCode.WRITE_SINGLE_COIL, FunctionCode.WRITE_MULTIPLE_COILS)


class WriteRefused(DriverError):
    """A write the driver does not send: a read-only table, a value that does not fit.

    ``reason`` is a short code as in ``DesiredValueError``: ``read_only``, ``out_of_range``,
    ``invalid``.
    """

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class ModbusDriver(Driver[ModbusProtocolConfig, ModbusVisitorConfig]):
    """One Modbus device (one unit id) on a link it may share with other devices."""

    protocol = "modbus"
    protocol_config_model = ModbusProtocolConfig
    visitor_config_model = ModbusVisitorConfig

    HEALTH_WINDOW = 3
    """``state()`` is unhealthy when this many requests in a row failed."""

    def __init__(self, device: BoundDevice) -> None:
        super().__init__(device)
        self._specs = [_spec(point) for point in device.properties]
        self._health = Health(self.HEALTH_WINDOW)
        self._link: Link | None = None
        self._reader: BlockReader | None = None

    @property
    def unit(self) -> int:
        return self.config.slave_id

    @property
    def link(self) -> Link | None:
        """The shared link while connected."""
        return self._link

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._link is not None:
            return
        config = self.config
        link = await LinkPool.acquire(config)
        link.attach(self.unit)
        self._link = link
        # Per connection session: a reconnect relearns what the device accepts (cheaply).
        planner = ReadPlanner(max_gap=config.max_gap, max_gap_bits=config.max_gap_bits)
        self._reader = BlockReader(
            link,
            self.unit,
            self._specs,
            planner,
            timeout=config.timeout_s,
            retries=config.retries,
            health=self._health,
        )

    async def aclose(self) -> None:
        link, self._link, self._reader = self._link, None, None
        if link is not None:
            link.detach(self.unit)
            await LinkPool.release(link)

    async def state(self) -> DeviceState:
        if self._link is None or not self._link.connected:
            return DeviceState.OFFLINE
        return DeviceState.UNHEALTHY if self._health.failing else DeviceState.ONLINE

    # -- reads ----------------------------------------------------------------------------

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        if self._reader is None:
            raise DeviceConnectError(f"device {self.device.ref} is not connected")
        return await self._reader.read(points)

    # -- writes ---------------------------------------------------------------------------

    async def write(self, point: BoundProperty, value: Value) -> None:
        await self.write_many([(point, value)])

    async def write_many(self, writes: Sequence[tuple[BoundProperty, Value]]) -> None:
        """Write several properties at once, contiguous registers (coils) merged into FC16
        (FC15) requests; applied in order, so a later value for the same register wins."""
        link = self._require_link()
        items = await self._encode_all(link, writes)
        requests = plan_writes(items, always_multiple=self.config.always_multiple_write)
        for request in requests:
            op = Op(request.function, self.unit, request.address, request.count, request.values)
            await self._send(link, op)
        if self.config.verify_writes:
            for request in requests:
                await self._verify(link, request)

    async def _encode_all(
        self, link: Link, writes: Sequence[tuple[BoundProperty, Value]]
    ) -> list[WriteItem]:
        items = []
        registers: dict[int, int] = {}  # current values of registers whose bits are written
        for point, value in writes:
            codec = self._writable_codec(point)
            current = None
            if codec.bit is not None:  # read-modify-write of one bit of a holding register
                if codec.offset not in registers:
                    registers[codec.offset] = await self._read_register(link, codec.offset)
                current = registers[codec.offset]
            try:
                values = codec.encode(value, current)
            except EncodeError as exc:
                raise WriteRefused(f"{point.name}: {exc}", reason=exc.reason) from exc
            if codec.bit is not None:
                registers[codec.offset] = values[0]
            items.append(WriteItem(point.name, self.unit, codec.table, codec.offset, values))
        return items

    def _writable_codec(self, point: BoundProperty) -> PointCodec:
        codec = self._specs[point.index].codec
        if isinstance(codec, DriverError):
            raise codec
        if not codec.table.writable:
            raise WriteRefused(
                f"{point.name} is in the {codec.table} table, which Modbus cannot write "
                "(only coils and holding registers are writable)",
                reason="read_only",
            )
        return codec

    async def _read_register(self, link: Link, address: int) -> int:
        op = Op(FunctionCode.READ_HOLDING_REGISTERS, self.unit, address, 1)
        return int.from_bytes(await self._send(link, op), "big")

    async def _verify(self, link: Link, request: WriteRequest) -> None:
        coils = request.function in _COIL_WRITES
        table = Register.COIL if coils else Register.HOLDING
        op = Op(table.read_function, self.unit, request.address, request.count)
        expected = bits_to_bytes(request.values) if coils else registers_to_bytes(request.values)
        actual = await self._send(link, op)
        if actual != expected:
            raise DeviceProtocolError(
                f"unit {self.unit} did not keep a write: {table} {request.address} reads back "
                f"{actual.hex()} after {expected.hex()} was written"
            )

    async def _send(self, link: Link, op: Op) -> bytes:
        """One request at write priority (writes and their reads jump ahead of polls)."""
        config = self.config
        try:
            data = await link.request(
                op, timeout=config.timeout_s, retries=config.retries, write=True
            )
        except DriverError:
            self._health.record(False)
            raise
        self._health.record(True)
        return data

    def _require_link(self) -> Link:
        if self._link is None or not self._link.connected:
            raise DeviceConnectError(f"device {self.device.ref} is not connected")
        return self._link


def _spec(point: BoundProperty) -> PointSpec:
    """The property's codec, or the error its reads and writes will give."""
    visitor = point.visitor
    if not isinstance(visitor, ModbusVisitorConfig):
        return PointSpec(DriverError(f"{point.name} has no Modbus visitor configData"))
    try:
        codec = PointCodec(visitor, point.type.value)
    except CodecError as exc:
        return PointSpec(DriverError(f"{point.name}: {exc}"))
    return PointSpec(codec, visitor.max_block)
