"""Benchmark subscriber (separate process, harness core): properties delivered per 10 ms.

Subscribes to ``--topic`` (QoS 0) and counts, per 10 ms bucket of ``time.monotonic()`` (one
clock for every process on Linux), messages, properties (occurrences of ``"actual"`` in the
payload) and payload bytes. Prints ``{"ready": true}`` once subscribed; on the stdin command
``dump`` prints ``{"buckets": [[bucket, messages, properties, bytes], ...]}`` and starts over;
end of input stops it.

    python benchmarks/twin_counter.py --port 1883
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", default="$hw/events/device/+/+/twin/update")
    args = parser.parse_args()

    buckets: dict[int, list[int]] = {}
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        key = int(time.monotonic() * 100)
        payload = message.payload
        with lock:
            row = buckets.get(key)
            if row is None:
                row = buckets[key] = [0, 0, 0]
            row[0] += 1
            row[1] += payload.count(b'"actual"')
            row[2] += len(payload)

    def on_connect(client: mqtt.Client, *_: Any) -> None:
        client.subscribe(args.topic, qos=0)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"twin-counter-{time.time_ns()}")
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect("127.0.0.1", args.port, 30)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise SystemExit("not subscribed within 10 s")
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if line.strip() == "dump":
                with lock:
                    rows = sorted([k, *v] for k, v in buckets.items())
                    buckets.clear()
                print(json.dumps({"buckets": rows}), flush=True)
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    main()
