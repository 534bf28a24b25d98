"""KubeEdge mapper-framework REST API (contract §5.5), so existing tools keep working.

Served read-only, with two deliberate differences from upstream:

- ``GET /api/v1/device/{ns}/{name}/{property}`` reads the device live but does *not* first
  re-apply the desired value (upstream does, so a read can write).
- Writes are never accepted over GET. Upstream's write route
  ``/api/v1/devicemethod/{ns}/{name}/{method}/{property}/{data}`` answers ``405`` to GET with a
  pointer to the JSON ``PUT`` route, and is served as ``POST`` (token required, audited, the
  same checks as every write), so a tool only has to change its verb.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from mapper_gateway.api.devices import router as devices_router
from mapper_gateway.api.devices import write_property
from mapper_gateway.api.schemas import (
    KubeEdgeMethod,
    KubeEdgeMethods,
    KubeEdgeMethodsData,
    KubeEdgeModel,
    KubeEdgeModelProperty,
    KubeEdgeParameter,
    KubeEdgePing,
    KubeEdgeRead,
    KubeEdgeReadData,
    WriteRequest,
    WriteResponse,
)
from mapper_gateway.deps import (
    GatewayDep,
    ReadAccess,
    RuntimeDep,
    WriteAccess,
    client_of,
    find_device,
)
from mapper_gateway.security import ApiError, Principal
from mapper_sdk import DeviceRef, DriverError
from mapper_sdk.models import DeviceModel

router = APIRouter(prefix="/api/v1", tags=["kubeedge"])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@router.get("/ping")
async def ping(_: ReadAccess) -> KubeEdgePing:
    return KubeEdgePing(timeStamp=_now(), Message="This is v1 API, the server is running normally.")


@router.get("/device/{namespace}/{name}/{prop}", response_model=KubeEdgeRead)
async def read_device(
    namespace: str, name: str, prop: str, _: ReadAccess, runtime: RuntimeDep
) -> KubeEdgeRead | PlainTextResponse:
    supervisor = runtime.supervisor(DeviceRef(namespace, name))
    point = supervisor.device.property(prop) if supervisor is not None else None
    if supervisor is None or point is None:
        return PlainTextResponse(f"device {namespace}/{name} has no property {prop}", 500)
    value = await runtime.read_live(supervisor.device.ref, prop)
    state = supervisor.engine.states[point.index]
    if isinstance(value, DriverError) or state.text is None:
        why = str(value) if isinstance(value, DriverError) else "no usable value"
        return PlainTextResponse(f"read {namespace}/{name}/{prop} failed: {why}", 500)
    data = KubeEdgeReadData(
        DeviceName=name,
        PropertyName=prop,
        Namespace=namespace,
        Value=state.text,
        Type=point.type.value.lower(),
        TimeStamp=state.read_at_ms or 0,
    )
    return KubeEdgeRead(timeStamp=_now(), Data=data)


@router.get("/devicemethod/{namespace}/{name}")
async def device_methods(
    namespace: str, name: str, _: ReadAccess, runtime: RuntimeDep
) -> KubeEdgeMethods:
    supervisor = find_device(runtime, namespace, name)
    device = supervisor.device
    methods = []
    for method in device.device.spec.methods:
        parameters = []
        for prop in method.property_names:
            point = device.property(prop)
            value_type = point.type.value.lower() if point is not None else "string"
            parameters.append(KubeEdgeParameter(PropertyName=prop, ValueType=value_type))
        path = f"/api/v1/devicemethod/{namespace}/{name}/{method.name}/{{propertyName}}/{{data}}"
        methods.append(KubeEdgeMethod(Name=method.name, Path=path, Parameters=parameters))
    return KubeEdgeMethods(timeStamp=_now(), Data=KubeEdgeMethodsData(Methods=methods))


@router.get("/devicemethod/{namespace}/{name}/{method}/{prop}/{data}", status_code=405)
async def write_over_get(
    namespace: str,
    name: str,
    method: str,
    prop: str,
    data: str,
    principal: ReadAccess,
    request: Request,
    gateway: GatewayDep,
) -> JSONResponse:
    """Refused: a GET never changes a device. Use the PUT route, or POST on this path."""
    target = f"{devices_router.prefix}/{namespace}/{name}/properties/{prop}"
    gateway.audit.record(
        "write",
        Principal(principal.name, client_of(request)),
        "method_not_allowed",
        method="GET",
        path=request.url.path,
        status=405,
    )
    body = {
        "status": "refused",
        "reason": "method_not_allowed",
        "message": f"writes are never accepted over GET: PUT {target} with the JSON body "
        f'{{"value": "{data}"}} (or POST to this path) and a bearer token',
    }
    return JSONResponse(body, status_code=405, headers={"Allow": "POST"})


@router.post("/devicemethod/{namespace}/{name}/{method}/{prop}/{data}")
async def write_by_method(
    namespace: str,
    name: str,
    method: str,
    prop: str,
    data: str,
    principal: WriteAccess,
    runtime: RuntimeDep,
    gateway: GatewayDep,
    response: Response,
) -> WriteResponse:
    """Upstream's method write, as POST: the method must exist and list the property."""
    supervisor = runtime.supervisor(DeviceRef(namespace, name))
    methods = {m.name: m for m in supervisor.device.device.spec.methods} if supervisor else {}
    found = methods.get(method)
    if supervisor is None or found is None or prop not in found.property_names:
        error = ApiError(
            404,
            "unknown_device" if supervisor is None else "unknown_method",
            f"no device {namespace}/{name}"
            if supervisor is None
            else f"device {namespace}/{name} has no method {method!r} for property {prop!r}",
            status="not_found",
        )
        gateway.audit.record(
            "write",
            principal,
            "refused",
            source="rest",
            target=f"{namespace}/{name}/{prop}",
            value=data,
            status=404,
            reason=error.reason,
        )
        raise error
    return await write_property(
        namespace, name, prop, WriteRequest(value=data), principal, runtime, gateway, response
    )


@router.get("/meta/model/{namespace}/{name}")
async def model_meta(
    namespace: str, name: str, _: ReadAccess, runtime: RuntimeDep
) -> KubeEdgeModel:
    """The model named ``namespace/name``, or the model of the device of that name."""
    model = _find_model(runtime, namespace, name)
    if model is None:
        raise ApiError(
            404, "unknown_model", f"no DeviceModel or Device {namespace}/{name}", status="not_found"
        )
    properties = [
        KubeEdgeModelProperty(
            name=p.name,
            dataType=(p.type.value.lower() if p.type else "string"),
            description=p.description,
            accessMode=(p.access_mode.value if p.access_mode else "ReadWrite"),
            minimum=p.minimum or "",
            maximum=p.maximum or "",
            unit=p.unit or "",
        )
        for p in model.spec.properties
    ]
    meta = model.metadata
    return KubeEdgeModel(
        timeStamp=_now(),
        id=f"{meta.namespace}/{meta.name}",
        name=meta.name,
        namespace=meta.namespace,
        description=meta.annotations.get("description", ""),
        properties=properties,
    )


def _find_model(runtime: RuntimeDep, namespace: str, name: str) -> DeviceModel | None:
    device_model = None
    for ref, supervisor in runtime.devices.items():
        model = supervisor.device.model
        if model.key == (namespace, name):
            return model
        if ref == DeviceRef(namespace, name):
            device_model = model
    return device_model
