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
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from mapper_sdk.bus.mqtt_settings import MqttSettings
from mapper_sdk.errors import EventBusError

log = logging.getLogger("mapper_sdk.mqtt")

OnMessage = Callable[[mqtt.MQTTMessage], None]
OnPublished = Callable[[int], None]


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
        self._loop_thread = threading.get_ident()
        self._misc: asyncio.TimerHandle | None = None
        self.client = self._make_client(will)

    def _make_client(self, will: tuple[str, bytes] | None) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.effective_client_id(),
            clean_session=s.clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,  # a desired value is acknowledged only after it is persisted
        )
        client.max_inflight_messages_set(s.max_inflight)
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
        # paho asks for this on every queued packet; on the loop thread (every publish) a
        # direct add_writer is enough, and only the connect in the worker thread needs the
        # thread-safe hop, whose wake-up write would otherwise cost a syscall per message.
        if self._writing or self._loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._writing = True
            self._loop.add_writer(sock, self._write)
        else:
            self._loop.call_soon_threadsafe(self._add_writer, sock)

    def _add_writer(self, sock: socket.socket) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_writer(sock, self._write)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._writing = False
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)

    def _read(self) -> None:
        rc = self.client.loop_read()
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
