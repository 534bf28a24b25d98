"""``/healthz`` (the process answers) and ``/readyz`` (bus connected and devices loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from mapper_gateway.api.schemas import ErrorBody, Health, Readiness
from mapper_gateway.deps import GatewayDep, ReadAccess

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: no token needed, no state read."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready"}, 401: {"model": ErrorBody}},
)
async def readyz(_: ReadAccess, gateway: GatewayDep) -> Readiness | JSONResponse:
    waiting = gateway.readiness()
    runtime = gateway.runtime
    body = Readiness(
        ready=not waiting, waiting=waiting, devices=len(runtime.devices) if runtime else 0
    )
    if waiting:
        return JSONResponse(body.model_dump(), status_code=503)
    return body
