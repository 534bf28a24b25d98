"""MQTT push (``pushMethod.mqtt``): publish each sample as JSON to the property's topic.

Upstream connects a new client per message and publishes the text
``time is <time>  <topic>: <value>`` (contract §5.6). We keep one long-lived session per broker
address, shared by every property that names it, driven on the event loop by the same
``PahoConnection`` as the event bus, and publish the ``Sample`` JSON object
(``{"device", "namespace", "name", "property", "value", "type", "timestamp"}``) with the CRD's
``qos`` and ``retained``. A batch counts as written when every QoS 1/2 publish is acknowledged;
if the session drops first, the batch is retried on a new session (at-least-once).

The broker address takes the URL schemes of ``MqttSettings.from_url`` (``tcp://``, ``mqtt://``,
``ssl://``...). The CRD has no credential fields; ``MAPPER_SINK_MQTT_USERNAME`` and
``MAPPER_SINK_MQTT_PASSWORD`` are read from the environment when a broker needs them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mapper_sdk.errors import ConfigError, MapperError
from mapper_sdk.models.device import PushMethodMqtt
from mapper_sdk.sinks._base import Sample, SinkError, require, secret

ACK_TIMEOUT = 10.0
"""Seconds to wait for the broker's acknowledgements of one batch."""

_client_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class MqttRoute:
    """Per-property settings: where and how one property's samples are published."""

    topic: str
    qos: int = 0
    retained: bool = False


@dataclass(frozen=True, slots=True)
class MqttSinkSettings:
    """One broker. Every property naming the same address shares the session."""

    address: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_crd(
        cls, crd: PushMethodMqtt, env: Mapping[str, str] | None = None
    ) -> tuple[MqttSinkSettings, MqttRoute]:
        if not crd.address.strip():
            raise ConfigError("pushMethod.mqtt.address is empty")
        if not crd.topic:
            raise ConfigError("pushMethod.mqtt.topic is empty")
        if any(c in crd.topic for c in "+#"):
            raise ConfigError(f"pushMethod.mqtt.topic {crd.topic!r}: wildcards cannot be published")
        settings = cls(
            address=crd.address.strip(),
            username=secret(env, "MAPPER_SINK_MQTT_USERNAME"),
            password=secret(env, "MAPPER_SINK_MQTT_PASSWORD"),
        )
        settings.broker()  # raises ConfigError for a bad address now, not at first write
        return settings, MqttRoute(crd.topic, crd.qos, crd.retained)

    def broker(self) -> Any:
        """The ``MqttSettings`` of our publishing session."""
        from mapper_sdk.bus.mqtt_settings import MqttSettings

        return MqttSettings.from_url(
            self.address,
            username=self.username,
            password=self.password,
            # A client id of its own: the event bus may share the broker, and two sessions
            # with one id would take turns kicking each other off.
            client_id=f"mapper-sdk-sink-{os.getpid()}-{next(_client_ids)}",
            clean_session=True,
        )

    def build(self) -> MqttSink:
        return MqttSink(self)


class MqttSink:
    """Publishes samples on one long-lived session per broker; reconnects on the next write."""

    def __init__(self, settings: MqttSinkSettings) -> None:
        require("paho.mqtt.client", "mqtt", "paho-mqtt")
        self.settings = settings
        self.broker = settings.broker()
        self.name = f"mqtt {self.broker.url}"
        self._conn: Any = None
        self._acks: dict[int, asyncio.Future[None]] = {}

    async def open(self) -> None:
        await self._connected()

    async def _connected(self) -> Any:
        conn = self._conn
        if conn is not None and not conn.closed.done():
            return conn
        from mapper_sdk.bus._paho import PahoConnection

        self._fail_acks()
        conn = PahoConnection(
            self.broker, on_message=lambda message: None, on_published=self._published
        )
        try:
            await conn.connect()
        except MapperError as exc:
            raise SinkError(f"{self.name}: {exc}") from exc
        self._conn = conn
        return conn

    async def write(self, batch: Sequence[Sample]) -> None:
        conn = await self._connected()
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[None]] = []
        try:
            for sample in batch:
                route = sample.route if isinstance(sample.route, MqttRoute) else None
                if route is None:
                    raise SinkError("sample without an MQTT topic")
                mid = conn.publish(route.topic, sample.to_json(), route.qos, route.retained)
                if route.qos > 0:
                    # Registered after publish(): the PUBACK is read by a later loop callback.
                    future = self._acks[mid] = loop.create_future()
                    waiting.append(future)
            if waiting:
                await self._wait_acks(conn, waiting)
        except MapperError as exc:
            conn.close()
            raise SinkError(f"{self.name}: {exc}") from exc

    async def _wait_acks(self, conn: Any, waiting: list[asyncio.Future[None]]) -> None:
        acked = asyncio.gather(*waiting)
        closed = asyncio.shield(conn.closed)
        try:
            async with asyncio.timeout(ACK_TIMEOUT):
                done, _ = await asyncio.wait({acked, closed}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise SinkError(f"no acknowledgement within {ACK_TIMEOUT} s") from None
        finally:
            closed.cancel()
            if not acked.done():
                acked.cancel()
        if acked not in done:
            raise SinkError(
                f"session closed before the broker acknowledged: {conn.closed.result()}"
            )

    def _published(self, mid: int) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _fail_acks(self) -> None:
        for future in self._acks.values():
            future.cancel()
        self._acks.clear()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        self._fail_acks()
        if conn is not None:
            await conn.disconnect()
