"""Finding the nodes behind properties, and learning their types.

At connect, every visitor's ``nodeID`` is parsed (``nsu=`` resolved against the server's
namespace array, which may differ after a server restart) and every ``browseName``-only visitor
is resolved with one TranslateBrowsePathsToNodeIds call. A property whose node cannot be found
gets a ``DriverError`` that its reads return, without failing the others.

Types are learnt lazily and once per session: a node's DataType and ValueRank (one Read of two
attributes) for writes, a method's InputArguments for calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asyncua import ua
from asyncua.common.ua_utils import data_type_to_variant_type

from mapper_opcua._ua import AttributeIds, Client, Node, ObjectIds, UaError, UaStatusCodeError
from mapper_opcua.config import OpcUaVisitorConfig
from mapper_opcua.convert import WireType, is_good
from mapper_sdk.errors import DriverError

__all__ = ["MethodSignature", "Target", "parse_node_id", "resolve_targets", "wire_type"]

Target = ua.NodeId | DriverError
"""A property's node, or why it has none."""


def parse_node_id(text: str, namespaces: Sequence[str]) -> ua.NodeId:
    """A NodeId from its text; ``nsu=<uri>`` becomes the URI's index on this server."""
    node_id = ua.NodeId.from_string(text)
    if isinstance(node_id, ua.ExpandedNodeId) and node_id.NamespaceUri:
        uri = node_id.NamespaceUri
        if uri not in namespaces:
            raise ValueError(f"the server has no namespace {uri!r}")
        return ua.NodeId(node_id.Identifier, ua.Int16(namespaces.index(uri)), node_id.NodeIdType)
    return node_id


def _relative_path(browse_name: str) -> str:
    # A bare "2:Boiler/2:Temp" is meant below Objects along hierarchical references ("/").
    return browse_name if browse_name[:1] in "/.<" else "/" + browse_name


async def resolve_targets(
    client: Client, namespaces: Sequence[str], visitors: Sequence[OpcUaVisitorConfig | None]
) -> list[Target]:
    """The node of every visitor, in order: parsed ids, then all browse paths in one call."""
    targets: list[Target] = []
    by_path: dict[int, str] = {}
    for i, visitor in enumerate(visitors):
        if visitor is None:
            targets.append(DriverError("the property has no OPC-UA visitor configData"))
        elif visitor.node_id is not None:
            try:
                targets.append(parse_node_id(visitor.node_id, namespaces))
            except (ValueError, UaError) as exc:
                targets.append(DriverError(f"nodeID {visitor.node_id!r}: {exc}"))
        else:
            assert visitor.browse_name is not None  # the config requires one of the two
            by_path[i] = visitor.browse_name
            targets.append(DriverError("unresolved"))
    if by_path:
        paths = [_relative_path(p) for p in by_path.values()]
        results = await client.translate_browsepaths(
            ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder)), paths
        )
        for (i, path), result in zip(by_path.items(), results, strict=True):
            targets[i] = _path_target(path, result)
    return targets


def _path_target(path: str, result: ua.BrowsePathResult) -> Target:
    if not result.StatusCode.is_good() or not result.Targets:
        return DriverError(f"browseName {path!r} not found below Objects: {result.StatusCode.name}")
    return result.Targets[0].TargetId  # type: ignore[no-any-return]


async def variant_type(client: Client, data_type: ua.NodeId) -> ua.VariantType:
    """The built-in type that carries values of ``data_type`` (enumerations: Int32)."""
    number = data_type.Identifier if data_type.NamespaceIndex == 0 else None
    if isinstance(number, int) and 0 < number <= 25:
        return ua.VariantType(number)
    return await data_type_to_variant_type(Node(client.uaclient.session, data_type))


async def wire_type(client: Client, node_id: ua.NodeId) -> WireType:
    """What the node really holds: DataType and ValueRank in one Read."""
    params = ua.ReadParameters()
    for attribute in (AttributeIds.DataType, AttributeIds.ValueRank):
        params.NodesToRead.append(ua.ReadValueId(NodeId=node_id, AttributeId=attribute))
    data_type, rank = await client.uaclient.read(params)
    if data_type.StatusCode is not None:
        data_type.StatusCode.check()
    assert data_type.Value is not None
    vt = await variant_type(client, data_type.Value.Value)
    is_array = bool(is_good(rank) and rank.Value and rank.Value.Value >= 0)
    return WireType(vt, is_array)


@dataclass(frozen=True, slots=True)
class MethodSignature:
    """Where a method lives and the types of its input arguments."""

    object_id: ua.NodeId
    method_id: ua.NodeId
    inputs: tuple[WireType, ...]


async def method_signature(
    client: Client, method_id: ua.NodeId, object_id: ua.NodeId | None
) -> MethodSignature:
    """The method's owner (its parent unless given) and input argument types."""
    method = Node(client.uaclient.session, method_id)
    if object_id is None:
        parent = await method.get_parent()
        if parent is None:
            raise DriverError(f"method {method_id.to_string()} has no parent object; set objectID")
        object_id = parent.nodeid
    inputs: list[WireType] = []
    try:
        arguments = await (await method.get_child("0:InputArguments")).read_value()
    except UaStatusCodeError:
        arguments = []  # a method without inputs has no InputArguments property
    for argument in arguments:
        vt = await variant_type(client, argument.DataType)
        inputs.append(WireType(vt, argument.ValueRank >= 0))
    return MethodSignature(object_id, method_id, tuple(inputs))
