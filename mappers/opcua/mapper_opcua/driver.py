"""The ``opcua`` driver: KubeEdge OPC-UA devices on asyncua.

Where things live:

- ``connection``: the asyncua Client (security, identity, limits, loss detection) and the one
  place where asyncua exceptions become SDK errors;
- ``nodes``: nodeID / browseName resolution and type discovery;
- ``convert``: OPC-UA values <-> Python values;
- ``subscription``: monitored items for ``mode: subscribe`` properties;
- this module: the ``Driver`` API. Polled properties due in a tick are read in one Read
  service call (split only at the server's MaxNodesPerRead); writes are typed by the node's
  DataType; ``mode: method`` properties call an OPC-UA method when written.

Method properties: writing the property calls the method with the value as its input (a
STRING value is split at commas when the method takes several inputs); the property then
reports the method's first output (or the input when the method returns nothing). They are
never polled. ``call_method`` calls one directly by property name or by the name of a Device
``methods[]`` entry whose first ``propertyNames`` item is a method property.
"""

from __future__ import annotations

from collections.abc import Sequence

from asyncua import ua

from mapper_opcua._ua import AttributeIds
from mapper_opcua.config import Mode, OpcUaProtocolConfig, OpcUaVisitorConfig
from mapper_opcua.connection import Connection, guard
from mapper_opcua.convert import (
    WireType,
    WriteRefused,
    from_data_value,
    from_variant_value,
    to_variant,
)
from mapper_opcua.nodes import MethodSignature, Target, method_signature, resolve_targets
from mapper_opcua.nodes import wire_type as learn_wire_type
from mapper_opcua.subscription import follow
from mapper_sdk.binding import BoundDevice, BoundProperty
from mapper_sdk.driver import DeviceState, Driver, Emit, Value
from mapper_sdk.errors import DeviceConnectError, DeviceProtocolError, DriverError

__all__ = ["OpcUaDriver", "WriteRefused"]

_READ_ATTEMPTS = 3
"""Reads sent per batch when the channel breaks under them and the session is resumed."""


class OpcUaDriver(Driver[OpcUaProtocolConfig, OpcUaVisitorConfig]):
    """One OPC-UA server session serving one Device."""

    protocol = "opcua"
    protocol_config_model = OpcUaProtocolConfig
    visitor_config_model = OpcUaVisitorConfig
    supports_subscribe = True

    def __init__(self, device: BoundDevice) -> None:
        super().__init__(device)
        self._conn: Connection | None = None
        self._targets: list[Target] = []
        self._read_ids: list[ua.ReadValueId | None] = []
        self._wire: dict[int, WireType] = {}  # learnt once per session, by property index
        self._methods: dict[int, MethodSignature] = {}
        self._outputs: dict[int, Value | DriverError] = {}  # last result of method properties

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        conn = Connection(self.config)
        self._conn = conn  # set first, so aclose releases a half-open connection
        await conn.open()
        visitors = [_visitor_or_none(p) for p in self.device.properties]
        with guard("resolve nodes"):
            self._targets = await resolve_targets(conn.client, conn.namespaces, visitors)
        self._read_ids = [
            ua.ReadValueId(NodeId=t, AttributeId=AttributeIds.Value)
            if isinstance(t, ua.NodeId)
            else None
            for t in self._targets
        ]

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def state(self) -> DeviceState:
        conn = self._conn
        if conn is None or conn.lost.is_set() or conn.resuming:
            return DeviceState.OFFLINE
        return DeviceState.ONLINE

    def _require(self) -> Connection:
        conn = self._conn
        if conn is None:
            raise DeviceConnectError(f"device {self.device.ref} is not connected")
        conn.check()
        return conn

    # -- reads ----------------------------------------------------------------------------

    def is_pushed(self, point: BoundProperty) -> bool:
        visitor = point.visitor
        return isinstance(visitor, OpcUaVisitorConfig) and visitor.mode is not Mode.POLL

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        conn = self._require()
        await conn.ready()
        results: list[Value | DriverError] = []
        batch: list[ua.ReadValueId] = []
        slots: list[int] = []
        for slot, point in enumerate(points):
            read_id = self._read_ids[point.index]
            target = self._targets[point.index]
            if isinstance(target, DriverError):
                results.append(target)
            elif _visitor(point).mode is Mode.METHOD:
                results.append(self._outputs.get(point.index, _NOT_CALLED))
            else:
                assert read_id is not None
                results.append(_NOT_CALLED)  # replaced below
                batch.append(read_id)
                slots.append(slot)
        if batch:
            values = await self._read_resuming(conn, batch)
            for slot, dv in zip(slots, values, strict=True):
                results[slot] = from_data_value(dv)
        return results

    async def _read_resuming(
        self, conn: Connection, ids: list[ua.ReadValueId]
    ) -> list[ua.DataValue]:
        """``_read_values``, sent again on the resumed session when the channel broke under it
        (reads are idempotent; writes and calls are not, and are never sent twice)."""
        for _ in range(_READ_ATTEMPTS - 1):
            resumes = conn.resumes
            try:
                return await self._read_values(conn, ids)
            except DeviceConnectError as exc:
                await conn.recover(exc, resumes)
        return await self._read_values(conn, ids)

    async def _read_values(self, conn: Connection, ids: list[ua.ReadValueId]) -> list[ua.DataValue]:
        """One Read service call, or one per MaxNodesPerRead nodes when the server caps it."""
        step = conn.limits.read or len(ids)
        values: list[ua.DataValue] = []
        with guard("read"):
            for start in range(0, len(ids), step):
                params = ua.ReadParameters(
                    NodesToRead=ids[start : start + step],
                    TimestampsToReturn=ua.TimestampsToReturn.Neither,  # nothing to decode
                )
                values.extend(await conn.client.uaclient.read(params))
        return values

    async def subscribe(self, points: Sequence[BoundProperty], emit: Emit) -> None:
        conn = self._require()
        monitored = []
        for point in points:
            target = self._targets[point.index]
            if isinstance(target, DriverError):
                emit(point, target)
            elif _visitor(point).mode is Mode.SUBSCRIBE:
                monitored.append((point, target))

        async def read_all(subscribed: Sequence[BoundProperty]) -> None:
            for point, value in zip(subscribed, await self.read(subscribed), strict=True):
                emit(point, value)

        await follow(conn, monitored, emit, read_all)

    # -- writes and methods ---------------------------------------------------------------

    async def write(self, point: BoundProperty, value: Value) -> None:
        conn = self._require()
        await conn.ready()
        node_id = self._target(point)
        if _visitor(point).mode is Mode.METHOD:
            signature = await self._signature(conn, point)
            several = isinstance(value, str) and len(signature.inputs) > 1
            args: list[Value] = [*str(value).split(",")] if several else [value]
            outputs = await self._call(conn, point, args)
            self._outputs[point.index] = outputs[0] if outputs else value
            return
        variant = to_variant(value, await self._wire_type(conn, point, node_id))
        with guard(f"write {point.name}"):
            (status,) = await conn.client.uaclient.write_attributes(
                [node_id], [ua.DataValue(variant)], AttributeIds.Value
            )
        if not status.is_good():
            raise DeviceProtocolError(f"write {point.name}: the server answered {status.name}")

    async def _wire_type(
        self, conn: Connection, point: BoundProperty, node_id: ua.NodeId
    ) -> WireType:
        wire = self._wire.get(point.index)
        if wire is None:
            forced = _visitor(point).wire_type
            with guard(f"read the DataType of {point.name}"):
                learnt = await learn_wire_type(conn.client, node_id)
            wire = WireType(ua.VariantType[forced], learnt.array) if forced else learnt
            self._wire[point.index] = wire
        return wire

    async def call_method(self, name: str, args: Sequence[Value] = ()) -> list[Value | DriverError]:
        """Call the OPC-UA method of property (or Device ``methods[]`` entry) ``name``; returns
        its outputs as Python values."""
        conn = self._require()
        await conn.ready()
        point = self._method_point(name)
        outputs = await self._call(conn, point, list(args))
        self._outputs[point.index] = outputs[0] if outputs else (args[0] if args else "")
        return outputs

    def _method_point(self, name: str) -> BoundProperty:
        point = self.device.property(name)
        if point is None:
            for method in self.device.device.spec.methods:
                if method.name == name and method.property_names:
                    point = self.device.property(method.property_names[0])
        if point is None or _visitor(point).mode is not Mode.METHOD:
            raise DriverError(f"{name!r} is neither a method property nor a Device method of one")
        return point

    async def _call(
        self, conn: Connection, point: BoundProperty, args: Sequence[Value]
    ) -> list[Value | DriverError]:
        signature = await self._signature(conn, point)
        if len(args) != len(signature.inputs):
            raise WriteRefused(
                f"{point.name} takes {len(signature.inputs)} input(s), got {len(args)}",
                reason="bad_type",
            )
        request = ua.CallMethodRequest(
            ObjectId=signature.object_id,
            MethodId=signature.method_id,
            InputArguments=[to_variant(a, w) for a, w in zip(args, signature.inputs, strict=True)],
        )
        with guard(f"call {point.name}"):
            (result,) = await conn.client.uaclient.call([request])
        if not result.StatusCode.is_good():
            raise DeviceProtocolError(
                f"call {point.name}: the server answered {result.StatusCode.name}"
            )
        return [from_variant_value(v.Value) for v in result.OutputArguments]

    async def _signature(self, conn: Connection, point: BoundProperty) -> MethodSignature:
        signature = self._methods.get(point.index)
        if signature is None:
            object_text = _visitor(point).object_id
            with guard(f"look up method {point.name}"):
                object_id = ua.NodeId.from_string(object_text) if object_text else None
                signature = await method_signature(conn.client, self._target(point), object_id)
            self._methods[point.index] = signature
        return signature

    def _target(self, point: BoundProperty) -> ua.NodeId:
        target = self._targets[point.index]
        if isinstance(target, DriverError):
            raise target
        return target


_NOT_CALLED = DriverError("the method has not been called yet")


def _visitor(point: BoundProperty) -> OpcUaVisitorConfig:
    visitor = point.visitor
    if not isinstance(visitor, OpcUaVisitorConfig):
        raise DriverError(f"{point.name} has no OPC-UA visitor configData")
    return visitor


def _visitor_or_none(point: BoundProperty) -> OpcUaVisitorConfig | None:
    visitor = point.visitor
    return visitor if isinstance(visitor, OpcUaVisitorConfig) else None
