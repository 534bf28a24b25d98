"""Real pymodbus servers as the devices under test, and an independent register oracle.

- ``wire_words``: how a device lays out a value in registers for a ``byteOrder``, written from
  the byte-order letters (A = most significant byte), not from the driver's codec;
- ``Image``: the register and bit contents of one unit id, filled by ``put_*`` calls;
- ``Simulator``: a pymodbus 3.16 server (``SimDevice``/``SimData`` datastore) on 127.0.0.1 over
  TCP, RTU-over-TCP, UDP, TLS or a serial port, which records every request it receives
  (``requests``, through the server's ``trace_pdu`` hook), can be stopped and restarted on the
  same port, and can hold unit ids that never answer (``silent_units``).
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import (
    ModbusSerialServer,
    ModbusTcpServer,
    ModbusTlsServer,
    ModbusUdpServer,
)
from pymodbus.simulator import DataType, SimData, SimDevice

HOST = "127.0.0.1"
TABLE_FC = {"coils": 1, "discrete": 2, "holding": 3, "input": 4}
FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
ORDERS_32 = ("ABCD", "BADC", "CDAB", "DCBA")
ORDERS_64 = ("ABCDEFGH", "BADCFEHG", "GHEFCDAB", "HGFEDCBA")


def wire_bytes(big_endian: bytes, order: str) -> bytes:
    """The bytes as the device sends them: ``order`` lists big-endian bytes by letter."""
    if len(big_endian) == 2:  # a 32-bit order name on a 16-bit value: only the byte swap counts
        order = {"ABCD": "AB", "BADC": "BA", "CDAB": "AB", "DCBA": "BA"}[order]
    assert len(order) == len(big_endian), (order, big_endian)
    return bytes(big_endian[ord(letter) - ord("A")] for letter in order)


def wire_words(value_type: str, value: float, order: str = "ABCD") -> list[int]:
    """Registers holding ``value`` as ``value_type`` in ``order``."""
    data = wire_bytes(struct.pack(">" + FORMATS[value_type], value), order)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def text_words(data: bytes, registers: int, *, pad: bytes = b"\0", swap: bool = False) -> list[int]:
    """``data`` padded to ``registers`` registers; ``swap`` swaps the bytes of each register."""
    data = data.ljust(2 * registers, pad)
    if swap:
        data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
    return list(struct.unpack(f">{registers}H", data))


@dataclass
class Image:
    """One unit's tables: ``size`` registers and bits each, zero unless put."""

    size: int = 256
    holding: list[int] = field(default_factory=list)
    input: list[int] = field(default_factory=list)
    coils: list[bool] = field(default_factory=list)
    discrete: list[bool] = field(default_factory=list)
    invalid: set[tuple[str, int]] = field(default_factory=set)
    """(table, address) pairs the device refuses (exception 02), e.g. ``("holding", 7)``."""

    def __post_init__(self) -> None:
        for name in ("holding", "input"):
            getattr(self, name).extend([0] * (self.size - len(getattr(self, name))))
        for name in ("coils", "discrete"):
            getattr(self, name).extend([False] * (self.size - len(getattr(self, name))))

    def put_words(self, table: str, offset: int, words: Sequence[int]) -> None:
        getattr(self, table)[offset : offset + len(words)] = list(words)

    def put_bits(self, table: str, offset: int, bits: Sequence[bool | int]) -> None:
        getattr(self, table)[offset : offset + len(bits)] = [bool(b) for b in bits]

    def sim_device(self, unit: int, action: Any = None) -> SimDevice:
        blocks = tuple(self._blocks(name) for name in ("coils", "discrete", "holding", "input"))
        return SimDevice(id=unit, simdata=blocks, action=action)  # type: ignore[arg-type]

    def _blocks(self, table: str) -> list[SimData]:
        """Runs of valid addresses; the gaps between them answer exception 02."""
        values = getattr(self, table)
        bits = table in ("coils", "discrete")
        blocks, start = [], None
        for address in range(len(values) + 1):
            valid = address < len(values) and (table, address) not in self.invalid
            if valid and start is None:
                start = address
            elif not valid and start is not None:
                run = values[start:address]
                datatype = DataType.BITS if bits else DataType.REGISTERS
                blocks.append(SimData(start, values=run, datatype=datatype))
                start = None
        return blocks


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    unit: int
    function: int
    address: int
    count: int
    values: tuple[int, ...] = ()
    at: float = 0.0  # loop time of arrival

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.function, self.address, self.count)


Action = Callable[..., Awaitable[ExcCodes | None]]


class Simulator:
    """A pymodbus server for the given units; see the module docstring.

    ``kind`` is ``tcp``, ``rtu-over-tcp``, ``udp``, ``tls`` (needs ``sslctx``), ``rtu`` or
    ``ascii`` (need ``serial_port``).
    """

    def __init__(
        self,
        images: dict[int, Image],
        *,
        kind: str = "tcp",
        actions: dict[int, Action] | None = None,
        silent_units: Sequence[int] = (),
        sslctx: ssl.SSLContext | None = None,
        serial_port: str | None = None,
    ) -> None:
        self.images, self.kind, self.actions = images, kind, dict(actions or {})
        self.silent_units = set(silent_units)
        self.sslctx, self.serial_port = sslctx, serial_port
        self.port = 0
        self.requests: list[Seen] = []
        self.exceptions: list[int] = []  # exception codes the server answered with
        self.server: Any = None
        self._release = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Simulator:
        self._release.clear()
        self.server = self._make_server()
        await self.server.serve_forever(background=True)
        if self.kind not in ("rtu", "ascii"):
            self.port = self._bound_port()
        return self

    async def stop(self) -> None:
        await self.server.shutdown()
        self._release.set()  # let requests of silent units finish (into a closed socket)
        await asyncio.sleep(0)

    async def restart(self) -> None:
        await self.start()

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _devices(self) -> list[SimDevice]:
        devices = [
            image.sim_device(unit, self.actions.get(unit)) for unit, image in self.images.items()
        ]
        for unit in self.silent_units:
            devices.append(Image(size=8).sim_device(unit, self._hang))
        return devices

    def _make_server(self) -> Any:
        devices, trace = self._devices(), self._trace
        address = (HOST, self.port)
        if self.kind in ("tcp", "rtu-over-tcp"):
            framer = FramerType.RTU if self.kind == "rtu-over-tcp" else FramerType.SOCKET
            return ModbusTcpServer(devices, address=address, framer=framer, trace_pdu=trace)
        if self.kind == "udp":
            return ModbusUdpServer(devices, address=address, trace_pdu=trace)
        if self.kind == "tls":
            return ModbusTlsServer(devices, address=address, sslctx=self.sslctx, trace_pdu=trace)
        framer = FramerType.ASCII if self.kind == "ascii" else FramerType.RTU
        return ModbusSerialServer(
            devices, port=self.serial_port or "", framer=framer, baudrate=115200, trace_pdu=trace
        )

    def _bound_port(self) -> int:
        transport = self.server.transport
        sockets = getattr(transport, "sockets", None)
        sock = sockets[0] if sockets else transport.get_extra_info("socket")
        return int(sock.getsockname()[1])

    # -- what the server sees -------------------------------------------------------------

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending and pdu.isError():
            self.exceptions.append(pdu.exception_code)
        elif not sending:
            values = tuple(pdu.registers) or tuple(int(b) for b in pdu.bits)
            count = pdu.count or len(values)
            now = asyncio.get_running_loop().time()
            seen = Seen(pdu.dev_id, pdu.function_code, pdu.address, count, values, now)
            self.requests.append(seen)
        return pdu

    async def _hang(self, *_: object) -> ExcCodes | None:
        await self._release.wait()  # never answers while the server runs
        return ExcCodes.DEVICE_FAILURE

    def take(self) -> list[Seen]:
        """The requests seen since the last call."""
        seen, self.requests = self.requests, []
        return seen

    # -- the datastore --------------------------------------------------------------------

    async def set_words(self, unit: int, table: str, address: int, words: Sequence[int]) -> None:
        await self.server.async_setValues(unit, TABLE_FC[table], address, list(words))

    async def set_bits(self, unit: int, table: str, address: int, bits: Sequence[bool]) -> None:
        await self.server.async_setValues(unit, TABLE_FC[table], address, list(bits))

    async def words(self, unit: int, table: str, address: int, count: int) -> list[int]:
        return list(await self.server.async_getValues(unit, TABLE_FC[table], address, count))

    async def bits(self, unit: int, table: str, address: int, count: int) -> list[bool]:
        values = await self.server.async_getValues(unit, TABLE_FC[table], address, count)
        return [bool(v) for v in values]
