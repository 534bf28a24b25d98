"""``/api/v1/devices``: devices, their properties, live reads and writes through the single
write path (``MapperRuntime.submit_desired``, the same checks as a twin delta or DMI update)."""

from __future__ import annotations

import asyncio
import sqlite3

from fastapi import APIRouter, Query, Response

from mapper_gateway.api.schemas import (
    DeviceDetail,
    DeviceList,
    ErrorBody,
    HistorySample,
    PropertyHistory,
    PropertyView,
    WriteRequest,
    WriteResponse,
)
from mapper_gateway.api.views import device_detail, device_view, property_view
from mapper_gateway.deps import GatewayDep, ReadAccess, RuntimeDep, WriteAccess, find_device
from mapper_gateway.security import ApiError
from mapper_sdk import (
    BoundProperty,
    DesiredChange,
    DeviceRef,
    DriverError,
    WriteResult,
    WriteStatus,
)
from mapper_sdk._supervisor import DeviceSupervisor

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    429: {"model": ErrorBody},
}

# How a refused write is answered: the model forbids it (409) or the value is wrong (422).
_REFUSED_STATUS = {
    "unknown_device": 404,
    "unknown_property": 404,
    "read_only": 409,
    "not_writable": 409,
    "stale": 409,
    "bad_type": 422,
    "out_of_range": 422,
    "bad_bounds": 422,
}
_STATUS = {
    WriteStatus.APPLIED: 200,
    WriteStatus.PENDING: 202,
    WriteStatus.SUPERSEDED: 409,
    WriteStatus.EXPIRED: 504,
    WriteStatus.FAILED: 502,
}


@router.get("", responses=_ERRORS)
async def list_devices(
    _: ReadAccess,
    gateway: GatewayDep,
    runtime: RuntimeDep,
    namespace: str | None = None,
    offset: int = Query(0, ge=0),
    limit: int | None = Query(None, ge=1),
) -> DeviceList:
    """Every running device with its state and each property's last value, time and error."""
    owner = gateway.sources.owner if gateway.sources is not None else {}
    refs = sorted(r for r in runtime.devices if namespace is None or r.namespace == namespace)
    page = refs[offset : None if limit is None else offset + limit]
    running = runtime.devices
    items = [device_view(running[ref], owner.get(ref)) for ref in page]
    return DeviceList(total=len(refs), items=items)


@router.get("/{namespace}/{name}", responses=_ERRORS)
async def get_device(
    namespace: str, name: str, _: ReadAccess, gateway: GatewayDep, runtime: RuntimeDep
) -> DeviceDetail:
    supervisor = find_device(runtime, namespace, name)
    owner = gateway.sources.owner if gateway.sources is not None else {}
    return device_detail(supervisor, owner.get(supervisor.device.ref))


@router.get(
    "/{namespace}/{name}/properties/{prop}", responses={**_ERRORS, 502: {"model": ErrorBody}}
)
async def read_property(
    namespace: str,
    name: str,
    prop: str,
    _: ReadAccess,
    runtime: RuntimeDep,
    live: bool = Query(False, description="read the device now instead of the last report"),
) -> PropertyView:
    supervisor = find_device(runtime, namespace, name)
    point = find_property(supervisor, prop)
    if live:
        value = await runtime.read_live(supervisor.device.ref, prop)
        if isinstance(value, DriverError):
            raise ApiError(502, "device_error", str(value) or type(value).__name__)
    return property_view(supervisor, point)


HISTORY_LIMIT = 10_000
"""The most values one history request returns."""

LOCAL_STORE_OFF = (
    "the gateway keeps no local store of values: start it with --local-store "
    "(MAPPER_GATEWAY_LOCAL_STORE=true, or local_store: true in its config file)"
)


@router.get(
    "/{namespace}/{name}/properties/{prop}/history",
    responses={
        **_ERRORS,
        409: {"model": ErrorBody, "description": "the local store is off (--no-local-store)"},
        503: {"model": ErrorBody, "description": "the local store cannot be read"},
    },
)
async def property_history(
    namespace: str,
    name: str,
    prop: str,
    _: ReadAccess,
    gateway: GatewayDep,
    runtime: RuntimeDep,
    since: int = Query(
        0, ge=0, description="only values reported at or after this time, epoch milliseconds"
    ),
    limit: int = Query(
        1000,
        ge=1,
        le=HISTORY_LIMIT,
        description="at most this many values: the newest ones since `since`",
    ),
) -> PropertyHistory:
    """The values the device reported for one property, oldest first, from the gateway's
    local store (``--local-store``). The store is written in batches: the newest second or so
    of values may not be in it yet (the event stream and the property route have them)."""
    supervisor = find_device(runtime, namespace, name)
    point = find_property(supervisor, prop)
    ref = supervisor.device.ref
    if gateway.sinks is None:
        raise ApiError(409, "local_store_off", LOCAL_STORE_OFF, status="refused")
    try:
        samples = await gateway.sinks.history(ref, point.name, since_ms=since, limit=limit)
    except (sqlite3.Error, OSError) as exc:
        raise ApiError(503, "local_store_error", f"the local store cannot be read: {exc}") from exc
    if samples is None:
        raise ApiError(409, "local_store_off", LOCAL_STORE_OFF, status="refused")
    return PropertyHistory(
        device=ref.id,
        property=point.name,
        type=point.type.value,
        samples=[HistorySample(timestamp=s.timestamp_ms, value=s.value) for s in samples],
    )


@router.put(
    "/{namespace}/{name}/properties/{prop}",
    status_code=200,
    responses={
        **_ERRORS,
        202: {"model": WriteResponse, "description": "queued: the device has not answered yet"},
        409: {"model": ErrorBody, "description": "refused by the model (read-only, stale...)"},
        413: {"model": ErrorBody},
        422: {"model": ErrorBody, "description": "refused: wrong type or out of range"},
        502: {"model": ErrorBody, "description": "the device refused or failed the write"},
    },
)
async def write_property(
    namespace: str,
    name: str,
    prop: str,
    body: WriteRequest,
    principal: WriteAccess,
    runtime: RuntimeDep,
    gateway: GatewayDep,
    response: Response,
) -> WriteResponse:
    """Set a desired value; answered when the device applied it (200) or after the runtime's
    write wait (202, still queued)."""
    text = twin_text(body.value)
    ref = DeviceRef(namespace, name)
    try:
        result = await runtime.submit_desired(DesiredChange(ref, prop, text, source="rest"))
    except BaseException as exc:
        result_name = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
        gateway.audit.record(
            "write", principal, result_name, source="rest", target=f"{ref.id}/{prop}", value=text
        )
        raise
    status_code = _status_of(result)
    gateway.audit.record(
        "write",
        principal,
        result.status.value,
        source="rest",
        target=f"{ref.id}/{prop}",
        value=text,
        status=status_code,
        reason=result.reason,
    )
    if status_code >= 300:
        raise ApiError(
            status_code,
            result.reason or result.status.value,
            result.message,
            status=result.status.value,
        )
    response.status_code = status_code
    return WriteResponse(
        status=result.status.value,
        reason=result.reason,
        message=result.message,
        device=ref.id,
        property=prop,
        value=text,
    )


def find_property(supervisor: DeviceSupervisor, prop: str) -> BoundProperty:
    point = supervisor.device.property(prop)
    if point is None:
        ref = supervisor.device.ref
        raise ApiError(
            404,
            "unknown_property",
            f"device {ref.id} has no property {prop!r}",
            status="not_found",
        )
    return point


def _status_of(result: WriteResult) -> int:
    if result.status is WriteStatus.REFUSED:
        return _REFUSED_STATUS.get(result.reason, 409)
    return _STATUS.get(result.status, 500)


def twin_text(value: str | int | float | bool) -> str:
    """A JSON value as the KubeEdge twin string the write path expects."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
