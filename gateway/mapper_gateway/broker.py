"""The embedded MQTT broker: amqtt in the gateway's own event loop, on 127.0.0.1.

Why amqtt in-process rather than a mosquitto subprocess: it installs from PyPI alone (the
``embedded-broker`` extra), so ``make run`` works on a fresh machine without system packages,
and there is no second process to supervise. Its limits are stated, not hidden: MQTT 3.1.1
only, roughly 4,000 QoS-1 messages/s, and it shares the gateway's CPU. It is for the demo and
small single-box setups; anything bigger should point ``--mqtt-url`` at a real broker.

One correction is needed: amqtt closes the connection of any client that publishes to a topic
beginning with ``$`` (its reading of MQTT-4.7.2-1, which only says that *wildcard* filters
must not match such topics). KubeEdge's event bus lives entirely under ``$hw/`` and ``$ke/``,
so messages on those prefixes are delivered through the broker's own internal-publish path.
This overrides one method of amqtt (and wraps its connection callback, to close what its
shutdown leaves open), which is why the extra caps amqtt below 0.13.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from mapper_sdk import ConfigError

log = logging.getLogger("mapper_gateway.broker")

KUBEEDGE_PREFIXES = ("$hw/", "$ke/")


def _broker_class() -> Any:
    try:
        from amqtt.broker import Broker  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            "no --mqtt-url was given and the embedded broker is not installed: "
            "pip install 'mapper-gateway[embedded-broker]', or pass --mqtt-url "
            f"tcp://HOST:PORT ({exc})"
        ) from exc

    class KubeEdgeBroker(Broker):  # type: ignore[misc]
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__(config)
            self.connections: set[asyncio.StreamWriter] = set()

        async def stream_connected(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
        ) -> None:
            self.connections.add(writer)
            try:
                await super().stream_connected(reader, writer, listener_name)
            finally:
                # amqtt can end a session without closing its socket: close it here.
                self.connections.discard(writer)
                writer.close()

        async def _handle_message_delivery(
            self, client_session: Any, handler: Any, wait_deliver: Any
        ) -> bool:
            message = wait_deliver.result()
            topic = getattr(message, "topic", None)
            if not (isinstance(topic, str) and topic.startswith(KUBEEDGE_PREFIXES)):
                return bool(
                    await super()._handle_message_delivery(client_session, handler, wait_deliver)
                )
            data = bytes(message.data)
            await self.internal_message_broadcast(topic, data)
            packet = getattr(message, "publish_packet", None)
            if packet is not None and packet.retain_flag:
                await self.retain_message(None, topic, data, message.qos)
            return True

    return KubeEdgeBroker


class EmbeddedBroker:
    """Start with ``await start()``; ``url`` is then the broker's ``tcp://`` address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def start(self) -> None:
        cls = _broker_class()
        wanted = self.port
        if wanted == 0 or not _port_free(self.host, wanted):
            self.port = _free_port(self.host)
            if wanted:
                log.info("port %d is taken; the embedded broker uses %d", wanted, self.port)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        # amqtt logs every connection at INFO; the gateway's own log says what matters.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = cls(config)
        await self._broker.start()
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            # amqtt leaves the sockets of sessions still open at shutdown to the garbage
            # collector; close them so no connection outlives the broker.
            for writer in list(self._broker.connections):
                writer.close()
            self._broker = None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
