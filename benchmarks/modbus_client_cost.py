"""CPU per Modbus/TCP request of three clients, one request in flight at a time.

- ``pymodbus``: ``AsyncModbusTcpClient.read_holding_registers`` (what the baselines of
  ``bench_modbus.py`` use);
- ``link``: the driver's shared link with its lean client (``mapper_modbus.connection.Link``
  over ``mapper_modbus.tcp``), what the mapper's TCP devices use;
- ``bare``: an ``asyncio.Protocol`` writing the same 12-byte frame and awaiting one future: the
  floor of any asyncio client here (one loop turn, one send, one recv per request).

Against ``modbus_sim.py --engine lean`` on core 1, the clients on core 0; reads of 20 registers
back to back; CPU time of this process per request (``time.process_time``), best of rounds.

    python benchmarks/modbus_client_cost.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
WARMUP = 1000


async def timed(one: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """(CPU µs per call, calls per second) of ``n`` calls after a warm-up."""
    for _ in range(WARMUP):
        await one()
    cpu0, wall0 = time.process_time(), time.monotonic()
    for _ in range(n):
        await one()
    cpu1, wall1 = time.process_time(), time.monotonic()
    return (cpu1 - cpu0) / n * 1e6, n / (wall1 - wall0)


async def pymodbus_client(port: int, n: int) -> tuple[float, float]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(HOST, port=port)
    await client.connect()
    try:
        return await timed(lambda: client.read_holding_registers(0, count=20, device_id=1), n)
    finally:
        client.close()


async def link_client(port: int, n: int) -> tuple[float, float]:
    from mapper_modbus.channel import Op
    from mapper_modbus.config import ModbusProtocolConfig
    from mapper_modbus.connection import LinkPool

    config = ModbusProtocolConfig.model_validate({"ip": HOST, "port": port})
    link = await LinkPool.acquire(config)
    op = Op(3, 1, 0, 20)
    try:
        return await timed(lambda: link.request(op, timeout=1.0), n)
    finally:
        await LinkPool.release(link)


class _Bare(asyncio.Protocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] | None = None

    def data_received(self, data: bytes) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(data)


async def bare_client(port: int, n: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_Bare, HOST, port)
    frame = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 20)

    def one() -> asyncio.Future[bytes]:
        protocol.answer = loop.create_future()
        transport.write(frame)
        return protocol.answer

    try:
        return await timed(one, n)
    finally:
        transport.close()


CLIENTS = {"pymodbus": pymodbus_client, "link": link_client, "bare": bare_client}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = {"engine": "lean", "servers": [{"units": {"1": 20}}]}
    cmd = [sys.executable, str(HERE / "modbus_sim.py"), "--spec", json.dumps(spec)]
    pin = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
    sim = subprocess.Popen(
        (["taskset", "-c", "1"] if pin else []) + cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        port = int(json.loads(sim.stdout.readline())["ports"][0])
        if pin:
            os.sched_setaffinity(0, {0})
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):  # alternated, so drifts of a shared machine hit all three
            for name, client in CLIENTS.items():
                cpu, rate = asyncio.run(client(port, args.requests))
                if name not in best or cpu < best[name][0]:
                    best[name] = (cpu, rate)
        for name, (cpu, rate) in best.items():
            print(f"{name:9} {cpu:6.1f} µs CPU per request  {rate:8.0f} requests/s")
        print(
            json.dumps({name: {"cpu_us": cpu, "per_s": rate} for name, (cpu, rate) in best.items()})
        )
    finally:
        assert sim.stdin is not None
        sim.stdin.close()
        sim.wait(10)


if __name__ == "__main__":
    main()
