"""Loading benchmark: N Device YAML files (10 properties each) plus their models.

Compares, in one process and alternating rounds (baseline, ours, baseline, ours, ...):

- baseline: a bare ``yaml.load(f, Loader=yaml.CSafeLoader)`` loop over the same files, with no
  project code at all;
- ours: ``loader.load_paths`` + ``loader.bind_all`` with a registry holding one small driver:
  safe parsing, validation, unknown-field checks, model lookup, binding and driver configs.

It also times one cold run (a fresh interpreter: imports + load + bind). Target: ours/baseline
<= 1.0 and <= 3 s for 10,000 devices. Results go to ``benchmarks/results/load.json``.

    python benchmarks/bench_load.py                 # 10,000 devices, 2 rounds
    python benchmarks/bench_load.py --count 1000    # quick
    python benchmarks/bench_load.py --profile       # cProfile of our path, top functions
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mapper_sdk import loader  # noqa: E402
from mapper_sdk._registry import Registry  # noqa: E402
from mapper_sdk.driver import Driver, DriverConfig  # noqa: E402

PROTOCOL = "bench-modbus"
REGISTERS = ("HoldingRegister", "InputRegister", "CoilRegister", "DiscreteInputRegister")


# --- a small driver, so binding validates configData as it would in production ----------------


class BenchProtocol(DriverConfig):
    host: str
    port: int = 502
    slave_id: int = Field(default=1, alias="slaveID")
    timeout: int = 1000


class BenchVisitor(DriverConfig):
    table: str = Field(alias="register")  # "register" would shadow ABCMeta.register
    offset: int
    limit: int = 1
    scale: float = 1.0
    is_swap: bool = False
    is_register_swap: bool = False
    data_type: str = "float"


class BenchDriver(Driver[BenchProtocol, BenchVisitor]):
    protocol = PROTOCOL
    protocol_config_model = BenchProtocol
    visitor_config_model = BenchVisitor

    async def connect(self) -> None:
        pass

    async def read(self, points: Sequence[Any]) -> list[Any]:
        return []

    async def aclose(self) -> None:
        pass


# --- input files, as KubeEdge users write them -------------------------------------------------


def device_yaml(index: int, model: str) -> str:
    rnd = random.Random(index)
    name = f"sensor-{index:05d}"
    lines = [
        "# Temperature/pressure sensor on the plant floor (generated for the load benchmark)",
        "apiVersion: devices.kubeedge.io/v1beta1",
        "kind: Device",
        "metadata:",
        f"  name: {name}",
        "  namespace: default",
        "  labels:",
        f"    site: plant-{index % 7}",
        "    manufacturer: acme",
        "spec:",
        "  deviceModelRef:",
        f"    name: {model}",
        f"  nodeName: edge-node-{index % 13}   # the edge node the device is wired to",
        "  protocol:",
        f"    protocolName: {PROTOCOL}",
        "    configData:",
        f'      host: "10.0.{index // 250 % 256}.{index % 250 + 1}"',
        f"      port: {502 + index % 3}",
        f"      slaveID: {index % 247 + 1}",
        "      timeout: 1000  # milliseconds",
        "  properties:",
    ]
    for prop in range(10):
        lines += [
            f"    - name: value-{prop}",
            "      visitors:",
            f"        protocolName: {PROTOCOL}",
            "        configData:",
            f'          register: "{REGISTERS[prop % 4]}"',
            f"          offset: {prop * 2}",
            "          limit: 1",
            f"          scale: {rnd.choice(['0.1', '1', '0.01'])}",
            "          isSwap: false",
            "          isRegisterSwap: false",
            '          dataType: "float"',
            f"      collectCycle: {rnd.choice([1000, 5000, 10000])}",
            "      reportCycle: 10000",
            "      reportToCloud: true",
        ]
        if prop % 3 == 0:
            lines += [
                "      pushMethod:",
                "        mqtt:",
                '          address: "tcp://127.0.0.1:1883"',
                f'          topic: "plant/{name}/value-{prop}"',
                "          qos: 0",
                "          retained: false",
            ]
    lines += [
        "  methods:",
        "    - name: setpoints",
        "      description: write the set points",
        "      propertyNames:",
        "        - value-0",
        "        - value-3",
    ]
    return "\n".join(lines) + "\n"


def model_yaml(name: str) -> str:
    lines = [
        "apiVersion: devices.kubeedge.io/v1beta1",
        "kind: DeviceModel",
        "metadata:",
        f"  name: {name}",
        "  namespace: default",
        "spec:",
        f"  protocol: {PROTOCOL}",
        "  properties:",
    ]
    for prop in range(10):
        lines += [
            f"    - name: value-{prop}",
            f"      description: measured value {prop}",
            "      type: FLOAT",
            "      accessMode: ReadWrite",
            '      minimum: "0"',
            '      maximum: "1000"',
            "      unit: celsius",
        ]
    return "\n".join(lines) + "\n"


def generate(directory: Path, count: int, models: int) -> list[Path]:
    (directory / "models").mkdir(parents=True, exist_ok=True)
    (directory / "devices").mkdir(exist_ok=True)
    files = []
    for m in range(models):
        path = directory / "models" / f"model-{m:03d}.yaml"
        path.write_text(model_yaml(f"model-{m:03d}"))
        files.append(path)
    for i in range(count):
        path = directory / "devices" / f"sensor-{i:05d}.yaml"
        path.write_text(device_yaml(i, f"model-{i % models:03d}"))
        files.append(path)
    return sorted(files)


# --- the two contenders ------------------------------------------------------------------------


def baseline(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as stream:
            yaml.load(stream, Loader=yaml.CSafeLoader)
    return time.perf_counter() - start


def ours(directory: Path, count: int) -> tuple[float, float]:
    """Seconds for ``load_paths`` and for ``bind_all``."""
    registry = Registry()
    registry.add(BenchDriver)
    start = time.perf_counter()
    result = loader.load_paths([directory])
    loaded = time.perf_counter()
    bound, problems = loader.bind_all(result, registry)
    done = time.perf_counter()
    errors = [p for p in [*result.problems, *problems] if p.severity == "error"]
    if errors or len(bound) != count:
        raise SystemExit(f"our loader failed: {len(bound)} bound of {count}; {errors[:3]}")
    return loaded - start, done - loaded


COLD = """
import sys, time
start, cpu = time.perf_counter(), time.process_time()
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from bench_load import BenchDriver
from mapper_sdk import loader
from mapper_sdk._registry import Registry
registry = Registry()
registry.add(BenchDriver)
bound, problems = loader.bind_all(loader.load_paths([{directory!r}]), registry)
assert len(bound) == {count}
print(time.perf_counter() - start, time.process_time() - cpu)
"""


def cold(directory: Path, count: int) -> tuple[float, float, float]:
    """A fresh interpreter: imports plus one load and bind; also timed with start-up and exit.

    The process exit frees every object one by one, which takes about a second for 10,000
    devices: it is reported but is not part of loading. The CPU time of the in-process part is
    reported too: on a machine shared with other work it shows what the wall time would be
    on a quiet one.
    """
    code = COLD.format(
        root=str(ROOT), bench=str(Path(__file__).parent), directory=str(directory), count=count
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    wall = time.perf_counter() - start
    inside, cpu = (float(x) for x in out.split())
    print(
        f"cold: {inside:.2f} s in-process ({cpu:.2f} s CPU), "
        f"{wall:.2f} s with interpreter start-up and exit"
    )
    return inside, wall, cpu


def profile(directory: Path, count: int) -> None:
    ours(directory, count)  # warm up: imports and first-use costs are not the question here
    profiler = cProfile.Profile()
    profiler.enable()
    ours(directory, count)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


# --- reporting ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    versions = {}
    for dist in ("pyyaml", "yaml-rs", "pydantic", "pydantic-core", "orjson"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    versions["libyaml"] = yaml.__with_libyaml__ and yaml._yaml.get_version_string()  # type: ignore[attr-defined]
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libraries": versions,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="devices to generate")
    parser.add_argument("--models", type=int, default=0, help="models (default count/100)")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/ours pairs")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process run")
    parser.add_argument("--profile", action="store_true", help="cProfile our path and exit")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/load.json")
    args = parser.parse_args(argv)
    models = args.models or max(1, args.count // 100)

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        directory = Path(tmp)
        files = generate(directory, args.count, models)
        size = sum(p.stat().st_size for p in files) / len(files)
        print(f"{args.count} devices + {models} models, {size / 1024:.1f} KiB per file average")
        if args.profile:
            profile(directory, args.count)
            return
        base_times, our_times, our_parts = [], [], []
        for round_ in range(args.rounds):
            base_times.append(baseline(files))
            load_s, bind_s = ours(directory, args.count)
            our_times.append(load_s + bind_s)
            our_parts.append({"load_paths": load_s, "bind_all": bind_s})
            print(
                f"round {round_ + 1}: baseline {base_times[-1]:.2f} s, ours {our_times[-1]:.2f} s "
                f"(load_paths {load_s:.2f} s + bind_all {bind_s:.2f} s)"
            )
        cold_s = (None, None, None) if args.no_cold else cold(directory, args.count)

    ratio = min(our_times) / min(base_times)
    print(
        f"best: baseline {min(base_times):.2f} s, ours {min(our_times):.2f} s, "
        f"ratio ours/baseline {ratio:.3f} (target <= 1.0)"
    )
    report = {
        "benchmark": "load",
        "devices": args.count,
        "models": models,
        "properties_per_device": 10,
        "average_file_bytes": round(size),
        "rounds": args.rounds,
        "baseline_seconds": base_times,
        "ours_seconds": our_times,
        "ours_parts_seconds": our_parts,
        "ratio_best": ratio,
        "cold_seconds": cold_s[0],
        "cold_wall_seconds_with_startup_and_exit": cold_s[1],
        "cold_cpu_seconds": cold_s[2],
        "target_ratio": 1.0,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
