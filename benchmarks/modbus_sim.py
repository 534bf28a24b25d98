"""Benchmark Modbus TCP simulator: one process serving several ports, each with many unit ids.

Run by ``bench_modbus.py`` on the harness core (core 1), never imported by the system under
test. Two engines:

- ``pymodbus`` (default): ``pymodbus.server.ModbusTcpServer`` with the 3.16 ``SimDevice`` API,
  requests counted through ``trace_pdu``;
- ``lean``: a minimal asyncio Modbus/TCP responder (FC3, FC4, FC6, FC16 from a byte image),
  about ten times cheaper per request, for when pymodbus saturates the harness core.

Polled units hold float32 values (one decimal, as sensors report them) in consecutive holding
registers from address 0. Each read of a polled unit flips it between two images whose values
differ by 0.1, so every cycle reads changed values (nothing is skipped as unchanged).

Write units hold ``write_registers`` zeroed holding registers; every write request to them is
appended to ``write_log`` as a JSON line ``[monotonic_ns, unit, fc, address, [values]]`` at the
moment the datastore takes it (``time.monotonic_ns`` is one clock for every process on Linux).

    python benchmarks/modbus_sim.py --spec '{"servers": [{"units": {"1": 20}}]}'

Prints ``{"ports": [...]}`` once listening. Commands on stdin: ``stats`` prints
``{"requests": n, "writes": n}``; end of input (or SIGTERM) stops the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import time
from typing import Any, TextIO

HOST = "127.0.0.1"


def float_image(unit: int, registers: int, bump: float) -> list[int]:
    """``registers`` registers of float32 values ``20.0 + k / 10`` (ABCD order)."""
    values = [20.0 + ((unit * 7 + i) % 100) / 10 + bump for i in range(registers // 2)]
    data = struct.pack(f">{len(values)}f", *values)
    if registers % 2:
        data += b"\0\0"
    return list(struct.unpack(f">{registers}H", data))


class Counters:
    def __init__(self, write_log: str | None) -> None:
        self.requests = 0
        self.writes = 0
        self._log: TextIO | None = open(write_log, "a") if write_log else None  # noqa: SIM115

    def wrote(self, unit: int, fc: int, address: int, values: list[int]) -> None:
        now = time.monotonic_ns()
        self.writes += 1
        if self._log is not None:
            self._log.write(json.dumps([now, unit, fc, address, values]) + "\n")
            self._log.flush()


# -- pymodbus engine ------------------------------------------------------------------------


async def start_pymodbus(server: dict[str, Any], spec: dict[str, Any], counters: Counters) -> Any:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    devices = []
    for unit_text, registers in server["units"].items():
        unit = int(unit_text)
        images = [float_image(unit, registers, 0.0), float_image(unit, registers, 0.1)]
        flip = [0]

        async def poll_action(
            fc: int,
            start: int,
            address: int,
            count: int,
            current: list[int],
            values: Any,
            images: list[list[int]] = images,
            flip: list[int] = flip,
        ) -> None:
            if values is None and fc in (3, 4):
                flip[0] ^= 1
                lo = address - start
                current[lo : lo + count] = images[flip[0]][address : address + count]

        blocks = (
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=list(images[0]), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(images[0]), datatype=DataType.REGISTERS)],
        )
        devices.append(SimDevice(id=unit, simdata=blocks, action=poll_action))
    for unit_text, registers in server.get("write_units", {}).items():
        unit = int(unit_text)

        async def write_action(
            fc: int,
            start: int,
            address: int,
            count: int,
            current: list[int],
            values: Any,
            unit: int = unit,
        ) -> None:
            if values is not None and fc in (6, 16):
                counters.wrote(unit, fc, address, [int(v) for v in values])

        zeros = [0] * registers
        blocks = (
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=list(zeros), datatype=DataType.REGISTERS)],
            [SimData(0, values=list(zeros), datatype=DataType.REGISTERS)],
        )
        devices.append(SimDevice(id=unit, simdata=blocks, action=write_action))

    def trace(sending: bool, pdu: Any) -> Any:
        if not sending:
            counters.requests += 1
        return pdu

    srv = ModbusTcpServer(devices, address=(HOST, int(server.get("port", 0))), trace_pdu=trace)
    await srv.serve_forever(background=True)
    transport = srv.transport
    sockets = getattr(transport, "sockets", None)
    sock = sockets[0] if sockets else transport.get_extra_info("socket")
    return srv, int(sock.getsockname()[1])


# -- lean engine ----------------------------------------------------------------------------

_MBAP = struct.Struct(">HHHB")
_HDR_READ = struct.Struct(">HHHBBB")
_ADDR_COUNT = struct.Struct(">HH")


class LeanUnit:
    __slots__ = ("flip", "images", "writable")

    def __init__(self, images: list[bytearray], writable: bool) -> None:
        self.images = images
        self.flip = 0
        self.writable = writable


class LeanProtocol(asyncio.Protocol):
    def __init__(self, units: dict[int, LeanUnit], counters: Counters) -> None:
        self.units = units
        self.counters = counters
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        pos, end = 0, len(buf)
        while end - pos >= 8:
            tid, _, length, unit = _MBAP.unpack_from(buf, pos)
            stop = pos + 6 + length
            if stop > end:
                break
            fc = buf[pos + 7]
            out.append(self._answer(tid, unit, fc, buf, pos + 8, stop))
            pos = stop
        self.buf = buf[pos:]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _answer(self, tid: int, unit: int, fc: int, buf: bytes, at: int, stop: int) -> bytes:
        self.counters.requests += 1
        dev = self.units.get(unit)
        if dev is None:
            return _MBAP.pack(tid, 0, 3, unit) + bytes((fc | 0x80, 0x0B))
        address, count = _ADDR_COUNT.unpack_from(buf, at)
        if fc in (3, 4):
            if not dev.writable:
                dev.flip ^= 1
            image = dev.images[dev.flip]
            lo, hi = 2 * address, 2 * (address + count)
            if hi > len(image):
                return _MBAP.pack(tid, 0, 3, unit) + bytes((fc | 0x80, 0x02))
            return _HDR_READ.pack(tid, 0, 3 + hi - lo, unit, fc, hi - lo) + image[lo:hi]
        if fc == 6 and dev.writable:
            value = count
            dev.images[0][2 * address : 2 * address + 2] = value.to_bytes(2, "big")
            self.counters.wrote(unit, fc, address, [value])
            return _MBAP.pack(tid, 0, 6, unit) + buf[at - 1 : at + 4]
        if fc == 16 and dev.writable:
            raw = buf[at + 5 : at + 5 + 2 * count]
            dev.images[0][2 * address : 2 * address + 2 * count] = raw
            self.counters.wrote(unit, fc, address, list(struct.unpack(f">{count}H", raw)))
            return _MBAP.pack(tid, 0, 6, unit) + buf[at - 1 : at + 4]
        return _MBAP.pack(tid, 0, 3, unit) + bytes((fc | 0x80, 0x01))


async def start_lean(server: dict[str, Any], spec: dict[str, Any], counters: Counters) -> Any:
    units: dict[int, LeanUnit] = {}
    for unit_text, registers in server["units"].items():
        unit = int(unit_text)
        images = [float_image(unit, registers, bump) for bump in (0.0, 0.1)]
        units[unit] = LeanUnit(
            [bytearray(struct.pack(f">{registers}H", *image)) for image in images], False
        )
    for unit_text, registers in server.get("write_units", {}).items():
        units[int(unit_text)] = LeanUnit([bytearray(2 * registers)], True)
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(
        lambda: LeanProtocol(units, counters), HOST, int(server.get("port", 0))
    )
    return srv, int(srv.sockets[0].getsockname()[1])


# -- process --------------------------------------------------------------------------------


async def serve(spec: dict[str, Any]) -> None:
    counters = Counters(spec.get("write_log"))
    start = start_lean if spec.get("engine") == "lean" else start_pymodbus
    servers, ports = [], []
    for server in spec["servers"]:
        srv, port = await start(server, spec, counters)
        servers.append(srv)
        ports.append(port)
    print(json.dumps({"ports": ports}), flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := await reader.readline():
            if line.strip() == b"stats":
                stats = {"requests": counters.requests, "writes": counters.writes}
                print(json.dumps(stats), flush=True)
        done.set()

    task = asyncio.create_task(commands())
    await done.wait()
    task.cancel()
    for srv in servers:
        if hasattr(srv, "shutdown"):
            await srv.shutdown()
        else:
            srv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, help="JSON: engine, servers, write_log")
    args = parser.parse_args()
    asyncio.run(serve(json.loads(args.spec)))


if __name__ == "__main__":
    main()
