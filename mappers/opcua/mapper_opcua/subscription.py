"""Subscribed properties: monitored items, one subscription per publishing interval.

Every data change becomes ``emit(point, value)`` as soon as its Publish response arrives. The
subscriptions are created anew on every connect (the supervisor owns reconnection), followed by
one batched Read of every subscribed node, so values that changed while the link was down are
reported even by a server that sends no initial notification.

Death is detected, not waited out: a lost link (asyncua's watchdog), a bad status-change
notification (the server timed the subscription out, or asyncua informs of a shutdown) or no
Publish response, not even a keep-alive, for three keep-alive periods all raise
``DeviceConnectError``.

Why the read covers the gap, and why TransferSubscriptions/Republish are not used. After a
lost link the supervisor reconnects with backoff through a new ``Connection``: a new session,
new subscriptions (a new monitored item sends its current value first) and one batched Read of
every subscribed node. So every twin gets the latest value, whatever happened meanwhile and
even from a server that sends no initial notification. What is lost is the values in between
(a property that changed several times while the link was down is reported once, with its
last value); a twin only holds the latest value, but a sink that wants every value misses them.

Keeping them is possible when the server kept the session: it keeps an activated session with
subscriptions for ``sessionTimeout`` after its channel is lost (Part 4 §6.7; asyncua's server
does), and a client can re-activate it on a new channel, take the subscriptions back with
TransferSubscriptions and ask Republish for what was sent but not acknowledged. asyncua 2.1
does this only inside its own reconnect loop (``Client(auto_reconnect=True)``), and against
its own server (the device of ``tests/mappers/opcua``, restarted during a subscription) that
loop is not safe: (1) the server answers Republish of an unknown sequence number with an empty
message (SequenceNumber 0) instead of BadMessageNotAvailable, and the client's gap loop stops
only on that error, so it republishes thousands of sequence numbers until the channel breaks
again; (2) a subscription whose re-creation fails half-way (the channel broke again) is left
with no monitored items while it keeps receiving keep-alives: every value is lost and no
keep-alive check can see it. Re-activating the old session from a new Client instead
(``session_state_path``) leaves its subscriptions without an asyncua ``Subscription`` to
deliver to, and asyncua has no API to adopt them. So asyncua's reconnect loop stays off and
the read covers the gap; worth revisiting when asyncua fixes the two. A side effect: after a
lost link, the old session and its subscriptions stay on the server until ``sessionTimeout``
(default 60 s), since nothing can close them over a dead channel.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from asyncua import ua
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)

from mapper_opcua._ua import AttributeIds
from mapper_opcua.config import DeadbandType, OpcUaVisitorConfig
from mapper_opcua.connection import Connection, guard
from mapper_opcua.convert import from_data_value
from mapper_sdk.binding import BoundProperty
from mapper_sdk.driver import Emit
from mapper_sdk.errors import DeviceConnectError

__all__ = ["follow"]

_QUEUE = 10_000
"""Notifications buffered per subscription before the oldest are dropped."""
_STALE_PERIODS = 3
"""Keep-alive periods without any Publish response after which the subscription is dead."""

ReadAll = Callable[[Sequence[BoundProperty]], Awaitable[None]]


def _visitor(point: BoundProperty) -> OpcUaVisitorConfig:
    assert isinstance(point.visitor, OpcUaVisitorConfig)
    return point.visitor


def _interval(point: BoundProperty) -> float:
    return _visitor(point).publishing_interval or float(point.collect_cycle_ms)


async def follow(
    conn: Connection,
    points: Sequence[tuple[BoundProperty, ua.NodeId]],
    emit: Emit,
    read_all: ReadAll,
) -> None:
    """Monitor ``points`` until cancelled or the link dies (then ``DeviceConnectError``)."""
    groups: dict[float, list[tuple[BoundProperty, ua.NodeId]]] = {}
    for point, node_id in points:
        groups.setdefault(_interval(point), []).append((point, node_id))
    subscriptions = []
    with guard("create subscriptions"):
        for interval, members in sorted(groups.items()):
            sub = await _subscribe(conn, interval, members)
            subscriptions.append((sub, {p.index + 1: p for p, _ in members}))
    await read_all([p for p, _ in points])
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_watch_link(conn))
            for sub, by_handle in subscriptions:
                tg.create_task(_consume(sub, by_handle, emit))
                tg.create_task(_watch_alive(sub))
    except BaseExceptionGroup as group:
        # The first failure took its siblings down: surface it, not the group.
        raise group.exceptions[0] from None


async def _subscribe(
    conn: Connection, interval: float, members: Sequence[tuple[BoundProperty, ua.NodeId]]
) -> Subscription:
    keep_alive = max(1, math.ceil(conn.config.keep_alive_interval / interval))
    params = ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=interval,
        RequestedMaxKeepAliveCount=keep_alive,
        RequestedLifetimeCount=keep_alive * 10,  # Part 4: at least three keep-alive counts
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
    )
    sub = await conn.client.create_subscription(
        params, None, queue_maxsize=_QUEUE, overflow=OverflowPolicy.DROP_OLDEST
    )
    requests = [_request(point, node_id, interval) for point, node_id in members]
    step = conn.limits.monitored_items or len(requests)
    for start in range(0, len(requests), step):
        results = await sub.create_monitored_items(requests[start : start + step])
        for result in results:
            if isinstance(result, ua.StatusCode):
                result.check()  # a node that cannot be monitored is a configuration error
    return sub


def _request(
    point: BoundProperty, node_id: ua.NodeId, interval: float
) -> ua.MonitoredItemCreateRequest:
    visitor = _visitor(point)
    parameters = ua.MonitoringParameters(
        ClientHandle=point.index + 1,
        SamplingInterval=interval
        if visitor.sampling_interval is None
        else visitor.sampling_interval,
        QueueSize=visitor.queue_size,
        DiscardOldest=True,
    )
    if visitor.deadband:
        parameters.Filter = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=2 if visitor.deadband_type is DeadbandType.PERCENT else 1,
            DeadbandValue=visitor.deadband,
        )
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting,
        RequestedParameters=parameters,
    )


async def _watch_link(conn: Connection) -> None:
    await conn.lost.wait()
    conn.check()


async def _consume(sub: Subscription, by_handle: dict[int, BoundProperty], emit: Emit) -> None:
    # A plain queue get per event: no timer per notification (the keep-alive check is
    # _watch_alive's), and unlike Subscription.next_event no wait_for to lose a cancellation.
    async for event in sub:
        if isinstance(event, DataChangeEvent):
            point = by_handle.get(event.data.monitored_item.ClientHandle)
            if point is not None:
                emit(point, from_data_value(event.data.monitored_item.Value))
        elif isinstance(event, StatusChangeEvent) and not event.notification.Status.is_good():
            raise DeviceConnectError(f"subscription ended: {event.notification.Status.name}")
    raise DeviceConnectError(f"subscription {sub.subscription_id} was deleted")


async def _watch_alive(sub: Subscription) -> None:
    """Raise once no Publish response (data or keep-alive) came for a few keep-alive periods."""
    started = time.monotonic()
    keep_alive = sub.parameters.RequestedPublishingInterval / 1000
    keep_alive *= max(1, sub.parameters.RequestedMaxKeepAliveCount)
    while True:
        await asyncio.sleep(keep_alive)
        silent = time.monotonic() - (sub.last_publish_at or started)
        if silent > _STALE_PERIODS * keep_alive:
            raise DeviceConnectError(
                f"subscription {sub.subscription_id} sent no keep-alive for {silent:.1f} s"
            )
