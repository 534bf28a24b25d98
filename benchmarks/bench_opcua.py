"""OPC-UA driver throughput against a raw asyncua client, in the same run.

An asyncua server runs in a subprocess (its own core) with N Double variables. Three figures:

1. polling: values/s through the whole pipeline (driver -> supervisor -> twin engine -> a
   counting bus), polling as fast as the device answers, vs a raw asyncua loop that reads the
   same nodes with one batched Read per iteration (target >= 0.85x);
2. batching: the same pipeline with one Read per node (the peers' design) vs ours (>= 10x);
3. subscriptions: the server changes every variable every ``--change-ms``; notifications/s and
   client CPU per notification through the pipeline vs a raw asyncua subscription handler that
   only counts them (target >= 0.85x on CPU efficiency).

Phases alternate (raw, ours, raw, ours) and the better run of each counts.

    python benchmarks/bench_opcua.py [--nodes 50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, write_result

# -- the device: a server subprocess ----------------------------------------------------------


async def serve(port: int, nodes: int, change_ms: float) -> None:
    """Run the server until killed; ``change_ms`` > 0 changes every variable that often."""
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    ns = await server.register_namespace("urn:bench")
    obj = await server.nodes.objects.add_object(ua.NodeId("Bench", ns), f"{ns}:Bench")
    variables = [
        await obj.add_variable(ua.NodeId(f"v{i}", ns), f"{ns}:v{i}", float(i)) for i in range(nodes)
    ]
    async with server:
        print("ready", flush=True)
        n = 0
        while True:
            await asyncio.sleep(change_ms / 1000 if change_ms > 0 else 3600)
            n += 1
            for i, var in enumerate(variables):
                await var.write_value(ua.Variant(float(n * 1000 + i), ua.VariantType.Double))


@contextlib.contextmanager
def server_process(nodes: int, change_ms: float = 0) -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, __file__, "--serve", str(port), "--nodes", str(nodes)]
    proc = subprocess.Popen(
        [*args, "--change-ms", str(change_ms)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the server did not start")
        yield f"opc.tcp://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


# -- the pipeline -----------------------------------------------------------------------------


class CountingBus:
    """A bus that only counts the twin values it is given."""

    def __init__(self) -> None:
        self.values = 0

    async def start(self, on_desired: object) -> None:
        return None

    def publish_twins(self, report: Any) -> None:
        self.values += len(report.twins)

    def publish_state(self, ref: object, state: object, timestamp_ms: int) -> None:
        return None

    def device_added(self, device: object) -> None:
        return None

    def device_removed(self, ref: object) -> None:
        return None

    async def aclose(self) -> None:
        return None


def per_node_driver() -> Any:
    from mapper_opcua.driver import OpcUaDriver

    class PerNodeDriver(OpcUaDriver):
        """One Read request per property, as KubeEdge's and ThingsBoard's mappers do."""

        async def read(self, points: Sequence[Any]) -> list[Any]:
            results: list[Any] = []
            for point in points:
                results.extend(await super().read([point]))
            return results

    return PerNodeDriver


@contextlib.asynccontextmanager
async def pipeline(url: str, nodes: int, mode: str, driver: Any) -> AsyncIterator[CountingBus]:
    from mapper_sdk import MapperRuntime, Registry
    from mapper_sdk.testing import (
        FAST_SETTINGS,
        bind_or_raise,
        make_device,
        make_model,
        model_property,
    )

    names = [f"v{i}" for i in range(nodes)]
    model = make_model(
        "bench", *(model_property(n, "DOUBLE", "ReadOnly") for n in names), protocol="opcua"
    )
    # queueSize 10: every change is delivered, as to the raw handler (whose queue is unbounded)
    subscribed = {"mode": "subscribe", "publishingInterval": 50.0, "queueSize": 10}
    extra = subscribed if mode == "subscribe" else {}
    visitors = {n: {"nodeID": f"ns=2;s={n}", **extra} for n in names}
    # collectCycle 1 ms: the poll loop runs back to back (late ticks are skipped, not queued),
    # and every reading is reported, so the bus counts every value read.
    device = make_device("bench-1", model, {"url": url}, visitors, collect_cycle_ms=1)
    registry = Registry()
    registry.add(driver)
    bus = CountingBus()
    async with MapperRuntime(bus, registry=registry, settings=FAST_SETTINGS) as runtime:  # type: ignore[arg-type]
        await runtime.apply([bind_or_raise(device, model, driver)])
        while bus.values < nodes:  # noqa: ASYNC110 (connected and reporting; a counter)
            await asyncio.sleep(0.01)
        yield bus


async def measure(bus: CountingBus, seconds: float) -> tuple[float, float]:
    """(values/s, client CPU seconds per value) over ``seconds``."""
    start_values, start_cpu, started = bus.values, cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    values = bus.values - start_values
    cpu = cpu_seconds() - start_cpu
    return values / (time.perf_counter() - started), cpu / max(values, 1)


async def ours_polling(url: str, nodes: int, seconds: float, driver: Any) -> float:
    async with pipeline(url, nodes, "poll", driver) as bus:
        return (await measure(bus, seconds))[0]


async def raw_polling(url: str, nodes: int, seconds: float) -> float:
    from asyncua import Client, ua

    async with Client(url) as client:
        targets = [client.get_node(ua.NodeId(f"v{i}", 2)) for i in range(nodes)]
        deadline, reads = time.perf_counter() + seconds, 0
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            values = await client.read_values(targets)
            reads += len(values)
        return reads / (time.perf_counter() - started)


async def ours_subscribed(url: str, nodes: int, seconds: float) -> tuple[float, float]:
    from mapper_opcua.driver import OpcUaDriver

    async with pipeline(url, nodes, "subscribe", OpcUaDriver) as bus:
        return await measure(bus, seconds)


async def raw_subscribed(url: str, nodes: int, seconds: float) -> tuple[float, float]:
    from asyncua import Client, ua

    class Handler:
        count = 0

        def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
            self.count += 1

    handler = Handler()
    async with Client(url) as client:
        sub = await client.create_subscription(50, handler)
        await sub.subscribe_data_change(
            [client.get_node(ua.NodeId(f"v{i}", 2)) for i in range(nodes)]
        )
        while handler.count < nodes:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.01)
        start_values, start_cpu, started = handler.count, cpu_seconds(), time.perf_counter()
        await asyncio.sleep(seconds)
        values = handler.count - start_values
        cpu = cpu_seconds() - start_cpu
        await sub.delete()
        return values / (time.perf_counter() - started), cpu / max(values, 1)


async def run(nodes: int, seconds: float, change_ms: float) -> dict[str, Any]:
    from mapper_opcua.driver import OpcUaDriver

    result: dict[str, Any] = {"nodes": nodes, "seconds_per_phase": seconds}
    with server_process(nodes) as url:
        raw = max([await raw_polling(url, nodes, seconds) for _ in range(2)])
        ours = max([await ours_polling(url, nodes, seconds, OpcUaDriver) for _ in range(2)])
        per_node = await ours_polling(url, nodes, seconds, per_node_driver())
    result["polling"] = {
        "raw_batched_values_per_s": round(raw),
        "pipeline_values_per_s": round(ours),
        "ratio": round(ours / raw, 3),
        "target": 0.85,
    }
    result["batching"] = {
        "per_node_read_values_per_s": round(per_node),
        "batched_values_per_s": round(ours),
        "ratio": round(ours / per_node, 2),
        "target": 10,
    }
    with server_process(nodes, change_ms) as url:
        raw_runs = [await raw_subscribed(url, nodes, seconds) for _ in range(2)]
        ours_runs = [await ours_subscribed(url, nodes, seconds) for _ in range(2)]
    raw_rate, raw_cpu = min(raw_runs, key=lambda r: r[1])
    our_rate, our_cpu = min(ours_runs, key=lambda r: r[1])
    result["subscriptions"] = {
        "change_ms": change_ms,
        "raw_handler_notifications_per_s": round(raw_rate),
        "pipeline_notifications_per_s": round(our_rate),
        "rate_ratio": round(our_rate / raw_rate, 3),
        "raw_handler_cpu_us_per_notification": round(raw_cpu * 1e6, 1),
        "pipeline_cpu_us_per_notification": round(our_cpu * 1e6, 1),
        "cpu_efficiency_ratio": round(raw_cpu / our_cpu, 3),
        "target": 0.85,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--change-ms", type=float, default=20.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve, args.nodes, args.change_ms))
        return 0
    result = asyncio.run(run(args.nodes, args.seconds, args.change_ms))
    path = write_result("opcua", result)
    for section in ("polling", "batching", "subscriptions"):
        print(section, result[section])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
