"""Runtime overhead: N virtual devices x P properties at 1 Hz.

Targets (foundation issue): 1,000 devices x 10 properties at 1 Hz for 60 s on <= 15% of one
core, RSS <= 100 MB, zero missed cycles. The baseline uses only the standard library and orjson:
one asyncio task per device ticking on a grid, producing the same number of values and
serialising one JSON report per device per tick — the least a runtime could do. Both run in
fresh subprocesses, alternating, so the ratio comes from one run.

    python benchmarks/bench_runtime.py [--devices 1000] [--props 10] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, rss_mb, write_result

WARMUP_S = 5.0


class CountingBus:
    """A bus that only counts: the cost measured is the runtime's, not a broker's."""

    def __init__(self) -> None:
        self.reports = 0
        self.values = 0

    async def start(self, on_desired: object) -> None:
        return None

    def publish_twins(self, report: object) -> None:
        self.reports += 1
        self.values += len(report.twins)  # type: ignore[attr-defined]

    def publish_state(self, ref: object, state: object, timestamp_ms: int) -> None:
        return None

    def device_added(self, device: object) -> None:
        return None

    def device_removed(self, ref: object) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def run_ours(devices: int, props: int, seconds: float) -> dict[str, object]:
    from mapper_sdk import MapperRuntime, Registry
    from mapper_sdk._supervisor import LATENESS_BUCKETS_MS
    from mapper_sdk.testing import bind_or_raise, make_device, make_model, model_property
    from mapper_sdk.virtual import VirtualDriver

    names = [f"p{i}" for i in range(props)]
    model = make_model("bench", *(model_property(n, "FLOAT", "ReadOnly") for n in names))
    visitors = {n: {"kind": "random_walk", "value": 50, "step": 1} for n in names}
    bound = [
        bind_or_raise(
            make_device(f"d{i}", model, {"seed": i}, visitors, collect_cycle_ms=1000),
            model,
            VirtualDriver,
        )
        for i in range(devices)
    ]
    registry = Registry()
    registry.add(VirtualDriver)
    bus = CountingBus()
    async with MapperRuntime(bus, registry=registry) as runtime:  # type: ignore[arg-type]
        await runtime.apply(bound)
        await asyncio.sleep(WARMUP_S)
        values0, cpu0, t0 = bus.values, cpu_seconds(), time.monotonic()
        for sup in runtime.devices.values():
            sup.stats.lateness = [0] * len(sup.stats.lateness)
            sup.schedule.missed = 0
        await asyncio.sleep(seconds)
        cpu1, t1, values1 = cpu_seconds(), time.monotonic(), bus.values
        missed = sum(s.schedule.missed for s in runtime.devices.values())
        hist = [0] * len(LATENESS_BUCKETS_MS)
        for sup in runtime.devices.values():
            hist = [a + b for a, b in zip(hist, sup.stats.lateness, strict=True)]
        rss = rss_mb()
    total = sum(hist)
    p99_bucket = next(
        LATENESS_BUCKETS_MS[i] for i in range(len(hist)) if sum(hist[: i + 1]) >= 0.99 * total
    )
    return {
        "cpu_fraction": (cpu1 - cpu0) / (t1 - t0),
        "values_per_s": (values1 - values0) / (t1 - t0),
        "cpu_us_per_value": (cpu1 - cpu0) / max(1, values1 - values0) * 1e6,
        "rss_mb": rss,
        "missed_cycles": missed,
        "tick_lateness_p99_ms_at_most": p99_bucket,
        "lateness_histogram": hist,
    }


async def run_baseline(devices: int, props: int, seconds: float) -> dict[str, object]:
    import random

    import orjson

    counters = {"values": 0}

    async def device(i: int) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(i)
        values = [50.0] * props
        t = loop.time() + rng.random()
        while True:
            await asyncio.sleep(max(0.0, t - loop.time()))
            t += 1.0
            values = [v + rng.uniform(-1, 1) for v in values]
            twin = {
                f"p{k}": {"actual": {"value": repr(v)}, "metadata": {"type": "float"}}
                for k, v in enumerate(values)
            }
            orjson.dumps({"event_id": "", "timestamp": int(time.time() * 1000), "twin": twin})
            counters["values"] += props

    tasks = [asyncio.create_task(device(i)) for i in range(devices)]
    await asyncio.sleep(WARMUP_S)
    v0, cpu0, t0 = counters["values"], cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(), time.monotonic()
    for task in tasks:
        task.cancel()
    return {
        "cpu_fraction": (cpu1 - cpu0) / (t1 - t0),
        "values_per_s": (counters["values"] - v0) / (t1 - t0),
        "cpu_us_per_value": (cpu1 - cpu0) / max(1, counters["values"] - v0) * 1e6,
        "rss_mb": rss_mb(),
    }


def child(kind: str, devices: int, props: int, seconds: float) -> None:
    runner = run_ours if kind == "ours" else run_baseline
    print(json.dumps(asyncio.run(runner(devices, props, seconds))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--props", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.devices, args.props, args.seconds)
        return
    runs: dict[str, list[dict[str, object]]] = {"baseline": [], "ours": []}
    for _ in range(args.rounds):
        for kind in ("baseline", "ours"):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                kind,
                "--devices",
                str(args.devices),
                "--props",
                str(args.props),
                "--seconds",
                str(args.seconds),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    ours, base = runs["ours"][-1], runs["baseline"][-1]
    result = {
        "devices": args.devices,
        "properties_per_device": args.props,
        "seconds": args.seconds,
        "ours": runs["ours"],
        "baseline": runs["baseline"],
        "cpu_ratio_ours_over_baseline": float(ours["cpu_fraction"])
        / max(1e-9, float(base["cpu_fraction"])),  # type: ignore[arg-type]
        "targets": {"cpu_fraction": 0.15, "rss_mb": 100, "missed_cycles": 0},
    }
    path = write_result("runtime", result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("baseline",)}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
