"""Benchmark subscriber (separate process): count twin reports, check per-device order.

Prints one JSON line when ``--count`` messages arrived (or at ``--timeout``): messages, first
and last arrival times (monotonic, system-wide), order violations per device (the twin value
``seq`` must increase per device) and duplicates.

    python benchmarks/mqtt_subscriber.py --port 1883 --count 60000
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--topic", default="$hw/events/device/+/+/twin/update")
    args = parser.parse_args()

    state = {"n": 0, "first": 0.0, "last": 0.0, "disorder": 0, "dup": 0}
    last_seq: dict[str, int] = {}

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        if state["n"] == 0:
            state["first"] = now
        state["n"] += 1
        state["last"] = now
        seq_twin = orjson.loads(msg.payload)["twin"].get("seq")
        if seq_twin is not None:
            seq = int(seq_twin["actual"]["value"])
            prev = last_seq.get(msg.topic, -1)
            if seq == prev:
                state["dup"] += 1
            elif seq < prev:
                state["disorder"] += 1
            last_seq[msg.topic] = max(prev, seq)

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        client.subscribe(args.topic, qos=1)

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-subscriber", clean_session=True
    )
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while state["n"] < args.count and time.monotonic() < deadline:
        time.sleep(0.01)
    client.loop_stop()
    print(json.dumps({**state, "devices": len(last_seq)}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
