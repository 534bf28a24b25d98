"""Gateway benchmark: memory, cold start-up and REST read latency of ``mapper-gateway run``.

For each size (1,000 and 10,000 virtual devices, 10 properties each, read every second) it
writes one Device YAML per device, starts ``mapper-gateway run --devices DIR`` as a fresh
process and measures:

- start-up: from process start to the first ``/readyz`` 200 (files loaded, devices started),
  best of ``--starts`` cold starts (each a fresh process; the machine is shared, so the best
  run is the one least disturbed; every run is in the result file), split into its phases
  from the gateway's ``start-up:`` log line: reading the files (the SDK's loader, in a worker
  thread), starting the devices, and the rest (interpreter, imports, settings, the HTTP
  server, the answer to ``/readyz``);
- RSS of the gateway process after it has run for ``--settle`` seconds;
- REST property read latency: ``GET /api/v1/devices/{ns}/{name}/properties/{p}`` against a
  bare FastAPI endpoint returning the same JSON from its own uvicorn process, same run,
  requests alternating between the two, one keep-alive client each;
- the local store's price: the gateway's CPU with its SQLite store (on by default) and with
  ``--no-local-store``, alternated, and what the store holds afterwards;
- the audit file's price on writes: REST write p50 with the audit file on this disk (fsynced
  per batch) and on tmpfs (``/dev/shm``, where fsync is free), one gateway each.

The MQTT bus is off (``--mqtt-url off``): the figures are the gateway's own, not a broker's.
``--bus embedded`` runs them with the bus on the gateway's embedded broker (a mosquitto
process of its own, not counted in the gateway's RSS): every report then also goes through
the durable outbox and QoS 1 publishing.
Targets: RSS <= 100 MB (1,000) and <= 250 MB (10,000); start-up <= 3 s (10,000); read p50
<= 1.5x the bare endpoint. Results go to ``benchmarks/results/gateway.json``.

    python benchmarks/bench_gateway.py                  # 1,000 and 10,000 devices
    python benchmarks/bench_gateway.py --sizes 1000     # quick
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, rss_mb, write_result

PROPS = 10
TARGET_RSS = {1000: 100.0, 10000: 250.0}
TARGET_START_S = 3.0
TARGET_READ_RATIO = 1.5

MODEL = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: bench-model, namespace: default}
spec:
  protocol: virtual
  properties:
"""


def write_devices(directory: Path, count: int) -> None:
    """One model and ``count`` Device files in the block style of the repository's samples;
    each property's step is one of three values, so the fleet is templated but not uniform."""
    model = MODEL + "".join(
        f"    - {{name: p{i}, type: FLOAT, accessMode: ReadWrite, minimum: '0', maximum: '100'}}\n"
        for i in range(PROPS)
    )
    (directory / "model.yaml").write_text(model)
    for n in range(count):
        lines = [
            "apiVersion: devices.kubeedge.io/v1beta1",
            "kind: Device",
            "metadata:",
            f"  name: device-{n:05d}",
            "  namespace: default",
            "  labels:",
            f"    site: plant-{n % 7}",
            "spec:",
            "  deviceModelRef:",
            "    name: bench-model",
            "  protocol:",
            "    protocolName: virtual",
            "    configData:",
            f"      seed: {n + 1}",
            "  properties:",
        ]
        for i in range(PROPS):
            lines += [
                f"    - name: p{i}",
                "      visitors:",
                "        protocolName: virtual",
                "        configData:",
                "          kind: random_walk",
                "          value: 50",
                "          min: 0",
                "          max: 100",
                f"          step: {(0.5, 1, 2)[(n + i) % 3]}",
                "      collectCycle: 1000",
                "      reportCycle: 1000",
                "      reportToCloud: true",
            ]
        (directory / f"device-{n:05d}.yaml").write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


BUS = "off"  # or "embedded" (--bus)

_PHASES = re.compile(r"start-up: \d+ files read in ([\d.]+) s, \d+ devices started in ([\d.]+) s")


def start_gateway(
    directory: Path, state: Path, port: int, log: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPPER_GATEWAY_")}
    env["MAPPER_GATEWAY_TOKEN"] = "bench-token"
    command = [sys.executable, "-m", "mapper_gateway", "run", "--devices", str(directory)]
    if BUS == "off":
        command += ["--mqtt-url", "off"]
    command += ["--api", f"127.0.0.1:{port}", "--state-dir", str(state)]
    command += ["--log-level", "INFO", *extra]
    started = time.perf_counter()
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = started + 120
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        while True:
            try:
                if http.get("/readyz").status_code == 200:
                    return process, time.perf_counter() - started
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the gateway did not get ready")
            time.sleep(0.02)


BARE_APP = """\
import json, sys
import uvicorn
from fastapi import FastAPI

BODY = json.loads(sys.argv[2])
app = FastAPI()

@app.get("/api/v1/devices/{namespace}/{name}/properties/{prop}")
async def read(namespace: str, name: str, prop: str) -> dict:
    return BODY

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, server_header=False, lifespan="off")
"""


def read_latency(gateway_port: int, rounds: int) -> dict[str, Any]:
    path = "/api/v1/devices/default/device-00000/properties/p0"
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}") as ours:
        sample = ours.get(path).text
    bare_port = free_port()
    script = Path(tempfile.mkdtemp()) / "bare.py"
    script.write_text(textwrap.dedent(BARE_APP))
    bare = subprocess.Popen([sys.executable, str(script), str(bare_port), sample])
    try:
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}") as ours,
            httpx.Client(base_url=f"http://127.0.0.1:{bare_port}") as theirs,
        ):
            _wait_up(theirs, path)
            for client in (ours, theirs):  # warm up both
                for _ in range(100):
                    client.get(path)
            ours_s, bare_s = [], []
            for _ in range(rounds):
                for client, into in ((ours, ours_s), (theirs, bare_s)):
                    t0 = time.perf_counter()
                    response = client.get(path)
                    into.append(time.perf_counter() - t0)
                    assert response.status_code == 200
    finally:
        bare.send_signal(signal.SIGINT)
        bare.wait(10)
    ours_p50, bare_p50 = statistics.median(ours_s), statistics.median(bare_s)
    return {
        "requests_each": rounds,
        "ours_p50_ms": ours_p50 * 1000,
        "bare_p50_ms": bare_p50 * 1000,
        "ours_p99_ms": sorted(ours_s)[int(rounds * 0.99)] * 1000,
        "bare_p99_ms": sorted(bare_s)[int(rounds * 0.99)] * 1000,
        "ratio_p50": ours_p50 / bare_p50,
        "same_json": True,
    }


def _wait_up(client: httpx.Client, path: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("the bare FastAPI server did not start")


def write_p50(port: int, rounds: int) -> float:
    """Median REST write (PUT, answered once the device applied it), in milliseconds."""
    path = "/api/v1/devices/default/device-00001/properties/p1"
    auth = {"Authorization": "Bearer bench-token"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as http:
        times = []
        for n in range(rounds + 20):  # the first 20 warm up
            t0 = time.perf_counter()
            answer = http.put(path, json={"value": 10 + n % 50})
            times.append(time.perf_counter() - t0)
            assert answer.status_code in (200, 202), answer.text
    return statistics.median(times[20:]) * 1000


def audit_cost(directory: Path, tmp: Path, log: Path, rounds: int) -> dict[str, Any]:
    """REST write p50 with the audit file on this disk (an fsync per batch) against the same
    writes with it on tmpfs, where fsync costs nothing: the audit's price on the write path."""
    shm = Path("/dev/shm")
    places = {"disk": tmp / "audit" / "audit.log"}
    if shm.is_dir():
        places["tmpfs"] = Path(tempfile.mkdtemp(dir=shm)) / "audit.log"
    result: dict[str, Any] = {"writes_each": rounds}
    for name, audit_file in places.items():
        port = free_port()
        process, _ = start_gateway(
            directory, tmp / "state", port, log, "--audit-file", str(audit_file)
        )
        try:
            result[f"{name}_p50_ms"] = write_p50(port, rounds)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        lines = audit_file.read_bytes().count(b"\n")
        assert lines >= rounds, f"{lines} audit lines for {rounds} writes"
        if name == "tmpfs":
            audit_file.unlink()
            audit_file.parent.rmdir()
    if "tmpfs_p50_ms" in result:
        result["ratio_p50"] = result["disk_p50_ms"] / result["tmpfs_p50_ms"]
    return result


def store_cost(directory: Path, tmp: Path, log: Path, seconds: float) -> dict[str, Any]:
    """CPU of the gateway with the local store (the default) and with ``--no-local-store``,
    alternated (on, off, on, off), each measured over ``seconds`` after a 5 s warm-up; and
    what the store holds after the first run (reports, values, bytes on disk)."""
    result: dict[str, Any] = {"seconds_each": seconds, "on": [], "off": []}
    for n, mode in enumerate(("on", "off", "on", "off")):
        state = tmp / f"store-{n}"
        extra = () if mode == "on" else ("--no-local-store",)
        process, _ = start_gateway(directory, state, free_port(), log, *extra)
        try:
            time.sleep(5.0)
            c0, t0 = cpu_seconds(process.pid), time.perf_counter()
            time.sleep(seconds)
            result[mode].append((cpu_seconds(process.pid) - c0) / (time.perf_counter() - t0))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        store = state / "values.sqlite3"
        if mode == "on" and "reports" not in result:
            with sqlite3.connect(store) as db:
                reports, values = db.execute(
                    "SELECT COUNT(*), (SELECT COUNT(*) FROM reports AS r, json_each(r.vals)) "
                    "FROM reports"
                ).fetchone()
            result["reports"], result["values"] = reports, values
            result["bytes"] = sum(p.stat().st_size for p in state.glob("values.sqlite3*"))
    on, off = statistics.mean(result["on"]), statistics.mean(result["off"])
    result["cpu_on"], result["cpu_off"] = on, off
    result["ratio_cpu"] = on / off
    return result


def phases(ready_s: float, log: Path) -> dict[str, float]:
    """The gateway's own split of one start-up (seconds)."""
    found = _PHASES.search(log.read_text(errors="replace"))
    if found is None:
        return {}
    read_s, start_s = float(found.group(1)), float(found.group(2))
    return {"files_s": read_s, "devices_s": start_s, "rest_s": ready_s - read_s - start_s}


def measure(
    count: int, settle: float, rounds: int, starts: int, store_seconds: float = 0.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "devices"
        directory.mkdir()
        write_devices(directory, count)
        ready_runs = []
        split = []
        log = Path(tmp) / "gateway.log"
        for _ in range(starts - 1):  # extra cold starts: a fresh process each, stopped at once
            process, ready = start_gateway(directory, Path(tmp) / "state", free_port(), log)
            ready_runs.append(ready)
            split.append(phases(ready, log))
            process.send_signal(signal.SIGINT)
            process.wait(60)
        port = free_port()
        process, ready_s = start_gateway(directory, Path(tmp) / "state", port, log)
        ready_runs.append(ready_s)
        split.append(phases(ready_s, log))
        try:
            time.sleep(settle)  # every device has read and reported several times
            rss = rss_mb(process.pid)
            latency = read_latency(port, rounds) if rounds else None
            rss_after = rss_mb(process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        audit = audit_cost(directory, Path(tmp), log, max(100, rounds // 4)) if rounds else None
        store = store_cost(directory, Path(tmp), log, store_seconds) if store_seconds else None
    best = ready_runs.index(min(ready_runs))
    ready_s = ready_runs[best]
    result: dict[str, Any] = {
        "devices": count,
        "properties_per_device": PROPS,
        "ready_s": ready_s,
        "ready_s_phases": split[best],
        "ready_s_runs": ready_runs,
        "ready_s_runs_phases": split,
        "ready_s_median": statistics.median(ready_runs),
        "rss_mb": rss,
        "rss_mb_after_reads": rss_after,
        "target_rss_mb": TARGET_RSS.get(count),
    }
    if latency is not None:
        result["rest_read"] = latency
    if audit is not None:
        result["rest_write_audit"] = audit
    if store is not None:
        result["local_store"] = store
    runs = ", ".join(f"{r:.2f}" for r in ready_runs)
    print(f"{count} devices: ready in {ready_s:.2f} s (runs: {runs}), RSS {rss:.1f} MB", flush=True)
    if split[best]:
        shown = ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in split[best].items())
        print(f"  best start-up: {shown}", flush=True)
    if latency is not None:
        print(
            f"  REST read p50 {latency['ours_p50_ms']:.3f} ms vs bare FastAPI "
            f"{latency['bare_p50_ms']:.3f} ms: x{latency['ratio_p50']:.2f}",
            flush=True,
        )
    if audit is not None:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in audit.items() if k != "writes_each")
        print(f"  REST write p50 with the audit file fsynced: {shown}", flush=True)
    if store is not None:
        print(
            f"  local store: {store['cpu_on']:.3f} of a core with it, {store['cpu_off']:.3f} "
            f"without (x{store['ratio_cpu']:.2f}); {store['reports']} reports holding "
            f"{store['values']} values in {store['bytes'] / 1e6:.1f} MB after "
            f"{store['seconds_each'] + 5:.0f} s",
            flush=True,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=3, help="cold starts per size (best kept)")
    parser.add_argument(
        "--store-seconds",
        type=float,
        default=20.0,
        help="CPU with and without the local store, per run (smallest size only; 0: skip)",
    )
    parser.add_argument(
        "--bus", choices=["off", "embedded"], default="off", help="MQTT bus (default off)"
    )
    parser.add_argument("--output", default="gateway", help="result name in benchmarks/results")
    args = parser.parse_args(argv)
    global BUS
    BUS = args.bus
    runs = [
        measure(
            n,
            args.settle,
            args.rounds if n == min(args.sizes) else 0,
            args.starts,
            args.store_seconds if n == min(args.sizes) else 0.0,
        )
        for n in args.sizes
    ]
    largest = max(runs, key=lambda r: r["devices"])
    latency = next((r["rest_read"] for r in runs if "rest_read" in r), {"ratio_p50": 0.0})
    checks = {
        "rss": all(r["rss_mb"] <= (r["target_rss_mb"] or float("inf")) for r in runs),
        "start_up": largest["devices"] < 10000 or largest["ready_s"] <= TARGET_START_S,
        "rest_read": latency["ratio_p50"] <= TARGET_READ_RATIO,
    }
    path = write_result(
        args.output,
        {
            "runs": runs,
            "targets": {
                "rss_mb": TARGET_RSS,
                "start_up_s_10000": TARGET_START_S,
                "rest_read_p50_ratio": TARGET_READ_RATIO,
            },
            "met": checks,
            "bus": "off (--mqtt-url off): the gateway's own cost"
            if BUS == "off"
            else "embedded broker (QoS 1 reports through the durable outbox)",
        },
    )
    print(f"targets met: {checks}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
