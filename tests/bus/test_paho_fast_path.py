"""The short QoS 1 path of the bus's paho client writes exactly the packets paho writes."""

from __future__ import annotations

import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mapper_sdk.bus._paho import _Client


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
