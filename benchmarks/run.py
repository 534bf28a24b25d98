"""Run every benchmark (``make bench``); each writes benchmarks/results/<name>.json.

python benchmarks/run.py            # the default profile (a few minutes)
python benchmarks/run.py --quick    # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROFILES = {
    "default": [
        ["bench_load.py", "--count", "10000"],
        ["bench_runtime.py", "--devices", "1000", "--props", "10", "--seconds", "60"],
        ["bench_footprint.py", "--rounds", "3"],
        ["bench_outbox.py"],
        ["bench_gateway.py", "--sizes", "1000", "10000"],
        ["bench_opcua.py", "--seconds", "5"],
        ["bench_modbus.py"],
    ],
    "quick": [
        ["bench_load.py", "--count", "1000"],
        ["bench_runtime.py", "--devices", "200", "--props", "10", "--seconds", "10"],
        ["bench_footprint.py", "--rounds", "1"],
        ["bench_outbox.py"],
        ["bench_gateway.py", "--sizes", "1000", "--settle", "3", "--rounds", "500"],
        ["bench_opcua.py", "--seconds", "2"],
        ["bench_modbus.py", "--quick"],
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("only", nargs="*", help="run only these scripts (e.g. bench_load.py)")
    args = parser.parse_args()
    failed = []
    for script, *script_args in PROFILES["quick" if args.quick else "default"]:
        if args.only and script not in args.only:
            continue
        if not (HERE / script).exists():
            print(f"-- {script}: not present, skipped")
            continue
        print(f"-- {script} {' '.join(script_args)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *script_args]).returncode:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
