"""``create_app``: the FastAPI application over a started ``Gateway``.

The application owns HTTP only: routes, the uniform error body ``{status, reason, message}``,
the body size limit and the audit of refused writes that never reach a route. The gateway's
lifecycle belongs to whoever created it (``__main__`` or a test), so the app has no lifespan
of its own and can be served by uvicorn or driven by an in-process test client alike.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Scope

from mapper_gateway import __version__, dashboard
from mapper_gateway.api import ROUTERS
from mapper_gateway.gateway import Gateway
from mapper_gateway.limits import BodyLimit
from mapper_gateway.metrics import make_registry
from mapper_gateway.security import ApiError, Principal

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HTTP_RESULTS = {404: "no_route", 405: "method_not_allowed"}


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="mapper-gateway",
        version=__version__,
        description="KubeEdge-compatible device gateway: devices, properties, writes, events.",
        # Served by api/docs.py behind the read guard instead of FastAPI's open defaults.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway
    app.state.metrics = make_registry(gateway)
    for router in ROUTERS:
        app.include_router(router)
    dashboard.install(app)  # the page at / (see dashboard.py)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]

    def audit_refused(scope: Scope, status: int) -> None:
        if scope["method"] in WRITE_METHODS:
            who = Principal("unchecked", _client(scope))
            result = "too_large" if status == 413 else "bad_request"
            gateway.audit.record(
                "write", who, result, method=scope["method"], path=scope["path"], status=status
            )

    app.add_middleware(
        BodyLimit, max_bytes=gateway.settings.max_body_bytes, on_refused=audit_refused
    )
    return app


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    where = ", ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in errors
    )
    if request.method in WRITE_METHODS:
        who = getattr(request.state, "principal", None) or Principal(
            "unchecked", _client(request.scope)
        )
        _gateway(request).audit.record(
            "write", who, "invalid", method=request.method, path=request.url.path, status=422
        )
    body = {"status": "invalid", "reason": "validation", "message": where}
    return JSONResponse(body, status_code=422)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own refusals (no such route, method not allowed): a write is audited too."""
    if request.method in WRITE_METHODS:
        who = Principal("unchecked", _client(request.scope))
        _gateway(request).audit.record(
            "write",
            who,
            _HTTP_RESULTS.get(exc.status_code, "bad_request"),
            method=request.method,
            path=request.url.path,
            status=exc.status_code,
        )
    return await http_exception_handler(request, exc)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"
