"""The pymodbus channel: one pymodbus client as a link's connection, for every transport the
lean TCP client (``tcp``) does not carry: RTU and ASCII on a serial line, RTU over TCP, UDP and
TLS.

Each request runs in a task of its own under ``asyncio.timeout`` (these links carry at most a
few hundred requests a second). On a serial line the channel keeps the silent gap between
frames: it waits out the rest of the gap after the previous frame before sending.
"""

from __future__ import annotations

import asyncio
import contextlib

from mapper_modbus import transport
from mapper_modbus.channel import Job, Owner
from mapper_modbus.config import ModbusProtocolConfig
from mapper_modbus.transport import Client

__all__ = ["StockChannel", "open_channel"]


class StockChannel:
    """A pymodbus client carrying one request at a time; times its own requests."""

    link_timed = False

    def __init__(self, owner: Owner, client: Client, gap: float) -> None:
        self.job: Job | None = None
        self._owner: Owner | None = owner
        self._client = client
        self._gap = gap
        self._last_frame = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._owner is not None and transport.is_connected(self._client)

    def start(self, job: Job) -> None:
        self.job = job
        self._task = asyncio.get_running_loop().create_task(self._run(job))

    def abandon(self) -> None:
        self.job = None

    def close(self) -> None:
        self._owner = None
        self.job = None
        if self._task is not None:
            self._task.cancel()
        transport.close_client(self._client)

    async def wait_closed(self) -> None:
        """Until the request task cancelled by ``close`` has ended."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        outcome: bytes | BaseException
        if self._gap:
            wait = self._last_frame + self._gap - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            async with asyncio.timeout(job.timeout):
                outcome = await transport.execute(self._client, job.op)
        except Exception as exc:  # the link sorts timeouts, replies, losses and bugs
            outcome = exc
        finally:
            if self._gap:
                self._last_frame = loop.time()
        owner = self._owner
        if owner is not None and self.job is job:
            self._task = None
            self.job = None
            owner.settle(self, job, outcome)


async def open_channel(owner: Owner, config: ModbusProtocolConfig, gap: float) -> StockChannel:
    """Open a pymodbus client for ``config`` within its timeout.

    Raises ``OSError``/``ValueError`` (bad TLS files, serial settings) or ``ConnectionError``
    when the connection could not be opened in time.
    """
    client = transport.open_client(config)
    try:
        async with asyncio.timeout(config.timeout_s):
            opened = await transport.connect_client(client, config)
    except TimeoutError:
        opened = False
    except BaseException:
        transport.close_client(client)
        raise
    if not opened:
        transport.close_client(client)
        raise ConnectionError(f"not connected within {config.timeout_s:g} s")
    return StockChannel(owner, client, gap)
