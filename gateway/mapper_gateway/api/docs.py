"""``/openapi.json`` and ``/docs`` under the same access rule as every read.

FastAPI serves both without any check; on a gateway bound beyond loopback that would publish
the API's shape to anyone. These routes ask for ``ReadAccess`` like the data routes do (the
token may come in the query, which the Swagger page passes on to its ``openapi.json`` fetch).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from mapper_gateway.deps import ReadAccess

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(_: ReadAccess, request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(_: ReadAccess, request: Request) -> HTMLResponse:
    token = request.query_params.get("token")
    url = "/openapi.json" + (f"?token={quote(token, safe='')}" if token else "")
    return get_swagger_ui_html(openapi_url=url, title="mapper-gateway API")
