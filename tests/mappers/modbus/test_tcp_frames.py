"""The lean Modbus/TCP client's frames, against pymodbus's framer as the reference, and its
stream handling (split frames, several frames in one read, stale transaction ids)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    WriteMultipleCoilsRequest,
    WriteMultipleCoilsResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from mapper_modbus.channel import BadReply, Channel, ExceptionReply, Job, Op
from mapper_modbus.tcp import TcpChannel, parse_response, request_frame

CLIENT = FramerSocket(DecodePDU(is_server=False))
SERVER = FramerSocket(DecodePDU(is_server=True))
TID, UNIT = 0x1234, 17


def reference_request(op: Op) -> ModbusPDU:
    ids: dict[str, Any] = {"dev_id": op.unit, "transaction_id": TID}
    fc, address = op.function, op.address
    if fc in (1, 2, 3, 4):
        kind = {1: ReadCoilsRequest, 2: ReadDiscreteInputsRequest,
                3: ReadHoldingRegistersRequest, 4: ReadInputRegistersRequest}[fc]  # fmt: skip
        return kind(address=address, count=op.count, **ids)
    if fc == 5:
        return WriteSingleCoilRequest(address=address, bits=[bool(op.values[0])], **ids)
    if fc == 6:
        return WriteSingleRegisterRequest(address=address, registers=list(op.values), **ids)
    if fc == 15:
        return WriteMultipleCoilsRequest(address, [bool(v) for v in op.values], **ids)
    return WriteMultipleRegistersRequest(address=address, registers=list(op.values), **ids)


OPS = [
    Op(1, UNIT, 0, 1),
    Op(1, UNIT, 100, 2000),
    Op(2, UNIT, 7, 13),
    Op(3, UNIT, 0, 125),
    Op(3, 0, 65535, 1),
    Op(4, 255, 40, 2),
    Op(5, UNIT, 3, 1, (1,)),
    Op(5, UNIT, 3, 1, (0,)),
    Op(6, UNIT, 9, 1, (0xBEEF,)),
    Op(15, UNIT, 20, 10, (1, 0, 1, 1, 0, 0, 0, 0, 1, 1)),
    Op(16, UNIT, 200, 3, (1, 0xFFFF, 0x8000)),
    Op(16, UNIT, 0, 123, tuple(range(123))),
]


@pytest.mark.parametrize("op", OPS, ids=lambda op: f"fc{op.function}-{op.count}")
def test_requests_are_framed_as_pymodbus_frames_them(op: Op) -> None:
    assert request_frame(TID, op) == CLIENT.buildFrame(reference_request(op))


@pytest.mark.parametrize(
    "op",
    [
        Op(3, UNIT, 0, 0),
        Op(3, UNIT, 0, 126),
        Op(1, UNIT, 0, 2001),
        Op(16, UNIT, 0, 124, tuple([0] * 124)),
        Op(15, UNIT, 0, 1969, tuple([0] * 1969)),
        Op(6, UNIT, 0, 1, (70000,)),
        Op(8, UNIT, 0, 1),
    ],
)
def test_requests_outside_the_specification_are_refused(op: Op) -> None:
    with pytest.raises(ValueError, match=r"FC|function code"):
        request_frame(TID, op)


def answer(pdu: ModbusPDU) -> bytes:
    pdu.transaction_id, pdu.dev_id = TID, UNIT
    return SERVER.buildFrame(pdu)


def test_register_answers_give_the_wire_bytes() -> None:
    frame = answer(ReadHoldingRegistersResponse(registers=[0x0102, 0xA0B0, 0]))
    assert parse_response(Op(3, UNIT, 0, 3), frame) == bytes.fromhex("0102a0b00000")
    frame = answer(ReadHoldingRegistersResponse(registers=[1, 2]))
    assert parse_response(Op(4, 0, 0, 2), frame[:7] + b"\x04" + frame[8:]) == b"\0\1\0\2"


def test_bit_answers_are_packed_and_padding_is_not_data() -> None:
    bits = [True, False, True, True, False, False, False, False, True, True, True]
    frame = answer(ReadCoilsResponse(bits=bits + [True] * 5))  # the device sets padding bits
    data = parse_response(Op(1, UNIT, 0, 11), frame)
    assert data == bytes([0b00001101, 0b00000111])


@pytest.mark.parametrize(
    ("op", "response"),
    [
        (Op(5, UNIT, 3, 1, (1,)), WriteSingleCoilResponse(address=3, bits=[True])),
        (Op(6, UNIT, 9, 1, (5,)), WriteSingleRegisterResponse(address=9, registers=[5])),
        (Op(15, UNIT, 20, 3, (1, 0, 1)), WriteMultipleCoilsResponse(address=20, count=3)),
        (Op(16, UNIT, 7, 2, (1, 2)), WriteMultipleRegistersResponse(address=7, count=2)),
    ],
)
def test_write_answers_echo_the_request(op: Op, response: ModbusPDU) -> None:
    assert parse_response(op, answer(response)) == b""


def test_exception_answers_raise_their_code() -> None:
    frame = answer(ExceptionResponse(3, 2))
    with pytest.raises(ExceptionReply) as caught:
        parse_response(Op(3, UNIT, 0, 1), frame)
    assert caught.value.code == 2
    with pytest.raises(BadReply):  # an exception for another function
        parse_response(Op(4, UNIT, 0, 1), frame)


@pytest.mark.parametrize(
    ("op", "response", "match"),
    [
        (Op(3, UNIT + 1, 0, 2), ReadHoldingRegistersResponse(registers=[1, 2]), "unit"),
        (Op(4, UNIT, 0, 2), ReadHoldingRegistersResponse(registers=[1, 2]), "function code"),
        (Op(3, UNIT, 0, 3), ReadHoldingRegistersResponse(registers=[1, 2]), "3 registers"),
        (Op(1, UNIT, 0, 9), ReadCoilsResponse(bits=[True] * 8), "9 bits"),
        (Op(16, UNIT, 8, 2, (1, 2)), WriteMultipleRegistersResponse(address=7, count=2), "7"),
        (Op(16, UNIT, 7, 3, (1, 2, 3)), WriteMultipleRegistersResponse(address=7, count=2), "3"),
    ],
)
def test_answers_that_do_not_fit_the_request_are_bad(
    op: Op, response: ModbusPDU, match: str
) -> None:
    with pytest.raises(BadReply, match=match):
        parse_response(op, answer(response))


def test_an_answer_whose_byte_count_disagrees_with_its_length_is_bad() -> None:
    frame = bytearray(answer(ReadHoldingRegistersResponse(registers=[1, 2])))
    frame[8] = 2  # says one register, carries two
    with pytest.raises(BadReply, match="byte count"):
        parse_response(Op(3, UNIT, 0, 1), bytes(frame))


# -- the protocol object on a stream: split and merged reads, stale transaction ids ---------


class Recorder:
    """The channel's owner and transport in one: what was written, settled and lost."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.settled: list[tuple[Job, bytes | BaseException]] = []
        self.lost: list[str] = []
        self.aborted = False

    # Owner
    def settle(self, channel: Channel, job: Job, outcome: bytes | BaseException) -> None:
        self.settled.append((job, outcome))

    def channel_lost(self, channel: Channel, job: Job | None, reason: str) -> None:
        self.lost.append(reason)


class FakeTransport(asyncio.Transport):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.recorder.written.append(bytes(data))

    def abort(self) -> None:
        self.recorder.aborted = True

    def close(self) -> None:
        self.recorder.aborted = True


async def channel_with_job(op: Op) -> tuple[TcpChannel, Recorder, Job, int]:
    recorder = Recorder()
    channel = TcpChannel(recorder)
    channel.connection_made(FakeTransport(recorder))
    job = Job(op, 1.0, 0, asyncio.get_running_loop().create_future(), write=False)
    channel.start(job)
    tid = int.from_bytes(recorder.written[-1][:2], "big")
    return channel, recorder, job, tid


def frame_for(tid: int, words: list[int]) -> bytes:
    pdu = ReadHoldingRegistersResponse(registers=words, transaction_id=tid, dev_id=UNIT)
    return SERVER.buildFrame(pdu)


async def test_an_answer_split_into_single_bytes_is_reassembled() -> None:
    channel, recorder, job, tid = await channel_with_job(Op(3, UNIT, 0, 2))
    frame = frame_for(tid, [7, 8])
    for n in range(len(frame)):
        assert recorder.settled == []
        channel.data_received(frame[n : n + 1])
    assert recorder.settled == [(job, b"\0\7\0\10")]
    assert channel.job is None


async def test_a_stale_answer_in_the_same_read_is_dropped() -> None:
    channel, recorder, job, tid = await channel_with_job(Op(3, UNIT, 0, 1))
    own = frame_for(tid, [2])
    channel.data_received(frame_for(tid - 1, [1]) + own[:5])  # stale + half of the answer
    assert recorder.settled == []
    assert channel.stale == 1
    channel.data_received(own[5:])
    assert recorder.settled == [(job, b"\0\2")]


async def test_consecutive_requests_get_consecutive_transaction_ids_that_wrap() -> None:
    channel, recorder, _, first = await channel_with_job(Op(3, UNIT, 0, 1))
    ids = [first]
    for _ in range(3):
        channel.abandon()
        channel.start(Job(Op(3, UNIT, 0, 1), 1.0, 0, asyncio.get_running_loop().create_future(),
                          write=False))  # fmt: skip
        ids.append(int.from_bytes(recorder.written[-1][:2], "big"))
    assert ids == [1, 2, 3, 4]
    channel._tid = 0xFFFF
    channel.abandon()
    channel.start(Job(Op(3, UNIT, 0, 1), 1.0, 0, asyncio.get_running_loop().create_future(),
                      write=False))  # fmt: skip
    assert recorder.written[-1][:2] == b"\x00\x01"


async def test_a_stream_out_of_step_breaks_the_connection() -> None:
    channel, recorder, _, _ = await channel_with_job(Op(3, UNIT, 0, 1))
    channel.data_received(b"\x00\x01\x00\x07\x00\x03\x01\x03")  # protocol id 7
    assert recorder.aborted
    channel.connection_lost(None)
    assert recorder.settled == []
    assert recorder.lost
    assert "not a Modbus/TCP frame" in recorder.lost[0]
