"""FastAPI dependencies: the started gateway, its runtime, and the read and write guards.

Authentication is a dependency of each route (``ReadAccess``, ``WriteAccess``), never a
path-prefix middleware: a route is protected because it asks for a principal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mapper_gateway.gateway import Gateway
from mapper_gateway.security import ApiError, Principal
from mapper_sdk import DeviceRef, MapperRuntime
from mapper_sdk._supervisor import DeviceSupervisor


async def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def get_runtime(gateway: GatewayDep) -> MapperRuntime:
    return gateway.require_runtime()


RuntimeDep = Annotated[MapperRuntime, Depends(get_runtime)]


def client_of(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else "unknown"


def _bearer(request: Request, *, allow_query: bool) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    if allow_query:
        # EventSource and a first page load cannot send headers; reads only, never writes.
        return request.query_params.get("token")
    return None


async def require_read(request: Request, gateway: GatewayDep) -> Principal:
    host = request.client.host if request.client is not None else "unknown"
    principal = gateway.guard.check(_bearer(request, allow_query=True), host, write=False)
    request.state.principal = principal
    return principal


async def require_write(request: Request, gateway: GatewayDep) -> Principal:
    host = request.client.host if request.client is not None else "unknown"
    try:
        principal = gateway.guard.check(_bearer(request, allow_query=False), host, write=True)
    except ApiError as exc:
        who = Principal("anonymous", client_of(request))
        gateway.audit.record(
            "write",
            who,
            exc.reason,
            method=request.method,
            path=request.url.path,
            status=exc.status_code,
        )
        raise
    request.state.principal = Principal(principal.name, client_of(request))
    return request.state.principal  # type: ignore[no-any-return]


ReadAccess = Annotated[Principal, Depends(require_read)]
WriteAccess = Annotated[Principal, Depends(require_write)]


def find_device(runtime: MapperRuntime, namespace: str, name: str) -> DeviceSupervisor:
    supervisor = runtime.supervisor(DeviceRef(namespace, name))
    if supervisor is None:
        raise ApiError(404, "unknown_device", f"no device {namespace}/{name}", status="not_found")
    return supervisor
