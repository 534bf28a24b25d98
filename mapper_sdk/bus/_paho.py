"""Drive one paho-mqtt connection from the asyncio event loop, without paho's network thread.

paho calls back when its socket opens, closes or has data to write; we turn those into
``add_reader``/``add_writer`` on the running loop, so reads, writes, PUBACKs and incoming
messages are all handled on the loop thread. The one blocking step paho offers no alternative
for, the TCP (and TLS) connect, runs in a worker thread; the socket callbacks it triggers are
marshalled back with ``call_soon_threadsafe``.

One ``PahoConnection`` is one session attempt: after a disconnect, make a new one. The
reconnect policy belongs to the caller (the event bus), not to paho.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from mapper_sdk.bus.mqtt_settings import MqttSettings
from mapper_sdk.errors import EventBusError

log = logging.getLogger("mapper_sdk.mqtt")

OnMessage = Callable[[mqtt.MQTTMessage], None]
OnPublished = Callable[[int], None]

_READ_SIZE = 64 * 1024
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_PUBACK = int(mqtt.PUBACK)
_PUBLISH = int(mqtt.PUBLISH)
_DISCONNECT = int(mqtt.DISCONNECT)
_PUBLISH_QOS1 = bytes([_PUBLISH | 0x02])


# paho-mqtt internals the short path uses. They are not paho's public API, so the supported
# versions are pinned (pyproject: paho-mqtt >= 2.1, < 2.3, both tested); a client is refused
# with a clear message rather than misbehaving if an install brings a paho without them.
_PAHO_INTERNALS = (
    "_sock",
    "_in_packet",
    "_protocol",
    "_out_messages",
    "_inflight_messages",
    "_last_bytes_received",
    "_sock_recv",
    "_packet_handle",
    "_packet_queue",
    "_mid_generate",
    "_out_packet",
    "_packet_write",
)

_MAX_COALESCED = 256 * 1024
"""Bytes of queued packets joined into one ``send``."""


class _Client(mqtt.Client):
    """paho's client with a shorter path for what a QoS 1 publisher does most.

    ``publish_qos1`` queues a QoS 1 PUBLISH packet on paho's own queue (paho's ids, writes,
    keep-alive bookkeeping) without paho's per-message objects (``MQTTMessage``, an
    ``MQTTMessageInfo`` with its lock and condition); its PUBACK goes straight to
    ``on_puback``. paho reads every packet with at least three ``recv`` calls (type, length,
    body) and turns each PUBACK into a ``ReasonCode`` and a ``Properties`` object before its
    callback; here reads are buffered (``_READ_SIZE`` per ``recv``), and an MQTT 3.1.1 PUBACK
    for a message paho holds gets paho's own bookkeeping in a few lines. Everything else
    (other QoS, retained messages, subscriptions, incoming messages) takes paho's path. A
    message published this way is not kept for a resend by paho: the caller's outbox keeps it
    (one client is one session attempt anyway).
    """

    def __init__(self, *args: Any, on_puback: OnPublished, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing = [name for name in _PAHO_INTERNALS if not hasattr(self, name)]
        if missing:
            raise EventBusError(
                f"paho-mqtt {getattr(mqtt, '__version__', '?')} lacks what mapper-sdk's MQTT "
                f"bus relies on ({', '.join(missing)}): install paho-mqtt>=2.1,<2.3"
            )
        self._rbuf = bytearray()
        self._on_puback = on_puback
        self._qos1: set[int] = set()  # ids of publish_qos1 messages awaiting their PUBACK
        self._recvs_left = 1  # socket reads allowed in this read callback

    def read_turn(self) -> MQTTErrorCode:
        """Handle what one ``recv`` brings (and what is left of the previous one), then yield
        to the event loop: a busy link must not starve the loop's other callbacks. Whole
        PUBACKs at the front of the buffer are taken straight from it; anything else (and a
        PUBACK split across reads) goes through paho's reader."""
        self._recvs_left = 1
        while self._sock is not None:
            if self._in_packet["command"] == 0 and self._protocol != mqtt.MQTTv5:
                if not self._rbuf:
                    if not self._recvs_left:
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    try:
                        data = super()._sock_recv(_READ_SIZE)
                    except BlockingIOError:
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    except OSError:
                        return self.loop_read()  # paho meets the same error and handles it
                    if not data:
                        return self.loop_read()  # end of stream: paho's reader handles it
                    self._recvs_left -= 1
                    self._rbuf += data
                self._take_pubacks()
                if not self._rbuf:
                    continue
            rc = self.loop_read()  # stops after as many packets as paho expects, or when dry
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._rbuf:
                return rc
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _take_pubacks(self) -> None:
        buf = self._rbuf
        end = len(buf)
        i = 0
        while i + 4 <= end and buf[i] == _PUBACK and buf[i + 1] == 2:
            self._puback(buf[i + 2] << 8 | buf[i + 3])
            i += 4
        if i:
            del buf[:i]
            self._last_bytes_received = time.monotonic()  # paho's keep-alive clock

    def _puback(self, mid: int) -> None:
        if mid in self._qos1:
            self._qos1.discard(mid)
            self._on_puback(mid)
            return
        message = self._out_messages.pop(mid, None)
        if message is not None:  # else a PUBACK for nothing we hold: ignored, as paho does
            if message.qos > 0:
                self._inflight_messages -= 1
            message.info._set_as_published()
            self._on_puback(mid)

    def publish_qos1(self, topic: bytes, payload: bytes) -> int:
        """Queue a QoS 1 PUBLISH (MQTT 3.1.1, not retained); return its message id."""
        if self._sock is None:
            raise EventBusError("publish failed: not connected")
        mid = self._mid_generate()
        length = 4 + len(topic) + len(payload)  # topic length, topic, id, payload
        if length >= 268_435_456:
            raise EventBusError(f"publish failed: a payload of {len(payload)} bytes is too large")
        size = bytearray()
        while True:  # MQTT's variable-length integer
            byte, length = length & 0x7F, length >> 7
            size.append(byte | 0x80 if length else byte)
            if not length:
                break
        packet = b"".join(
            (_PUBLISH_QOS1, size, len(topic).to_bytes(2, "big"), topic, mid.to_bytes(2, "big"),
             payload)
        )  # fmt: skip
        self._qos1.add(mid)
        self._packet_queue(_PUBLISH, packet, mid, 1)
        return mid

    def _packet_write(self) -> MQTTErrorCode:
        # paho sends each queued packet with its own send() call: on loopback, the kernel's
        # whole TCP path for one segment per reported device. Runs of packets that need
        # nothing from paho once written (everything but a QoS 0 PUBLISH, which calls
        # on_publish, and a DISCONNECT, which closes) are joined first, so a loop turn's
        # reports leave in one send. A partial send keeps the joined rest at the head of the
        # queue, as paho does with any packet.
        queue = self._out_packet
        if len(queue) > 1:
            packets = list(queue)
            queue.clear()
            run: list[Any] = []
            size = 0
            for packet in packets:
                if not _joinable(packet):
                    _flush_run(run, queue)
                    queue.append(packet)
                    size = 0
                    continue
                if size >= _MAX_COALESCED:
                    _flush_run(run, queue)
                    size = 0
                run.append(packet)
                size += packet["to_process"]
            _flush_run(run, queue)
        return super()._packet_write()

    def _sock_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            if not self._recvs_left:
                raise BlockingIOError  # paho's "try again later"; the selector calls us back
            self._recvs_left -= 1
            data = super()._sock_recv(_READ_SIZE)
            if len(data) <= bufsize:
                return data
            buf += data
        chunk = bytes(buf[:bufsize])
        del buf[:bufsize]
        return chunk

    def _packet_handle(self) -> MQTTErrorCode:
        packet = self._in_packet
        if (
            packet["command"] & 0xF0 == _PUBACK
            and packet["remaining_length"] == 2
            and self._protocol != mqtt.MQTTv5
        ):
            self._puback(int.from_bytes(packet["packet"][:2], "big"))
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_handle()


def _flush_run(run: list[Any], queue: Any) -> None:
    """Queue ``run`` (joinable packets, only the first may be partly written) as one packet."""
    if len(run) == 1:
        queue.append(run[0])
    elif run:
        first = run[0]
        joined = b"".join([first["packet"][first["pos"] :], *(p["packet"] for p in run[1:])])
        queue.append(
            {
                "command": first["command"],
                "mid": first["mid"],
                "qos": first["qos"],
                "pos": 0,
                "to_process": len(joined),
                "packet": joined,
                "info": None,
            }
        )
    run.clear()


def _joinable(packet: Any) -> bool:
    command: int = packet["command"] & 0xF0
    if command == _PUBLISH:
        return bool(packet["qos"])
    return command != _DISCONNECT


class PahoConnection:
    """One MQTT session on the current event loop."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_message: OnMessage,
        on_published: OnPublished,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.settings = settings
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._on_published = on_published
        self._connack: asyncio.Future[bool] = self._loop.create_future()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._sock: socket.socket | None = None
        self._writing = False  # a writer callback is registered for the socket
        self._write_soon: asyncio.Handle | None = None  # a write at the end of this loop turn
        self._loop_thread = threading.get_ident()
        self._misc: asyncio.TimerHandle | None = None
        self.client = self._make_client(will)

    def _make_client(self, will: tuple[str, bytes] | None) -> _Client:
        s = self.settings
        client = _Client(
            CallbackAPIVersion.VERSION2,
            on_puback=self._on_published,
            client_id=s.effective_client_id(),
            clean_session=s.clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,  # a desired value is acknowledged only after it is persisted
        )
        # The event bus keeps its own window (MqttSettings.max_inflight). paho's would only add
        # cost: with a limit set it scans every message it holds on every PUBACK.
        client.max_inflight_messages_set(0)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(
                ca_certs=s.ca_file,
                certfile=s.cert_file,
                keyfile=s.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        return client

    async def connect(self) -> bool:
        """Open the session; returns whether the broker kept our previous session."""
        s = self.settings
        try:
            async with asyncio.timeout(max(10.0, s.keepalive)):
                await asyncio.to_thread(self.client.connect, s.host, s.port, s.keepalive)
                return await self._connack
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self.close()
            raise EventBusError(f"cannot connect to {s.url}: {exc or type(exc).__name__}") from exc

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        """Queue a publish; returns its message id (PUBACK arrives via ``on_published``)."""
        if qos == 1 and not retain:  # the client speaks MQTT 3.1.1 (_make_client)
            return self.client.publish_qos1(topic.encode(), payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise EventBusError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def subscribe(self, filters: list[str], qos: int) -> None:
        result, _ = self.client.subscribe([(f, qos) for f in filters])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise EventBusError(f"subscribe failed: {mqtt.error_string(result)}")

    def ack(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    def close(self) -> None:
        """Drop the connection at once (no DISCONNECT: the broker sends our will)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._finish("closed")

    async def disconnect(self) -> None:
        """Say DISCONNECT (no will) and wait briefly for the socket to close."""
        if not self.closed.done():
            self.client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.shield(self.closed)
        self._finish("disconnected")

    # -- paho callbacks (always on the loop thread, except _socket_open: see below) -----

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if self._connack.done():
            return
        if rc.is_failure:
            self._connack.set_exception(EventBusError(f"broker refused the connection: {rc}"))
        else:
            self._connack.set_result(bool(flags.session_present))

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._finish(str(rc))

    def _handle_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        self._on_message(message)

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        self._on_published(mid)

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Called inside client.connect(), i.e. in the worker thread.
        self._loop.call_soon_threadsafe(self._attach, sock)

    def _attach(self, sock: socket.socket) -> None:
        self._sock = sock
        # Many small QoS 1 packets in a row: without NODELAY, Nagle holds each one back until
        # the previous is acknowledged, which caps a window of 100 at a few thousand msg/s.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._read)
        self._schedule_misc()

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        self._finish("socket closed")

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho asks for this when it queues a packet and nothing was waiting. On the loop
        # thread the packets queued during this turn are written together once the turn's
        # callbacks ran, straight to the socket; a writer callback is registered only when the
        # socket cannot take everything. The connect, in the worker thread, needs the
        # thread-safe hop.
        if self._writing or self._write_soon is not None or self._loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._write_soon = self._loop.call_soon(self._write_now)
        else:
            self._loop.call_soon_threadsafe(self._add_writer, sock)

    def write_now(self) -> None:
        """Write what paho has queued now instead of at the end of this loop turn."""
        if self._write_soon is not None:
            self._write_soon.cancel()
            self._write_now()

    def _write_now(self) -> None:
        try:  # _write_soon stays set meanwhile: paho's register call from loop_write is ignored
            if self._sock is None or self.closed.done() or self._writing:
                return
            self._write()
        finally:
            self._write_soon = None
        if self._sock is not None and self.client.want_write():
            self._add_writer(self._sock)

    def _add_writer(self, sock: socket.socket) -> None:
        if not self._writing and not self.closed.done():
            self._writing = True
            self._loop.add_writer(sock, self._write)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._writing:
            self._writing = False
            with contextlib.suppress(Exception):
                self._loop.remove_writer(sock)

    def _read(self) -> None:
        rc = self.client.read_turn()
        if _QUICKACK is not None and self._sock is not None:
            # Acknowledge what we just read at once instead of after the kernel's delayed-ACK
            # timer (up to 40 ms). Brokers keep Nagle on by default (mosquitto's
            # set_tcp_nodelay is false): a broker with a small segment still unacknowledged by
            # us holds the next one (a delta, a PUBACK) until our ACK comes. The kernel resets
            # this flag by itself, so it is set again after every read.
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._finish(f"read failed: {mqtt.error_string(rc)}")

    def _write(self) -> None:
        rc = self.client.loop_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._finish(f"write failed: {mqtt.error_string(rc)}")

    def _schedule_misc(self) -> None:
        # loop_misc sends PINGREQ and notices a missing PINGRESP: our dead-link detector.
        if self.closed.done():
            return
        if self.client.loop_misc() == MQTTErrorCode.MQTT_ERR_NO_CONN and self._connack.done():
            self._finish("keepalive lost")
            return
        self._misc = self._loop.call_later(1.0, self._schedule_misc)

    def _finish(self, reason: str) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if self._write_soon is not None:
            self._write_soon.cancel()
            self._write_soon = None
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)
                self._loop.remove_writer(self._sock)
        if not self._connack.done():
            self._connack.set_exception(
                EventBusError(f"connection closed before CONNACK: {reason}")
            )
            self._connack.exception()  # mark retrieved: nobody may be waiting any more
        if not self.closed.done():
            self.closed.set_result(reason)
