"""A Modbus/TCP peer the test drives by hand, for what a well-behaved server never does.

``RawPeer`` listens on 127.0.0.1 and hands every request it receives to the test
(``await peer.next()``) as a ``Received``; the test decides what goes back on the wire and
when: an answer, an answer with another transaction id, one split into single bytes, garbage,
nothing, or a closed connection. Frames are built here with ``struct`` from the Modbus
Messaging on TCP/IP guide, independently of the driver's ``tcp`` module.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

HOST = "127.0.0.1"
WAIT_S = 5.0


def adu(tid: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header (protocol id 0, length = unit id + PDU) followed by ``pdu``."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def registers_pdu(fc: int, words: list[int]) -> bytes:
    return struct.pack(f">BB{len(words)}H", fc, 2 * len(words), *words)


@dataclass
class Received:
    """One request as it arrived, and the connection it came on."""

    tid: int
    unit: int
    function: int
    address: int
    count: int
    writer: asyncio.StreamWriter

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def answer_registers(self, words: list[int], *, tid: int | None = None) -> None:
        self.send(adu(self.tid if tid is None else tid, self.unit, registers_pdu(3, words)))


class RawPeer:
    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._requests: asyncio.Queue[Received] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[object]] = []

    async def __aenter__(self) -> RawPeer:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks)  # each ends at the end of its stream
        await self._server.wait_closed()

    async def next(self) -> Received:
        """The next request, waiting at most ``WAIT_S``."""
        async with asyncio.timeout(WAIT_S):
            return await self._requests.get()

    def pending(self) -> int:
        return self._requests.qsize()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                function, address, count = struct.unpack_from(">BHH", pdu)
                self._requests.put_nowait(Received(tid, unit, function, address, count, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
