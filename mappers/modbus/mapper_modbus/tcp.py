"""A lean Modbus/TCP client: MBAP frames built and parsed with ``struct``, one asyncio protocol.

The TCP hot path of the driver: no pymodbus objects per request, no task per request, no timer
per request (the link keeps the deadlines). pymodbus remains the reference for the framing and
serves every other transport (``stock``).

MBAP header (Modbus Messaging on TCP/IP Implementation Guide V1.0b, §3.1.3): transaction id
(2 bytes), protocol id (2, always 0), length (2: the bytes that follow, unit id included), unit
id (1); then the PDU (function code and data, at most 253 bytes).

Behaviour on the wire:

- each request gets the next transaction id (1..65535, then 1 again); an answer whose id is not
  the one awaited (a late answer to a request that timed out, or a foreign one) is dropped and
  counted in ``stale``: the request still waiting for its own answer keeps waiting;
- an answer from another unit id than asked is a ``BadReply`` (as pymodbus does; unit 0 asks
  any), as is one whose function code, byte count or echo does not fit the request;
- a header that cannot be Modbus (protocol id not 0, length outside 2..254) means the byte
  stream is out of step: the connection is closed and the link reports it lost;
- frames may arrive split over several reads or several in one read.
"""

from __future__ import annotations

import asyncio
import struct

from mapper_modbus.channel import BadReply, ExceptionReply, Job, Op, Owner
from mapper_modbus.tables import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    MAX_WRITE_BITS,
    MAX_WRITE_REGISTERS,
    FunctionCode,
)

__all__ = ["TcpChannel", "open_channel", "parse_response", "request_frame"]

HEADER = 7  # MBAP header bytes: transaction id, protocol id, length, unit id
MAX_PDU = 253

_MBAP = struct.Struct(">HHH")
_SIMPLE = struct.Struct(">HHHBBHH")  # MBAP + function code + two 16-bit fields
_MULTIPLE = struct.Struct(">HHHBBHHB")  # ... + byte count
_ECHO = struct.Struct(">HH")

_READ_LIMITS = {
    FunctionCode.READ_COILS: MAX_READ_BITS,
    FunctionCode.READ_DISCRETE_INPUTS: MAX_READ_BITS,
    FunctionCode.READ_HOLDING_REGISTERS: MAX_READ_REGISTERS,
    FunctionCode.READ_INPUT_REGISTERS: MAX_READ_REGISTERS,
}
_BIT_READS = (FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS)


def request_frame(tid: int, op: Op) -> bytes:
    """The ADU (MBAP header + PDU) of ``op`` with transaction id ``tid``; ``ValueError`` if the
    request cannot be sent (quantity outside the specification's limits, value out of range)."""
    fc, unit, address = op.function, op.unit, op.address
    limit = _READ_LIMITS.get(fc)
    try:
        if limit is not None:
            if not 1 <= op.count <= limit:
                raise ValueError(f"FC{fc} reads 1..{limit} items, not {op.count}")
            return _SIMPLE.pack(tid, 0, 6, unit, fc, address, op.count)
        if fc == FunctionCode.WRITE_SINGLE_REGISTER:
            return _SIMPLE.pack(tid, 0, 6, unit, fc, address, op.values[0])
        if fc == FunctionCode.WRITE_SINGLE_COIL:
            return _SIMPLE.pack(tid, 0, 6, unit, fc, address, 0xFF00 if op.values[0] else 0)
        if fc == FunctionCode.WRITE_MULTIPLE_REGISTERS:
            n = len(op.values)
            if not 1 <= n <= MAX_WRITE_REGISTERS:
                raise ValueError(f"FC16 writes 1..{MAX_WRITE_REGISTERS} registers, not {n}")
            data = struct.pack(f">{n}H", *op.values)
            return _MULTIPLE.pack(tid, 0, 7 + 2 * n, unit, fc, address, n, 2 * n) + data
        if fc == FunctionCode.WRITE_MULTIPLE_COILS:
            n = len(op.values)
            if not 1 <= n <= MAX_WRITE_BITS:
                raise ValueError(f"FC15 writes 1..{MAX_WRITE_BITS} coils, not {n}")
            packed = _pack_bits(op.values)
            size = len(packed)
            return _MULTIPLE.pack(tid, 0, 7 + size, unit, fc, address, n, size) + packed
    except struct.error as exc:
        raise ValueError(f"FC{fc} at {address}: {exc}") from None
    raise ValueError(f"function code {fc} is not used by this driver")


def _pack_bits(bits: tuple[int, ...]) -> bytes:
    # The first bit is the least significant bit of the first byte.
    word = 0
    for i, bit in enumerate(bits):
        if bit:
            word |= 1 << i
    return word.to_bytes((len(bits) + 7) // 8, "little")


def parse_response(op: Op, frame: bytes) -> bytes:
    """The data of a whole ADU answering ``op``: register bytes as on the wire, bits packed as
    Modbus packs them (bits beyond ``count`` cleared), ``b""`` for a write.

    Raises ``ExceptionReply`` or ``BadReply``. The transaction id is the caller's to check.
    """
    if len(frame) < HEADER + 2:
        raise BadReply(f"a {len(frame)}-byte answer is too short")
    unit, fc = frame[6], frame[7]
    if op.unit and unit != op.unit:
        raise BadReply(f"asked unit {op.unit}, unit {unit} answered")
    if fc != op.function:
        if fc == op.function | 0x80 and len(frame) == HEADER + 2:
            raise ExceptionReply(frame[8])
        raise BadReply(f"FC{op.function} answered with function code {fc}")
    if fc in _READ_LIMITS:
        size = frame[8]
        bits = fc in _BIT_READS
        needed = (op.count + 7) // 8 if bits else 2 * op.count
        if size != len(frame) - HEADER - 2:
            raise BadReply(f"byte count {size} but {len(frame) - HEADER - 2} data bytes")
        if size != needed:
            what = "bits" if bits else "registers"
            raise BadReply(f"asked for {op.count} {what}, got {size} data bytes")
        data = frame[HEADER + 2 :]
        spare = op.count & 7
        if bits and spare:  # padding bits of the last byte are not data
            data = data[:-1] + bytes((data[-1] & ((1 << spare) - 1),))
        return data
    if len(frame) != HEADER + 5:
        raise BadReply(f"FC{fc} answer of {len(frame) - HEADER} PDU bytes, expected 5")
    address, quantity = _ECHO.unpack_from(frame, HEADER + 1)
    if address != op.address:
        raise BadReply(f"FC{fc} to address {op.address} answered for address {address}")
    multiple = fc in (FunctionCode.WRITE_MULTIPLE_REGISTERS, FunctionCode.WRITE_MULTIPLE_COILS)
    if multiple and quantity != len(op.values):
        raise BadReply(f"FC{fc} of {len(op.values)} items answered for {quantity}")
    return b""


class TcpChannel(asyncio.Protocol):
    """One Modbus/TCP connection with at most one request in flight; see the module docstring."""

    link_timed = True

    def __init__(self, owner: Owner) -> None:
        self.job: Job | None = None
        self.connected = False
        self.stale = 0  # answers dropped: no request waited for their transaction id
        self._owner: Owner | None = owner
        self._transport: asyncio.Transport | None = None
        self._tid = 0
        self._buffer = b""
        self._broken: str | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.connected = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        job, self.job = self.job, None
        owner, self._owner = self._owner, None
        if owner is not None:
            reason = self._broken or (f"connection lost: {exc}" if exc else "closed by the device")
            owner.channel_lost(self, job, reason)

    def data_received(self, data: bytes) -> None:
        if self._broken is not None:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        while len(data) >= HEADER + 1:
            tid, protocol, length = _MBAP.unpack_from(data)
            if protocol or not 2 <= length <= MAX_PDU + 1:
                self._break(f"not a Modbus/TCP frame (protocol id {protocol}, length {length})")
                return
            end = 6 + length
            if len(data) < end:
                break
            if len(data) == end:
                self._frame(tid, data)
                return
            self._frame(tid, data[:end])
            data = data[end:]
        self._buffer = data

    # -- Channel --------------------------------------------------------------------------

    def start(self, job: Job) -> None:
        tid = self._tid = self._tid % 0xFFFF + 1
        self.job = job
        assert self._transport is not None, "started before the connection was made"
        try:
            frame = request_frame(tid, job.op)
        except ValueError as exc:  # reported from the loop: never from inside start
            asyncio.get_running_loop().call_soon(self._refused, job, exc)
            return
        self._transport.write(frame)

    async def wait_closed(self) -> None:
        return None  # the transport closes by itself; nothing of ours is left running

    def abandon(self) -> None:
        self.job = None

    def close(self) -> None:
        self._owner = None
        self.connected = False
        self.job = None
        if self._transport is not None:
            self._transport.close()

    # -- answers --------------------------------------------------------------------------

    def _frame(self, tid: int, frame: bytes) -> None:
        job = self.job
        if job is None or tid != self._tid:
            self.stale += 1
            return
        self.job = None
        outcome: bytes | BaseException
        try:
            outcome = parse_response(job.op, frame)
        except (ExceptionReply, BadReply) as exc:
            outcome = exc
        if self._owner is not None:
            self._owner.settle(self, job, outcome)

    def _refused(self, job: Job, exc: ValueError) -> None:
        if self.job is job and self._owner is not None:
            self.job = None
            self._owner.settle(self, job, exc)

    def _break(self, reason: str) -> None:
        self._broken = reason
        self._buffer = b""
        if self._transport is not None:
            self._transport.abort()  # connection_lost reports it, with the job in flight


async def open_channel(owner: Owner, host: str, port: int) -> TcpChannel:
    """Connect one channel (the caller bounds the time); raises ``OSError``."""
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_connection(lambda: TcpChannel(owner), host, port)
    return channel
