"""pymodbus behind one narrow interface: open a client for a protocol config, run one request.

Nothing else in the package sees a pymodbus type (``stock`` drives these clients; the lean
Modbus/TCP client in ``tcp`` needs none). ``execute`` returns a response's data as the
bytes on the wire (registers big-endian, bits packed as Modbus packs them) or raises
``ExceptionReply`` (the device answered with an exception code), ``LinkLost`` or ``BadReply``.

pymodbus's own recovery is switched off: its reconnect loop (``reconnect_delay=0``), its retries
(``retries=0``) and its habit of closing a connection after a few unanswered requests, which
would cut every slave on a shared link because one of them is dead. The SDK supervisor owns
reconnection and the bus scheduler owns timeouts and retries.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Hashable
from typing import TypedDict

from pymodbus import FramerType
from pymodbus.client import (
    AsyncModbusSerialClient,
    AsyncModbusTcpClient,
    AsyncModbusTlsClient,
    AsyncModbusUdpClient,
)
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from mapper_modbus.channel import BadReply, ExceptionReply, LinkLost, Op
from mapper_modbus.codec import bits_to_bytes, registers_to_bytes
from mapper_modbus.config import CommunicateMode, ModbusProtocolConfig
from mapper_modbus.tables import FunctionCode

__all__ = [
    "BadReply",
    "Client",
    "ExceptionReply",
    "LinkLost",
    "Op",
    "close_client",
    "connect_client",
    "describe",
    "execute",
    "is_connected",
    "link_key",
    "open_client",
]

Client = AsyncModbusTcpClient | AsyncModbusUdpClient | AsyncModbusSerialClient

# pymodbus keeps its own response timer; ours (asyncio.timeout in the scheduler) must fire first,
# so that pymodbus never counts an unanswered request against the connection.
_LIBRARY_TIMEOUT_FACTOR = 2.0
_NEVER_DISCONNECT = 2**31

_FRAMERS = {
    CommunicateMode.TCP: FramerType.SOCKET,
    CommunicateMode.UDP: FramerType.SOCKET,
    CommunicateMode.RTU_OVER_TCP: FramerType.RTU,
    CommunicateMode.RTU: FramerType.RTU,
    CommunicateMode.ASCII: FramerType.ASCII,
}


def link_key(config: ModbusProtocolConfig) -> Hashable:
    """What identifies a physical link: devices with equal keys share one connection.

    A serial port is one link whatever its framing or speed: it can be opened only once, so
    devices that disagree on its settings are refused when they join (``serial_settings``).
    """
    if config.communicate_mode.is_serial:
        return ("serial", config.serial_name)
    tls = (config.ca_file, config.cert_file, config.key_file)
    return (config.communicate_mode.value, config.ip, config.resolved_port, tls)


def serial_settings(config: ModbusProtocolConfig) -> tuple[object, ...]:
    """The settings every device on one serial port must agree on."""
    c = config
    return (c.communicate_mode, c.baud_rate, c.data_bits, c.parity, c.stop_bits, c.rs485_enabled)


def describe(config: ModbusProtocolConfig) -> str:
    """The link as a human names it, for messages: ``TCP 10.0.0.5:502``, ``RTU /dev/ttyS0``."""
    if config.communicate_mode.is_serial:
        return f"{config.communicate_mode} {config.serial_name}"
    return f"{config.communicate_mode} {config.ip}:{config.resolved_port}"


def tls_context(config: ModbusProtocolConfig) -> ssl.SSLContext:
    """Client context for Modbus/TLS: verify the server, present our certificate if given.

    Raises ``OSError`` or ``ssl.SSLError`` when a file is missing or unreadable.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.ca_file)
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


def open_client(config: ModbusProtocolConfig) -> Client:
    """A pymodbus client for ``config``, not yet connected (TLS reads its key files here)."""
    timeout = config.timeout_s * _LIBRARY_TIMEOUT_FACTOR
    host, port, mode = config.ip or "", config.resolved_port, config.communicate_mode
    client: Client
    if mode is CommunicateMode.TLS:
        client = AsyncModbusTlsClient(
            host, port=port, sslctx=tls_context(config), **_no_recovery(timeout)
        )
    elif mode is CommunicateMode.UDP:
        client = AsyncModbusUdpClient(host, port=port, **_no_recovery(timeout))
    elif mode.is_serial:
        client = AsyncModbusSerialClient(
            config.serial_name or "",
            framer=_FRAMERS[mode],
            baudrate=config.baud_rate,
            bytesize=config.data_bits,
            parity=config.parity.value,
            stopbits=_stop_bits(config.stop_bits),
            **_no_recovery(timeout),
        )
    else:
        client = AsyncModbusTcpClient(
            host, port=port, framer=_FRAMERS[mode], **_no_recovery(timeout)
        )
    client.set_max_no_responses(_NEVER_DISCONNECT)
    return client


class _Recovery(TypedDict):
    reconnect_delay: float
    timeout: float
    retries: int


def _no_recovery(timeout: float) -> _Recovery:
    return {"reconnect_delay": 0.0, "timeout": timeout, "retries": 0}


def _stop_bits(value: float) -> int:
    # pyserial takes 1, 1.5 or 2; pymodbus annotates int but passes the value through.
    return int(value) if value.is_integer() else value  # type: ignore[return-value]


async def connect_client(client: Client, config: ModbusProtocolConfig) -> bool:
    """Open the connection (the caller bounds the time); False if it could not be opened."""
    if not await client.connect():
        return False
    if config.rs485_enabled:
        _enable_rs485(client)
    return True


def _enable_rs485(client: Client) -> None:
    # pymodbus does not expose pyserial's RS485 mode; set it on the port it opened. Adapters that
    # switch direction in hardware refuse the ioctl, and they need nothing, so a refusal is fine.
    from serial.rs485 import RS485Settings  # type: ignore[import-untyped]

    port = getattr(client.ctx.transport, "sync_serial", None)
    if port is not None:
        with contextlib.suppress(OSError, ValueError):
            port.rs485_mode = RS485Settings()


def is_connected(client: Client) -> bool:
    return bool(client.connected)


def close_client(client: Client) -> None:
    """Close without raising: used on paths that are already handling a failure."""
    # A broken transport may fail to close; it is dropped either way.
    with contextlib.suppress(Exception):
        client.close()


async def execute(client: Client, op: Op) -> bytes:
    """Send ``op`` and wait for its response (without a deadline: the caller sets one).

    Returns the data bytes of a read and ``b""`` for a write.
    """
    try:
        response = await _send(client, op)
    except ConnectionException as exc:
        raise LinkLost(str(exc)) from exc
    except ModbusException as exc:
        raise BadReply(str(exc)) from exc
    if response.isError():
        raise ExceptionReply(response.exception_code)
    return _data(response, op)


async def _send(client: Client, op: Op) -> ModbusPDU:
    fc, unit, address = op.function, op.unit, op.address
    if fc == FunctionCode.READ_COILS:
        return await client.read_coils(address, count=op.count, device_id=unit)
    if fc == FunctionCode.READ_DISCRETE_INPUTS:
        return await client.read_discrete_inputs(address, count=op.count, device_id=unit)
    if fc == FunctionCode.READ_HOLDING_REGISTERS:
        return await client.read_holding_registers(address, count=op.count, device_id=unit)
    if fc == FunctionCode.READ_INPUT_REGISTERS:
        return await client.read_input_registers(address, count=op.count, device_id=unit)
    if fc == FunctionCode.WRITE_SINGLE_COIL:
        return await client.write_coil(address, bool(op.values[0]), device_id=unit)
    if fc == FunctionCode.WRITE_SINGLE_REGISTER:
        return await client.write_register(address, op.values[0], device_id=unit)
    if fc == FunctionCode.WRITE_MULTIPLE_COILS:
        return await client.write_coils(address, [bool(v) for v in op.values], device_id=unit)
    if fc == FunctionCode.WRITE_MULTIPLE_REGISTERS:
        return await client.write_registers(address, list(op.values), device_id=unit)
    raise ValueError(f"function code {fc} is not used by this driver")


def _data(response: ModbusPDU, op: Op) -> bytes:
    fc = op.function
    if fc in (FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS):
        # pymodbus pads bits to whole bytes; the padding is not data
        if len(response.bits) < op.count:
            raise BadReply(f"asked for {op.count} bits, got {len(response.bits)}")
        return bits_to_bytes(response.bits[: op.count])
    if fc in (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS):
        if len(response.registers) != op.count:
            raise BadReply(f"asked for {op.count} registers, got {len(response.registers)}")
        return registers_to_bytes(response.registers)
    return b""
