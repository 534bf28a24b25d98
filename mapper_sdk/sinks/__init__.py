"""Push and database sinks: where reported values go besides the twin (``pushMethod``).

- ``Sample``: one reported property value; ``Sink``: the protocol of a destination.
- ``SinkRunner``: one sink behind a bounded, drop-oldest queue with batching and retries with
  backoff; ``offer`` never blocks.
- ``SinkHub``: builds the sinks every device's ``pushMethod`` names, shares one per
  destination, and routes each ``TwinReport`` to them.

Built-in sinks, one module each (optional libraries are imported only when a sink is built,
and a missing one is reported with the extra that installs it):

============  ===========================  ===================  ==========================
module        CRD                          extra                wire
============  ===========================  ===================  ==========================
``http``      ``pushMethod.http``          ``http`` (httpx)     POST JSON batch / KubeEdge
                                                                form
``mqtt``      ``pushMethod.mqtt``          ``mqtt`` (paho)      JSON per sample
``otel``      ``pushMethod.otel``          ``otel`` (httpx)     OTLP/HTTP JSON gauges
``influxdb2`` ``dbMethod.influxdb2``       ``influxdb2``        line protocol, /api/v2/write
``redis``     ``dbMethod.redis``           ``redis``            ZADD per device
``mysql``     ``dbMethod.mysql``           ``mysql`` (aiomysql) table per device
``tdengine``  ``dbMethod.TDEngine``        ``tdengine``         REST /rest/sql
``sqlite``    (local store)                none                 one table, WAL, retention
============  ===========================  ===================  ==========================

Attaching a hub to ``MapperRuntime`` takes three calls: ``hub.add_device(device)`` where a
device starts, ``hub.remove_device(ref)`` where it stops, and ``hub.submit(report)`` next to
``bus.publish_twins(report)``; ``await hub.aclose()`` at shutdown.
"""

from mapper_sdk.sinks._base import Sample, Sink, SinkError, SinkRejected
from mapper_sdk.sinks._hub import SinkHub, targets_of
from mapper_sdk.sinks._runner import (
    CLOSED,
    QUEUE_FULL,
    REJECTED,
    RunnerSettings,
    SinkRunner,
    SinkStats,
)
from mapper_sdk.sinks.sqlite import SqliteSettings

__all__ = [
    "CLOSED",
    "QUEUE_FULL",
    "REJECTED",
    "RunnerSettings",
    "Sample",
    "Sink",
    "SinkError",
    "SinkHub",
    "SinkRejected",
    "SinkRunner",
    "SinkStats",
    "SqliteSettings",
    "targets_of",
]
