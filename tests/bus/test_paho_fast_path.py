"""The short QoS 1 path of the bus's paho client writes exactly the packets paho writes."""

from __future__ import annotations

import socket

import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from mapper_sdk.bus._paho import _Client
from mapper_sdk.errors import EventBusError


class _Socket:
    """Enough of a socket for packets to queue (nothing is written: no writer is registered)."""

    def close(self) -> None:
        pass


def _client(acked: list[int]) -> _Client:
    client = _Client(
        CallbackAPIVersion.VERSION2,
        on_puback=acked.append,
        client_id="t",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client._sock = _Socket()  # type: ignore[assignment]  # "connected": packets only queue
    client.on_socket_register_write = lambda *args: None  # so paho does not write them itself
    return client


@pytest.mark.parametrize("size", [0, 1, 100, 127, 128, 16_000, 16_383, 16_384, 70_000])
def test_qos1_packet_is_the_one_paho_builds(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    ours, theirs = _client([]), _client([])
    mid = ours.publish_qos1(b"$hw/events/device/ns/d/twin/update", payload)
    info = theirs.publish("$hw/events/device/ns/d/twin/update", payload, qos=1)
    assert mid == info.mid
    assert bytes(ours._out_packet[0]["packet"]) == bytes(theirs._out_packet[0]["packet"])


def test_puback_of_a_qos1_publish_reaches_the_callback_once() -> None:
    acked: list[int] = []
    client = _client(acked)
    mid = client.publish_qos1(b"t", b"p")
    for _ in range(2):  # a repeated PUBACK is ignored
        client._in_packet["command"] = 0x40
        client._in_packet["remaining_length"] = 2
        client._in_packet["packet"] = bytearray(mid.to_bytes(2, "big"))
        client._packet_handle()
    assert acked == [mid]


def test_pubacks_are_read_whole_split_and_between_other_packets() -> None:
    acked: list[int] = []
    received: list[bytes] = []
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client = _client(acked)
    client._sock = ours  # type: ignore[assignment]
    client.on_message = lambda c, u, message: received.append(message.payload)
    mids = [client.publish_qos1(b"t", b"p") for _ in range(4)]
    puback = [b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids]
    publish = b"\x30\x06\x00\x01tabc"  # QoS 0 PUBLISH of b"abc" on "t"
    try:
        broker.sendall(puback[0] + puback[1][:3])  # the second PUBACK split across reads
        assert client.read_turn() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert acked == mids[:1]
        broker.sendall(puback[1][3:] + publish + puback[2] + puback[3])
        assert client.read_turn() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert acked == mids
        assert received == [b"abc"]
        assert client.read_turn() == MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing to read: no wait
        broker.close()
        assert client.read_turn() != MQTTErrorCode.MQTT_ERR_SUCCESS  # the broker went away
    finally:
        broker.close()
        ours.close()
        client._sock = None


def test_a_paho_without_the_internals_used_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import paho.mqtt.client as mqtt

    _client([])  # the installed paho has them all
    monkeypatch.delattr(mqtt.Client, "_packet_queue")
    with pytest.raises(EventBusError, match=r"_packet_queue\).*paho-mqtt>=2.1,<2.3"):
        _client([])


class _ShortWrites:
    """A socket that takes at most ``limit`` bytes per send and records every send."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        chunk = bytes(data[: self.limit])
        self.sends.append(chunk)
        return len(chunk)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("limit", [1 << 20, 7])
def test_queued_packets_leave_joined_in_paho_order(limit: int) -> None:
    """QoS 1 publishes queued in one turn go out in one send (or as few as the socket takes),
    byte for byte what paho would write; a QoS 0 publish still gets its on_publish."""
    client = _client([])
    published: list[int] = []
    client.on_publish = lambda c, u, mid, rc, props: published.append(mid)
    sock = _ShortWrites(limit)
    client._sock = sock  # type: ignore[assignment]
    for i in range(5):
        client.publish_qos1(b"t/a", b"%d" % i)
    qos0 = client.publish("t/b", b"zero", qos=0)
    for i in range(3):
        client.publish_qos1(b"t/c", b"x" * (i + 1))
    expected = b"".join(bytes(p["packet"]) for p in client._out_packet)
    while client.want_write():
        assert client.loop_write() in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
    client._sock = None
    assert b"".join(sock.sends) == expected
    assert published == [qos0.mid]
    if limit > len(expected):
        # five joined, the QoS 0 one alone (paho calls back after it), three joined
        assert len(sock.sends) == 3
