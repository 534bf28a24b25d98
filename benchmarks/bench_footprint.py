"""Footprint for small gateway boxes: ``mapper-sdk run`` with one virtual device.

Targets (foundation issue): <= 50 MB RSS and ready (first twin report printed) in <= 1 s.
Baseline, same run: a bare ``python -c "import pydantic, yaml_rs, orjson"`` (the libraries
the SDK stands on), for its RSS and start time. Also checks that no protocol library
(pymodbus, asyncua, bleak, paho, grpc) was imported: they load only for their own devices.

    python benchmarks/bench_footprint.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rss_mb, write_result

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "device_models" / "virtual"


def one_device_dir() -> Path:
    """A directory holding the counter sample only (one virtual device)."""
    target = Path(tempfile.mkdtemp(prefix="footprint-"))
    for name in ("counter-model.yaml", "counter-instance.yaml"):
        shutil.copy(SAMPLE / name, target / name)
    return target


def measure_ours(devices: Path) -> dict[str, float | list[str]]:
    cli = Path(sys.executable).parent / "mapper-sdk"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(cli), "run", "--devices", str(devices), "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "/twin/update " in line:
                break
        ready = time.perf_counter() - start
        time.sleep(1.0)  # let it settle into steady state before reading RSS
        rss = rss_mb(proc.pid)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        heavy = [
            lib for lib in ("pymodbus", "asyncua", "bleak", "paho", "grpc") if f"/{lib}" in maps
        ]
    finally:
        proc.terminate()
        proc.wait(5)
    return {"ready_s": ready, "rss_mb": rss, "protocol_libraries_loaded": heavy}


def measure_baseline() -> dict[str, float]:
    code = "import pydantic, yaml_rs, orjson, time; print('ready', flush=True); time.sleep(2)"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        ready = time.perf_counter() - start
        time.sleep(0.5)
        rss = rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait(5)
    return {"ready_s": ready, "rss_mb": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    devices = one_device_dir()
    ours, base = [], []
    for _ in range(args.rounds):
        base.append(measure_baseline())
        ours.append(measure_ours(devices))
    best = min(ours, key=lambda r: float(r["ready_s"]))  # type: ignore[arg-type]
    result = {
        "ours": ours,
        "baseline_imports_only": base,
        "ready_s": best["ready_s"],
        "rss_mb": max(float(r["rss_mb"]) for r in ours),  # type: ignore[arg-type]
        "rss_ratio_over_imports": max(float(r["rss_mb"]) for r in ours)  # type: ignore[arg-type]
        / max(r["rss_mb"] for r in base),
        "targets": {"ready_s": 1.0, "rss_mb": 50},
    }
    path = write_result("footprint", result)
    print({k: v for k, v in result.items() if k not in ("ours", "baseline_imports_only")})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
