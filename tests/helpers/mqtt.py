"""A small asyncio MQTT client for tests: paho-mqtt 2.x driven by the running event loop.

paho's socket callbacks (``on_socket_open`` / ``..._close`` / ``..._register_write`` /
``..._unregister_write``) hand its socket to ``loop.add_reader`` / ``add_writer``, and a task calls
``loop_misc`` once a second for keepalive. No thread is started, so every paho callback runs on the
event loop and may touch asyncio objects directly.

    async with AsyncMqttClient("127.0.0.1", port) as client:
        await client.subscribe("a/+")
        await client.publish("a/b", b"x")
        message = await client.wait_for("a/b")

Received messages are kept twice: ``received`` (every message, never consumed) and an inbox from
which :meth:`AsyncMqttClient.wait_for` removes the first message matching a filter and predicate,
so successive waits return successive messages and a reply that came before the wait is not lost.

Every wait takes an explicit ``timeout`` (ruff ASYNC109 is waived on purpose): a test helper
should turn a hang into an assertion failure that says what it was waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from mapper_sdk.bus.topics import topic_matches

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttTimeout(AssertionError):
    """A wait in a test ran out of time (an AssertionError, so pytest shows it as a failure)."""


class AsyncMqttClient:
    """paho-mqtt on the asyncio event loop; see the module docstring.

    ``auto_reconnect`` reconnects after an unexpected disconnect (every ``reconnect_delay``
    seconds) and subscribes again to everything subscribed before, like EdgeCore does.
    ``on_message`` (optional) is called synchronously for each message, before it is queued.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        auto_reconnect: bool = False,
        reconnect_delay: float = 0.2,
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id or f"test-client-{next(_ids)}"
        self.keepalive = keepalive
        self.auto_reconnect = auto_reconnect
        self.reconnect_delay = reconnect_delay
        self.received: list[Message] = []
        self.errors: list[BaseException] = []
        self.connect_count = 0
        self._on_message = on_message
        self._inbox: list[Message] = []
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._connack: asyncio.Future[Any] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._early: dict[int, Any] = {}
        self._subscriptions: dict[str, int] = {}
        self._resubscribe_mids: set[int] = set()
        self._closing = False
        #: Set while connected with every subscription acknowledged (cleared on disconnect, set
        #: again once the subscriptions are restored after a reconnect).
        self.session_ready = asyncio.Event()

        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=True if protocol != MQTTProtocolVersion.MQTTv5 else None,
        )
        if username is not None:
            c.username_pw_set(username, password)
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_subscribe = self._cb_subscribe
        c.on_unsubscribe = self._cb_unsubscribe
        c.on_publish = self._cb_publish
        c.on_message = self._cb_message
        self.paho = c

    # --- life cycle --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Connect and wait for a successful CONNACK; raises ConnectionError if refused."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._connack = self._loop.create_future()
        # A TCP connect on loopback returns at once; paho then calls _on_socket_open.
        self.paho.connect(self.host, self.port, keepalive=self.keepalive)
        if self._misc_task is None:
            self._misc_task = asyncio.create_task(self._misc_loop())
        try:
            rc = await asyncio.wait_for(self._connack, timeout)
        except TimeoutError:
            raise MqttTimeout(f"no CONNACK from {self.host}:{self.port} in {timeout}s") from None
        if rc.is_failure:
            raise ConnectionError(f"broker refused the connection: {rc}")

    async def disconnect(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Disconnect cleanly (and stop reconnecting)."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
            self._reconnect_task = None
        if self.paho.is_connected():
            self.paho.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wait_disconnected(), timeout)
        self.paho._reset_sockets()  # no-op when already closed; frees the fds otherwise
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task
            self._misc_task = None
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    async def _wait_disconnected(self) -> None:
        while self.paho.socket() is not None:
            await self._next_event()

    async def __aenter__(self) -> AsyncMqttClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # --- operations --------------------------------------------------------------------------

    async def subscribe(self, *filters: str, qos: int = 1, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Subscribe and wait for the SUBACK; raises if any filter was refused."""
        rc, mid = self.paho.subscribe([(f, qos) for f in filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"subscribe failed: {rc}")
        codes = await self._wait_mid(mid, timeout, "SUBACK")
        for f, code in zip(filters, codes, strict=True):
            if code.is_failure:
                raise ConnectionError(f"subscription to {f!r} refused: {code}")
            self._subscriptions[f] = qos
        if self.connected and not self._resubscribe_mids:
            self.session_ready.set()

    async def unsubscribe(self, *filters: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        rc, mid = self.paho.unsubscribe(list(filters))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"unsubscribe failed: {rc}")
        await self._wait_mid(mid, timeout, "UNSUBACK")
        for f in filters:
            self._subscriptions.pop(f, None)

    def publish_nowait(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> int:
        """Queue a publish and return its mid (the PUBACK is not awaited)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic!r} failed: {info.rc}")
        return info.mid

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Publish and wait until it is written (QoS 0) or acknowledged (QoS 1/2)."""
        mid = self.publish_nowait(topic, payload, qos=qos, retain=retain)
        await self._wait_mid(mid, timeout, "PUBACK")

    async def wait_for(
        self,
        topic_filter: str,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Message:
        """Remove and return the first received message matching the filter (and predicate),
        waiting up to ``timeout`` seconds for it to arrive."""

        async def scan() -> Message:
            while True:
                for i, msg in enumerate(self._inbox):
                    if topic_matches(topic_filter, msg.topic) and (
                        predicate is None or predicate(msg)
                    ):
                        del self._inbox[i]
                        return msg
                await self._next_event()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            seen = [m.topic for m in self._inbox][-10:]
            raise MqttTimeout(
                f"no message on {topic_filter!r} within {timeout}s; unconsumed: {seen}"
            ) from None

    def drain(self, topic_filter: str = "#") -> list[Message]:
        """Remove and return every unconsumed message matching ``topic_filter``."""
        taken = [m for m in self._inbox if topic_matches(topic_filter, m.topic)]
        self._inbox = [m for m in self._inbox if not topic_matches(topic_filter, m.topic)]
        return taken

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until ``condition()`` is true; it is re-checked after every network event."""

        async def poll() -> None:
            while not condition():
                await self._next_event()

        try:
            await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise MqttTimeout(f"condition not met within {timeout}s") from None

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise MqttTimeout(f"not connected within {timeout}s") from None

    # --- internals ---------------------------------------------------------------------------

    async def _next_event(self) -> None:
        await self._wakeup.wait()
        self._wakeup.clear()

    def _pulse(self) -> None:
        self._wakeup.set()

    async def _wait_mid(self, mid: int, timeout: float, what: str) -> Any:  # noqa: ASYNC109
        if mid in self._early:
            return self._early.pop(mid)
        assert self._loop is not None
        fut = self._loop.create_future()
        self._pending[mid] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise MqttTimeout(f"no {what} for mid {mid} within {timeout}s") from None
        finally:
            self._pending.pop(mid, None)

    def _resolve(self, mid: int, value: Any) -> None:
        fut = self._pending.get(mid)
        if fut is None:
            self._early[mid] = value
        elif not fut.done():
            fut.set_result(value)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.paho.socket() is not None:
                self.paho.loop_misc()

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a test helper must never kill the event loop callback
            self.errors.append(exc)
        finally:
            self._pulse()

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, lambda: self._guard(self._read))
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read(self) -> None:
        self.paho.loop_read()

    def _write(self) -> None:
        self.paho.loop_write()

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        self._pulse()

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, lambda: self._guard(self._write))

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _cb_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if not rc.is_failure:
            self.connect_count += 1
            self._connected.set()
            if self.connect_count > 1 and self._subscriptions:
                # Clean session: subscriptions died with the old session.
                rc, mid = client.subscribe(list(self._subscriptions.items()))
                self._resubscribe_mids.add(mid)
            else:
                self.session_ready.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(rc)
        self._pulse()

    def _cb_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._connected.clear()
        self.session_ready.clear()
        self._resubscribe_mids.clear()
        self._pulse()
        if self.auto_reconnect and not self._closing and self._reconnect_task is None:
            assert self._loop is not None
            self._reconnect_task = self._loop.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        try:
            while not self._closing:
                await asyncio.sleep(self.reconnect_delay)
                try:
                    self.paho.reconnect()
                except OSError:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), 5.0)
                if self._connected.is_set():
                    return
        finally:
            self._reconnect_task = None

    def _cb_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        if mid in self._resubscribe_mids:
            self._resubscribe_mids.discard(mid)
            if any(c.is_failure for c in codes):
                self.errors.append(ConnectionError(f"resubscription refused: {list(codes)}"))
            elif not self._resubscribe_mids:
                self.session_ready.set()
        else:
            self._resolve(mid, list(codes))
        self._pulse()

    def _cb_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any
    ) -> None:
        self._resolve(mid, codes)
        self._pulse()

    def _cb_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        self._resolve(mid, rc)
        self._pulse()

    def _cb_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        self.received.append(message)
        try:
            if self._on_message is not None:
                self._on_message(message)
        except Exception as exc:
            self.errors.append(exc)
        self._inbox.append(message)
        self._pulse()
