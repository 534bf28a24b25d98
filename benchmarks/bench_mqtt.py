"""EdgeCore-link benchmarks: bus throughput, and a broker outage with replay.

A. Bus overhead: twin reports through ``MqttEventBus`` (durable outbox, QoS 1, PUBACK
   confirmation) -> mosquitto -> a subscriber process, against a bare paho QoS 1 publish
   loop of the same payloads (no project code) in the same run. Target >= 0.85x.
B. Broker down for ``--outage`` seconds while reports are produced at ``--rate``/s: RSS must
   stay under ``--rss-cap`` MB (the outbox is on disk); after the broker returns, the drain
   rate at the subscriber must be >= 0.8x the bare paho loop, with per-device order kept.

Everything on 127.0.0.1; mosquitto and the subscriber on core 1, the system under test on
core 0 (``taskset``, when present). Results: ``benchmarks/results/mqtt.json``.

    python benchmarks/bench_mqtt.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, rss_mb, write_result

HERE = Path(__file__).resolve().parent
DEVICES = 100


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A mosquitto on core 1 with a generated config; persistence off, no queue limit."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nmax_inflight_messages 0\nuser root\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            pinned(1, ["/usr/sbin/mosquitto", "-c", str(self.conf)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.01)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


def subscriber(port: int, count: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        pinned(
            1,
            [
                sys.executable,
                str(HERE / "mqtt_subscriber.py"),
                "--port",
                str(port),
                "--count",
                str(count),
            ],
        ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    return dict(json.loads(out.strip().splitlines()[-1]))


def payloads(n: int) -> list[tuple[str, bytes]]:
    """The same topics and bytes our bus publishes: one twin/update per report."""
    from mapper_sdk.bus import messages, topics

    out = []
    for i in range(n):
        device, seq = i % DEVICES, i // DEVICES
        body = messages.build_twin_report(
            {"seq": (str(seq), "int"), "temp": (f"{20 + seq % 10}.5", "float")},
            event_id=f"e{i}",
            timestamp=1_700_000_000_000 + i,
        )
        out.append((topics.twin_update("default", f"dev-{device}"), body))
    return out


# -- children (system under test, core 0) ------------------------------------------------


def child_paho(port: int, n: int) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    msgs = payloads(n)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho", clean_session=True)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    cpu0, start = cpu_seconds(), time.monotonic()
    infos = [client.publish(topic, body, qos=1) for topic, body in msgs]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.monotonic() - start
    client.loop_stop()
    return {"start": start, "publish_s": elapsed, "cpu_s": cpu_seconds() - cpu0, "rss_mb": rss_mb()}


async def _ours(port: int, n: int, outage: float, rate: float, state: Path) -> dict[str, Any]:
    from mapper_sdk.binding import DeviceRef
    from mapper_sdk.bus import TwinReport, TwinValue
    from mapper_sdk.bus.mqtt import MqttEventBus
    from mapper_sdk.bus.mqtt_settings import ConfirmMode, MqttSettings

    settings = MqttSettings.from_url(
        f"tcp://127.0.0.1:{port}", confirm=ConfirmMode.PUBACK, backoff_base=0.05, backoff_cap=0.2
    )
    bus = MqttEventBus(settings, state_dir=state)

    async def refuse(change: object) -> Any:
        raise AssertionError("no desired values in this benchmark")

    await bus.start(refuse)
    refs = [DeviceRef("default", f"dev-{d}") for d in range(DEVICES)]

    def report(i: int) -> TwinReport:
        seq = i // DEVICES
        twins = (
            TwinValue("seq", str(seq), "int"),
            TwinValue("temp", f"{20 + seq % 10}.5", "float"),
        )
        return TwinReport(refs[i % DEVICES], 1_700_000_000_000 + i, twins)

    result: dict[str, Any] = {}
    rss_peak = rss_mb()
    if outage:
        # Broker down: produce at `rate` per second into the outbox.
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            bus.publish_twins(report(i))
            if i % 100 == 99:
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - loop.time()))
                rss_peak = max(rss_peak, rss_mb())
        await asyncio.sleep(0.05)  # let the last staged batch commit
        result["outbox_rows"] = bus.depth()[0]
        print("produced", flush=True)
        sys.stdin.readline()  # the parent starts the broker and the subscriber
    else:
        await bus.wait_connected(10)
    cpu0, start = cpu_seconds(), time.monotonic()
    if not outage:
        # A steady producer, as devices are: 100 reports per loop turn (the outbox is the
        # buffer), pausing while more than 5,000 wait. Producing in bursts of thousands would
        # leave the broker idle while each burst is encoded and committed.
        for i in range(n):
            bus.publish_twins(report(i))
            if i % 100 == 99:
                if bus.depth()[0] > 5000:
                    await bus.wait_for(lambda: bus.depth()[0] < 4000, 60)
                else:
                    await asyncio.sleep(0)
    await bus.wait_for(lambda: bus.depth()[0] == 0, 600)
    result.update(
        start=start,
        publish_s=time.monotonic() - start,
        cpu_s=cpu_seconds() - cpu0,
        rss_mb=rss_mb(),
        rss_peak_mb=max(rss_peak, rss_mb()),
        stats=str(bus.stats),
    )
    await bus.aclose()
    return result


def child_ours(port: int, n: int, outage: float, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        return asyncio.run(_ours(port, n, outage, rate, Path(state)))


# -- parent ---------------------------------------------------------------------------------


def run_child(
    kind: str, broker: Broker, n: int, outage: float = 0, rate: float = 0
) -> dict[str, Any]:
    cmd = pinned(
        0,
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--port",
            str(broker.port),
            "--n",
            str(n),
            "--outage",
            str(outage),
            "--rate",
            str(rate),
        ],
    )
    if not outage:
        sub = subscriber(broker.port, n)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        received = finish(sub)
        child["delivered_per_s"] = received["n"] / (received["last"] - child["start"])
        child["received"] = received
        return child
    broker.stop()
    proc2 = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc2.stdin is not None
    assert proc2.stdout is not None
    line = proc2.stdout.readline().strip()
    assert line == "produced", line
    broker.start()
    sub = subscriber(broker.port, n)
    back = time.monotonic()
    proc2.stdin.write("\n")
    proc2.stdin.flush()
    out, _ = proc2.communicate(timeout=900)
    child = json.loads(out.strip().splitlines()[-1])
    received = finish(sub)
    child["drain_per_s"] = received["n"] / (received["last"] - back)
    child["received"] = received
    return child


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["paho", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rss-cap", type=float, default=100.0)
    args = parser.parse_args()
    if args.child == "paho":
        print(json.dumps(child_paho(args.port, args.n)))
        return
    if args.child == "ours":
        print(json.dumps(child_ours(args.port, args.n, args.outage, args.rate)))
        return
    n = 20_000 if args.quick else 60_000
    outage = 10.0 if args.quick else args.outage
    with tempfile.TemporaryDirectory() as work:
        broker = Broker(Path(work), free_port())
        broker.start()
        try:
            runs: dict[str, list[dict[str, Any]]] = {"paho": [], "ours": []}
            for _ in range(args.rounds):
                runs["paho"].append(run_child("paho", broker, n))
                runs["ours"].append(run_child("ours", broker, n))
            outage_n = int(outage * args.rate)
            outage_run = run_child("ours", broker, outage_n, outage, args.rate)
        finally:
            broker.stop()
    best = {k: max(r["delivered_per_s"] for r in v) for k, v in runs.items()}
    result = {
        "reports": n,
        "throughput": runs,
        "throughput_ratio": best["ours"] / best["paho"],
        "outage": {"seconds": outage, "rate": args.rate, **outage_run},
        "drain_ratio": outage_run["drain_per_s"] / best["paho"],
        "targets": {"throughput_ratio": 0.85, "drain_ratio": 0.8, "rss_cap_mb": args.rss_cap},
        "order_kept": all(r["received"]["disorder"] == 0 for r in [*runs["ours"], outage_run]),
    }
    path = write_result("mqtt", result)
    print(
        json.dumps(
            {
                "throughput paho/ours per s": [best["paho"], best["ours"]],
                "throughput_ratio": result["throughput_ratio"],
                "drain per s": outage_run["drain_per_s"],
                "drain_ratio": result["drain_ratio"],
                "outage rss peak MB": outage_run["rss_peak_mb"],
                "order_kept": result["order_kept"],
            },
            indent=2,
        )
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
