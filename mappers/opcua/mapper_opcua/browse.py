"""``mapper-sdk opcua browse URL``: walk a server's address space and write YAML for it.

The walk goes breadth first from a start node (Objects by default) along hierarchical
references, one Browse call per level, and keeps the Variables whose browse path matches
``--filter`` and whose namespace matches ``--namespace`` (every namespace but the standard
one by default). One Read call then learns DataType, ValueRank and AccessLevel of all of them.

The result is a v1beta1 DeviceModel (types from the DataTypes, accessMode from AccessLevel)
and a Device whose visitors carry ``nodeID`` and ``browseName``: valid against KubeEdge's CRD
schemas and ready for ``mapper-sdk validate``. Variables no twin can carry (structures) are
listed on stderr and left out.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from asyncua import ua

from mapper_opcua._ua import AttributeIds, Client, Node, UaError
from mapper_opcua.convert import MODEL_TYPES
from mapper_opcua.nodes import parse_node_id, variant_type
from mapper_sdk.models import PropertyType

__all__ = ["Variable", "browse", "main", "write_yaml"]

API_VERSION = "devices.kubeedge.io/v1beta1"


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable found by the walk."""

    node_id: ua.NodeId
    path: tuple[ua.QualifiedName, ...]
    type: PropertyType | None = None  # None: no twin can carry it
    writable: bool = False
    data_type: str = ""

    @property
    def browse_name(self) -> str:
        return "/".join(q.to_string() for q in self.path)


async def browse(
    client: Client,
    *,
    start: str = "i=85",
    depth: int = 4,
    namespaces: Sequence[int] | None = None,
    pattern: str | None = None,
) -> list[Variable]:
    """The variables below ``start`` (at most ``depth`` levels down), typed."""
    found = await _walk(client, parse_node_id(start, []), depth, namespaces, pattern)
    return await _typed(client, found)


async def _walk(
    client: Client,
    start: ua.NodeId,
    depth: int,
    namespaces: Sequence[int] | None,
    pattern: str | None,
) -> list[Variable]:
    regex = re.compile(pattern) if pattern else None
    level: list[tuple[Node, tuple[ua.QualifiedName, ...]]] = [(client.get_node(start), ())]
    seen = {start}
    found: list[Variable] = []
    for _ in range(depth):
        results = await client.browse_nodes([node for node, _ in level])
        below: list[tuple[Node, tuple[ua.QualifiedName, ...]]] = []
        for (_, path), (_, result) in zip(level, results, strict=True):
            for ref in result.References:
                node_id = ref.NodeId
                if node_id in seen or not _in(node_id, namespaces):
                    continue
                seen.add(node_id)
                child_path = (*path, ref.BrowseName)
                if ref.NodeClass == ua.NodeClass.Variable:
                    name = "/".join(q.to_string() for q in child_path)
                    if regex is None or regex.search(name):
                        found.append(Variable(node_id, child_path))
                elif ref.NodeClass == ua.NodeClass.Object:
                    below.append((client.get_node(node_id), child_path))
        if not below:
            break
        level = below
    return found


def _in(node_id: ua.NodeId, namespaces: Sequence[int] | None) -> bool:
    if namespaces is None:
        return node_id.NamespaceIndex != 0  # the standard namespace is the server's own
    return node_id.NamespaceIndex in namespaces


async def _typed(client: Client, found: list[Variable]) -> list[Variable]:
    attributes = (AttributeIds.DataType, AttributeIds.ValueRank, AttributeIds.AccessLevel)
    params = ua.ReadParameters()
    for var in found:
        for attribute in attributes:
            params.NodesToRead.append(ua.ReadValueId(NodeId=var.node_id, AttributeId=attribute))
    values = await client.uaclient.read(params) if found else []
    typed = []
    for i, var in enumerate(found):
        data_type, rank, access = (
            dv.Value.Value if dv.Value else None for dv in values[3 * i : 3 * i + 3]
        )
        typed.append(await _describe(client, var, data_type, rank, access))
    return typed


async def _describe(
    client: Client, var: Variable, data_type: Any, rank: Any, access: Any
) -> Variable:
    if not isinstance(data_type, ua.NodeId):
        return var
    try:
        vt = await variant_type(client, data_type)
    except UaError:
        return var
    model_type = MODEL_TYPES.get(vt)
    if model_type is not None and isinstance(rank, int) and rank >= 0:
        model_type = PropertyType.STRING  # arrays are comma-separated text
    writable = isinstance(access, int) and bool(access & ua.AccessLevelType.CurrentWrite)
    return Variable(var.node_id, var.path, model_type, writable, vt.name)


def _property_name(var: Variable, taken: set[str]) -> str:
    base = "-".join(q.Name for q in var.path[-2:])
    name = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-") or "value"
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name}-{n}"
    taken.add(unique)
    return unique


def documents(
    variables: Sequence[Variable], url: str, name: str, namespace: str = "default"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The DeviceModel and Device of the variables that a twin can carry."""
    taken: set[str] = set()
    model_props, device_props = [], []
    for var in variables:
        if var.type is None:
            continue
        prop = _property_name(var, taken)
        model_props.append(
            {
                "name": prop,
                "description": f"{var.browse_name} ({var.data_type})",
                "type": var.type.value,
                "accessMode": "ReadWrite" if var.writable else "ReadOnly",
            }
        )
        visitor = {"nodeID": var.node_id.to_string(), "browseName": var.browse_name}
        device_props.append(
            {
                "name": prop,
                "collectCycle": 1000,
                "reportCycle": 1000,
                "reportToCloud": True,
                "visitors": {"protocolName": "opcua", "configData": visitor},
            }
        )
    meta = {"namespace": namespace}
    model = {
        "apiVersion": API_VERSION,
        "kind": "DeviceModel",
        "metadata": {"name": f"{name}-model", **meta},
        "spec": {"protocol": "opcua", "properties": model_props},
    }
    device = {
        "apiVersion": API_VERSION,
        "kind": "Device",
        "metadata": {"name": name, **meta},
        "spec": {
            "deviceModelRef": {"name": f"{name}-model"},
            "nodeName": "edge-node",
            "protocol": {"protocolName": "opcua", "configData": {"url": url}},
            "properties": device_props,
        },
    }
    return model, device


def write_yaml(out: Path, model: dict[str, Any], device: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    name = device["metadata"]["name"]
    paths = [out / f"{name}-model.yaml", out / f"{name}-instance.yaml"]
    for path, doc in zip(paths, (model, device), strict=True):
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapper-sdk opcua browse",
        description="Walk an OPC-UA server and write a DeviceModel and Device for its variables.",
    )
    parser.add_argument("url", help="opc.tcp://host:port (anonymous, no security)")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for the YAML files")
    parser.add_argument("--filter", help="keep variables whose browse path matches this regex")
    parser.add_argument("--depth", type=int, default=4, help="levels below the start node")
    parser.add_argument(
        "--namespace", action="append", help="namespace index or URI to keep (repeatable)"
    )
    parser.add_argument("--start", default="i=85", help="NodeId to start from (default Objects)")
    parser.add_argument("--name", default="opcua-device", help="the Device's name")
    parser.add_argument("--timeout", type=float, default=4.0, help="request timeout in seconds")
    return parser


async def _run(args: argparse.Namespace) -> int:
    client = Client(args.url, timeout=args.timeout)
    async with client:
        namespaces = None
        if args.namespace:
            known = await client.get_namespace_array()
            namespaces = [int(n) if n.isdigit() else known.index(n) for n in args.namespace]
        found = await browse(
            client, start=args.start, depth=args.depth, namespaces=namespaces, pattern=args.filter
        )
    for var in found:
        if var.type is None:
            print(
                f"skipped {var.browse_name}: {var.data_type or 'its type'} is no twin value",
                file=sys.stderr,
            )
    model, device = documents(found, args.url, args.name)
    for path in write_yaml(args.out, model, device):
        print(path)
    print(f"{len(model['spec']['properties'])} propert(ies) from {len(found)} variable(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mapper-sdk opcua browse``."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except (OSError, TimeoutError, UaError, ValueError) as exc:
        print(f"mapper-sdk opcua browse: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
