"""``/api/v1/events``: property updates as server-sent events (the dashboard's live feed).

Each event is ``event: twins|state|devices`` plus one JSON ``data:`` line. Events already
queued are sent together in one write. A comment line every ``KEEPALIVE`` seconds keeps
proxies from closing an idle stream and lets the server notice a client that went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from mapper_gateway.api.schemas import ErrorBody
from mapper_gateway.deps import GatewayDep, ReadAccess
from mapper_gateway.events import Event, EventHub, Subscriber

router = APIRouter(prefix="/api/v1", tags=["events"])

KEEPALIVE = 15.0
MAX_BATCH = 256


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 401: {"model": ErrorBody}},
)
async def events(
    _: ReadAccess, gateway: GatewayDep, device: str | None = None
) -> StreamingResponse:
    """Stream updates; ``?device=namespace/name`` for one device only."""
    hub = gateway.events
    subscriber = hub.subscribe(device)
    return StreamingResponse(
        _stream(hub, subscriber),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(hub: EventHub, subscriber: Subscriber) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 2000\n: connected\n\n"
        while True:
            try:
                first = await asyncio.wait_for(subscriber.queue.get(), KEEPALIVE)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            batch = [first]
            while len(batch) < MAX_BATCH and not subscriber.queue.empty():
                batch.append(subscriber.queue.get_nowait())
            yield b"".join(_encode(event) for event in batch)
    finally:
        hub.unsubscribe(subscriber)


def _encode(event: Event) -> bytes:
    return b"event: " + event.kind.encode() + b"\ndata: " + orjson.dumps(event.data) + b"\n\n"
