"""Subscribed properties: monitored items, one subscription per publishing interval.

Every data change becomes ``emit(point, value)`` as soon as its Publish response arrives. The
subscriptions are created on every connect, followed by one batched Read of every subscribed
node, so values that changed while the link was down are reported even by a server that sends
no initial notification.

Gaps are covered two ways (see ``connection``):

- a lost channel whose session comes back (``resumeTimeout``): the same subscriptions carry on
  after TransferSubscriptions and Republish, with every notification the server queued
  meanwhile (up to each item's ``queueSize``), intermediate values included, in order; nothing
  is read;
- a subscription asyncua had to re-create (the server forgot the session, its retransmission
  queue lost a message, or it dropped the subscription): the new monitored items start from the
  current values, and every subscribed node is read once more, as after a connect; values in
  between are lost with the server's queues, the latest ones are not.

Two defects of asyncua 2.1's resume path are worked around here. Its gap filler asks Republish
for one sequence number after another until the server answers BadMessageNotAvailable, which
asyncua's own server never does (it answers with an empty message, pinned by a strict xfail in
``tests/mappers/opcua/test_recovery.py``): the client then republishes thousands of numbers
until the link breaks again. ``_republish_held`` replaces it for our subscriptions: it asks
only for the messages the server reported holding after the transfer. And a re-creation that
fails half-way (the link broke again meanwhile) leaves a subscription with no monitored items
that still gets keep-alives: ``_watch_alive`` notices and raises.

Death is detected, not waited out: a link that is lost and not resumed in time, a bad
status-change notification (the server timed the subscription out, or asyncua informs of a
shutdown), a subscription left without monitored items, or no Publish response, not even a
keep-alive, for two keep-alive periods while the channel is up all raise
``DeviceConnectError``; the supervisor then reconnects from scratch. A subscription's
keep-alive period is two link probes (``keepAliveInterval``), so a dead link is noticed by
the probe, and resumed, before asyncua's own stale check re-creates a subscription over it;
with the default 1 s, a silent subscription is dead after 4 s (5 s just after a resume, while
asyncua's publish loop sleeps out its retry).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from asyncua import ua
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)

from mapper_opcua._ua import AttributeIds, UaError
from mapper_opcua.config import DeadbandType, OpcUaVisitorConfig
from mapper_opcua.connection import Connection, guard
from mapper_opcua.convert import from_data_value
from mapper_sdk.binding import BoundProperty
from mapper_sdk.driver import Emit
from mapper_sdk.errors import DeviceConnectError

__all__ = ["follow"]

_QUEUE = 10_000
"""Notifications buffered per subscription before the oldest are dropped."""
_KEEP_ALIVE_PROBES = 2
"""Link probes (``keepAliveInterval``) per subscription keep-alive period."""
_STALE_PERIODS = 2
"""Keep-alive periods without any Publish response after which the subscription is dead."""
_PUBLISH_RETRY = 1.0
"""Seconds asyncua's publish loop waits after a failed Publish before it sends the next."""

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
    subscribed = [p for p, _ in points]
    conn.recreated.clear()  # created, not re-created: the read below covers them
    await read_all(subscribed)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_watch_link(conn))
            tg.create_task(_reread_recreated(conn, subscribed, read_all))
            for sub, by_handle in subscriptions:
                tg.create_task(_consume(sub, by_handle, emit))
                tg.create_task(_watch_alive(conn, sub))
    except BaseExceptionGroup as group:
        # The first failure took its siblings down: surface it, not the group.
        raise group.exceptions[0] from None


async def _subscribe(
    conn: Connection, interval: float, members: Sequence[tuple[BoundProperty, ua.NodeId]]
) -> Subscription:
    # Keep-alives every two link probes: a dead link is noticed by the probe (and resumed)
    # before asyncua's stale check (1.5 keep-alive periods) re-creates the subscription over it.
    keep_alive = max(1, math.ceil(_KEEP_ALIVE_PROBES * conn.config.keep_alive_interval / interval))
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
    # asyncua's own gap filler asks for sequence numbers until the server says
    # BadMessageNotAvailable, which asyncua's server never says: it loops until the link
    # breaks again. Ask only for what the server reported holding.
    setattr(sub, "_republish_gaps", functools.partial(_republish_held, sub))  # noqa: B010
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


async def _republish_held(sub: Subscription, available: list[int]) -> bool:
    """After TransferSubscriptions: Republish, in order, each message the server still holds
    (``available``) from the last sequence number seen on; ``False`` when one is missing, so
    asyncua re-creates the subscription (and the subscription code reads every value).

    asyncua's ``last_sequence_number`` also follows keep-alives, which carry the number of the
    *next* message: that message may be the one lost in transit, so it is asked for too. A
    message that did arrive but was not acknowledged yet is then delivered twice, in order.
    """
    session = sub.server
    if not isinstance(session, UaSession) or sub.subscription_id is None:
        return True
    seen = sub.last_sequence_number or 0
    wanted = sorted(n for n in available if n >= seen)
    if wanted and seen and wanted[0] > seen + 1:
        return False  # the server dropped messages from its retransmission queue
    for number in wanted:
        try:
            message = await session.republish(sub.subscription_id, number)
        except (UaError, ConnectionError, OSError, TimeoutError):
            return False
        if message.SequenceNumber != number:
            return False
        result = ua.PublishResult(SubscriptionId=sub.subscription_id, NotificationMessage=message)
        await sub.publish_callback(result)
    return True


async def _reread_recreated(
    conn: Connection, points: Sequence[BoundProperty], read_all: ReadAll
) -> None:
    """Read every subscribed node once after asyncua re-created a subscription."""
    while True:
        await conn.recreated.wait()
        conn.recreated.clear()
        await read_all(points)


async def _watch_alive(conn: Connection, sub: Subscription) -> None:
    """Raise once no Publish response (data or keep-alive) came for a few keep-alive periods
    while the channel was up (a session being resumed has its own deadline)."""
    started = time.monotonic()
    emptied = 0
    keep_alive = sub.parameters.RequestedPublishingInterval / 1000
    keep_alive *= max(1, sub.parameters.RequestedMaxKeepAliveCount)
    while True:
        await asyncio.sleep(keep_alive)
        if conn.resuming:
            continue
        if sub.subscription_id is None or not sub._monitored_items:
            # asyncua's re-creation failed half-way (the link broke again): the subscription
            # may still get keep-alives, but it monitors nothing any more.
            emptied += 1
            if emptied >= 2:
                raise DeviceConnectError("a re-created subscription lost its monitored items")
            continue
        emptied = 0
        # After a resume, asyncua's publish loop may still sleep out its retry delay.
        resumed = conn.resumed_at + _PUBLISH_RETRY if conn.resumes else 0.0
        silent = time.monotonic() - max(sub.last_publish_at or started, resumed)
        if silent > _STALE_PERIODS * keep_alive:
            raise DeviceConnectError(
                f"subscription {sub.subscription_id} sent no keep-alive for {silent:.1f} s"
            )
