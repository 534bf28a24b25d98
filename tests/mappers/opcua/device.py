"""An asyncua server playing an OPC-UA device, in the test's own event loop.

It holds variables of many types (with numeric, string, GUID and opaque NodeIds), a method, a
counter that a timer changes, and counts the Read service calls it serves (server-side, through
asyncua's PreRead callback), so tests can tell one batched Read from one Read per node.
``restart`` closes the listening socket and every connection, then listens again on the same
port: a server restart as clients see it, while tests change values in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asyncua import Node, Server, ua, uamethod
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.server.binary_server_asyncio import BinaryServer

NAMESPACE = "urn:mapper-sdk:test-device"
TICK = 0.05
"""Seconds between changes of the ``counter`` variable."""

GUID = uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63")
OPAQUE = b"\x01\x02opaque"


@dataclass(frozen=True)
class Var:
    name: str
    variant: ua.VariantType
    value: Any
    twin: str  # the value as the twin text the mapper should report
    model_type: str


VARIABLES = (
    Var("flag", ua.VariantType.Boolean, True, "true", "BOOLEAN"),
    Var("small", ua.VariantType.Int16, -1234, "-1234", "INT"),
    Var("word", ua.VariantType.UInt16, 65000, "65000", "INT"),
    Var("count32", ua.VariantType.Int32, 123456, "123456", "INT"),
    Var("big", ua.VariantType.Int64, 2**40, str(2**40), "INT"),
    Var("ratio", ua.VariantType.Float, 1.5, "1.5", "FLOAT"),
    Var("level", ua.VariantType.Double, 2.25, "2.25", "DOUBLE"),
    Var("label", ua.VariantType.String, "hello", "hello", "STRING"),
    Var("series", ua.VariantType.Int32, [1, 2, 3], "1,2,3", "STRING"),
)


@dataclass
class DeviceServer:
    """Start with ``await DeviceServer.start()``; ``url`` is where it listens."""

    server: Server
    ns: int
    nodes: dict[str, Node]
    reads: int = 0
    nodes_read: int = 0
    calls: list[tuple[int, int]] = field(default_factory=list)
    _ticker: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self.server.bserver is not None
        return f"opc.tcp://127.0.0.1:{self.server.bserver.port}"

    def node_id(self, name: str) -> str:
        return self.nodes[name].nodeid.to_string()

    @classmethod
    async def start(cls, configure: Any = None, user_manager: Any = None) -> DeviceServer:
        """A started server on a free port; ``configure(server)`` runs before it listens."""
        logging.getLogger("asyncua").setLevel(logging.WARNING)
        server = Server(user_manager=user_manager)
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        if configure is not None:
            await configure(server)
        ns = await server.register_namespace(NAMESPACE)
        device = cls(server, ns, {})
        await device._populate()
        server.subscribe_server_callback(CallbackType.PreRead, device._on_read)
        await server.start()
        device._ticker = asyncio.create_task(device._tick())
        return device

    async def _populate(self) -> None:
        ns = self.ns
        obj = await self.server.nodes.objects.add_object(ua.NodeId("Device", ns), f"{ns}:Device")
        for var in VARIABLES:
            await self._variable(obj, ua.NodeId(var.name, ns), var.name, var.value, var.variant)
        await self._variable(obj, ua.NodeId(7001, ns), "numbered", 7, ua.VariantType.Int32)
        await self._variable(obj, ua.NodeId(GUID, ns), "guided", 8, ua.VariantType.Int32)
        await self._variable(obj, ua.NodeId(OPAQUE, ns), "opaque", 9, ua.VariantType.Int32)
        await self._variable(obj, ua.NodeId("counter", ns), "counter", 0, ua.VariantType.Int32)
        self.nodes["add"] = await obj.add_method(
            ua.NodeId("add", ns),
            f"{ns}:add",
            self._add,
            [ua.VariantType.Int32, ua.VariantType.Int32],
            [ua.VariantType.Int32],
        )

    async def _variable(
        self, obj: Node, node_id: ua.NodeId, name: str, value: Any, variant: ua.VariantType
    ) -> None:
        node = await obj.add_variable(node_id, f"{self.ns}:{name}", ua.Variant(value, variant))
        await node.set_writable()
        self.nodes[name] = node

    @uamethod  # type: ignore[misc]
    def _add(self, parent: ua.NodeId, a: int, b: int) -> int:
        self.calls.append((a, b))
        return a + b

    def _on_read(self, event: ServerItemCallback, _dispatcher: object) -> None:
        if event.is_external:
            self.reads += 1
            self.nodes_read += len(event.request_params.NodesToRead)

    async def _tick(self) -> None:
        counter = self.nodes["counter"]
        n = 0
        while True:
            await asyncio.sleep(TICK)
            n += 1
            await counter.write_value(ua.Variant(n, ua.VariantType.Int32))

    async def value(self, name: str) -> Any:
        return await self.nodes[name].read_value()

    async def data_type(self, name: str) -> ua.VariantType:
        return await self.nodes[name].read_data_type_as_variant_type()

    async def set(self, name: str, value: Any, variant: ua.VariantType) -> None:
        await self.nodes[name].write_value(ua.Variant(value, variant))

    def connections(self) -> int:
        """Client connections the server holds open now."""
        return sum(not t.is_closing() for t in self.server.iserver.asyncio_transports)

    def sessions(self) -> int:
        """Client sessions the server keeps, with or without a connection."""
        return len(self.server.iserver._external_sessions)

    async def restart(
        self,
        while_down: Iterable[tuple[str, Any, ua.VariantType]] = (),
        *,
        forget_sessions: bool = False,
    ) -> None:
        """Close every connection and the listener; apply ``while_down``; listen again.

        Sessions with subscriptions outlive their connection (Part 4 §6.7), as in a server that
        only lost its network; ``forget_sessions`` closes them too, as a restarted server
        process would have none.
        """
        bserver = self.server.bserver
        assert bserver is not None
        host, port = bserver.hostname, bserver.port
        await bserver.stop()
        if forget_sessions:
            for session in list(self.server.iserver._external_sessions.values()):
                await session.close_session(delete_subs=True)
        for name, value, variant in while_down:
            await self.set(name, value, variant)
        fresh = BinaryServer(self.server.iserver, host, port, self.server.limits)
        fresh.set_policies(self.server._policies)
        await fresh.start()
        self.server.bserver = fresh

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.server.stop()
