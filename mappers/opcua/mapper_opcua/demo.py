"""A simulated OPC-UA boiler for ``mapper-gateway demo`` (entry point ``opcua`` of the group
``mapper_sdk.demos``).

``simulator(directory)`` is an async context manager: it starts an asyncua server on 127.0.0.1
(a free port; starting takes about 1.5 s), writes the boiler's DeviceModel and Device YAMLs into
``directory`` and stops the server on exit. Only the demo imports this module, so asyncua is
imported here and nowhere else at import time.

Variables below ``Objects/Boiler``: ``temperature`` (Double, changes every second, subscribed),
``pressure`` (Double, changes every second, polled), ``setpoint`` (Double, writable) and
``burner`` (Boolean, writable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

HOST = "127.0.0.1"
NAMESPACE = "urn:mapper-sdk:demo-boiler"
TICK = 1.0
"""Seconds between changes of temperature and pressure."""
FILE = "demo-opcua-boiler.yaml"


def simulator(directory: Path) -> AbstractAsyncContextManager[str]:
    """Run the boiler while the context is open; the context value is its endpoint URL."""
    return _run(Path(directory))


async def _tick(temperature: Node, pressure: Node) -> None:
    n = 0
    while True:
        await asyncio.sleep(TICK)
        n += 1
        celsius = 65.0 + 5.0 * math.sin(n / 8.0)
        bar = 1.5 + 0.2 * math.sin(n / 5.0)
        await temperature.write_value(ua.Variant(round(celsius, 2), ua.VariantType.Double))
        await pressure.write_value(ua.Variant(round(bar, 3), ua.VariantType.Double))


@asynccontextmanager
async def _run(directory: Path) -> AsyncIterator[str]:
    logging.getLogger("asyncua").setLevel(logging.WARNING)  # its INFO lines would flood the demo
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{HOST}:0")
    server.set_server_name("mapper-sdk demo boiler")
    # Demo only: no encryption, no signing, anonymous access, on loopback. Never do this on a
    # network; configure Basic256Sha256 + SignAndEncrypt and certificates instead.
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NAMESPACE)
    boiler = await server.nodes.objects.add_object(f"ns={ns};s=Boiler", f"{ns}:Boiler")
    nodes: dict[str, Node] = {}
    for name, value, variant in (
        ("temperature", 65.0, ua.VariantType.Double),
        ("pressure", 1.5, ua.VariantType.Double),
        ("setpoint", 70.0, ua.VariantType.Double),
        ("burner", True, ua.VariantType.Boolean),
    ):
        node = await boiler.add_variable(
            f"ns={ns};s={name}", f"{ns}:{name}", ua.Variant(value, variant)
        )
        if name in ("setpoint", "burner"):
            await node.set_writable()
        nodes[name] = node
    await server.start()
    ticker: asyncio.Task[None] | None = None
    try:
        assert server.bserver is not None
        url = f"opc.tcp://{HOST}:{server.bserver.port}"
        await asyncio.to_thread(_write, directory, _yaml(url, ns))
        ticker = asyncio.create_task(_tick(nodes["temperature"], nodes["pressure"]))
        yield url
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await server.stop()


def _write(directory: Path, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FILE).write_text(text, encoding="utf-8")


def _yaml(url: str, ns: int) -> str:
    return f"""\
# A boiler simulated by the OPC-UA demo simulator (mapper_opcua.demo), rewritten on every
# `mapper-gateway demo` start with the simulator's port. Model and instance in one file.
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: demo-boiler
  namespace: default
spec:
  protocol: opcua
  properties:
    - name: temperature
      description: water temperature (pushed by an OPC-UA subscription)
      type: DOUBLE
      accessMode: ReadOnly
      unit: degC
    - name: pressure
      description: water pressure (polled)
      type: DOUBLE
      accessMode: ReadOnly
      unit: bar
    - name: setpoint
      description: target temperature
      type: DOUBLE
      accessMode: ReadWrite
      minimum: "30"
      maximum: "90"
      unit: degC
    - name: burner
      description: burner enabled
      type: BOOLEAN
      accessMode: ReadWrite
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: demo-opcua-boiler
  namespace: default
spec:
  deviceModelRef:
    name: demo-boiler
  nodeName: edge-node
  protocol:
    protocolName: opcua
    configData:
      url: {url}
      # Demo only (a loopback simulator): no security. Use Basic256Sha256 and SignAndEncrypt
      # with certificates for real devices.
      securityPolicy: None
      securityMode: None
  properties:
    - name: temperature
      visitors:
        protocolName: opcua
        configData: {{nodeID: "ns={ns};s=temperature", mode: subscribe}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: pressure
      visitors:
        protocolName: opcua
        configData: {{nodeID: "ns={ns};s=pressure"}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: setpoint
      visitors:
        protocolName: opcua
        configData: {{nodeID: "ns={ns};s=setpoint"}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
    - name: burner
      visitors:
        protocolName: opcua
        configData: {{nodeID: "ns={ns};s=burner"}}
      collectCycle: 1000
      reportCycle: 1000
      reportToCloud: true
"""
