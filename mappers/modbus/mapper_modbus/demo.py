"""A simulated Modbus TCP power meter for ``mapper-gateway demo`` (entry point ``modbus`` of the
group ``mapper_sdk.demos``).

``simulator(directory)`` is an async context manager: it starts a pymodbus server on 127.0.0.1
(a free port), writes the meter's DeviceModel and Device YAMLs into ``directory`` and stops the
server on exit. Only the demo imports this module, so pymodbus is imported here and nowhere else
at import time.

Register map (unit id 1):

- input registers 0-1: voltage, float32 (ABCD), around 230 V, changes every second;
- input registers 2-3: current, float32 (ABCD), around 5 A, changes every second;
- input register 4: energy counter, uint16, +1 every second;
- holding register 10: setpoint, uint16, writable;
- coil 0: switch, writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

HOST = "127.0.0.1"
UNIT = 1
TICK = 1.0
"""Seconds between changes of the measured values."""
FILE = "demo-modbus-meter.yaml"
_INPUT, _HOLDING, _COIL = 4, 3, 1  # function codes naming the tables in the datastore API


def simulator(directory: Path) -> AbstractAsyncContextManager[int]:
    """Run the power meter while the context is open; the context value is its TCP port."""
    return _run(Path(directory))


def _float32(value: float) -> list[int]:
    """Two registers holding ``value`` as a big-endian (ABCD) float32."""
    return list(struct.unpack(">2H", struct.pack(">f", value)))


def _device() -> SimDevice:
    inputs = [0] * 8
    inputs[0:2], inputs[2:4] = _float32(230.0), _float32(5.0)
    blocks = (
        [SimData(0, values=[False] * 8, datatype=DataType.BITS)],  # coils
        [SimData(0, values=[False] * 8, datatype=DataType.BITS)],  # discrete inputs
        [SimData(0, values=[0] * 10 + [500] + [0] * 5, datatype=DataType.REGISTERS)],  # holding
        [SimData(0, values=inputs, datatype=DataType.REGISTERS)],  # input
    )
    return SimDevice(id=UNIT, simdata=blocks)


def _bound_port(server: Any) -> int:
    transport = server.transport
    sockets = getattr(transport, "sockets", None)
    sock = sockets[0] if sockets else transport.get_extra_info("socket")
    return int(sock.getsockname()[1])


async def _tick(server: Any) -> None:
    """Move voltage and current along slow sines and count up, once a second."""
    n = 0
    while True:
        await asyncio.sleep(TICK)
        n += 1
        voltage = 230.0 + 3.0 * math.sin(n / 10.0)
        current = 5.0 + 1.5 * math.sin(n / 7.0)
        await server.async_setValues(UNIT, _INPUT, 0, _float32(voltage) + _float32(current))
        await server.async_setValues(UNIT, _INPUT, 4, [n % 65536])


@asynccontextmanager
async def _run(directory: Path) -> AsyncIterator[int]:
    server: Any = ModbusTcpServer([_device()], address=(HOST, 0))  # pymodbus is partly untyped
    await server.serve_forever(background=True)
    ticker: asyncio.Task[None] | None = None
    try:
        port = _bound_port(server)
        await asyncio.to_thread(_write, directory, _yaml(port))
        ticker = asyncio.create_task(_tick(server))
        yield port
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await server.shutdown()


def _write(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FILE).write_text(text, encoding="utf-8")


def _yaml(port: int) -> str:
    return f"""\
# A power meter simulated by the Modbus demo simulator (mapper_modbus.demo), rewritten on every
# `mapper-gateway demo` start with the simulator's port. Model and instance in one file.
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: demo-power-meter
  namespace: default
spec:
  protocol: modbus
  properties:
    - name: voltage
      description: line voltage
      type: FLOAT
      accessMode: ReadOnly
      unit: V
    - name: current
      description: line current
      type: FLOAT
      accessMode: ReadOnly
      unit: A
    - name: energy
      description: energy counter (wraps at 65535)
      type: INT
      accessMode: ReadOnly
      unit: Wh
    - name: setpoint
      description: power limit
      type: INT
      accessMode: ReadWrite
      minimum: "0"
      maximum: "1000"
      unit: W
    - name: switch
      description: output relay
      type: BOOLEAN
      accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: demo-modbus-meter
  namespace: default
spec:
  deviceModelRef:
    name: demo-power-meter
  nodeName: edge-node
  protocol:
    protocolName: modbus
    configData:
      communicateMode: TCP
      ip: {HOST}
      port: {port}
      slaveID: {UNIT}
      timeout: 2000
  properties:
    - name: voltage
      visitors:
        protocolName: modbus
        configData: {{register: InputRegister, offset: 0, valueType: float32, byteOrder: ABCD}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: current
      visitors:
        protocolName: modbus
        configData: {{register: InputRegister, offset: 2, valueType: float32, byteOrder: ABCD}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: energy
      visitors:
        protocolName: modbus
        configData: {{register: InputRegister, offset: 4, valueType: uint16}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: setpoint
      visitors:
        protocolName: modbus
        configData: {{register: HoldingRegister, offset: 10, valueType: uint16}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: switch
      visitors:
        protocolName: modbus
        configData: {{register: CoilRegister, offset: 0}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
"""
