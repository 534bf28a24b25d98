"""``/openapi.json`` and ``/docs`` under the same access rule as every read, served offline.

FastAPI serves both without any check and loads Swagger UI from a CDN; on a gateway bound
beyond loopback the first publishes the API's shape to anyone, and on an edge box without
internet the second is a blank page. Here the two routes ask for ``ReadAccess`` like the data
routes, and Swagger UI comes from the gateway itself (``static/swagger-ui``, vendored from the
npm package ``swagger-ui-dist`` with its license; see ``SOURCE`` there).

The page's files (``/docs/assets/...``) are the same bytes in every installation, like the
dashboard's, so they need no token. The page passes its ``?token=`` to the API as a bearer
header (``static/docs.js``); its policy allows nothing but the gateway's own origin.
"""

from __future__ import annotations

import functools
import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mapper_gateway.dashboard import STATIC
from mapper_gateway.deps import ReadAccess
from mapper_gateway.security import ApiError

router = APIRouter(include_in_schema=False)

PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mapper-gateway API</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/docs.js"></script>
</body>
</html>
"""

# Only these files are served (a fixed list cannot be walked out of with ``..``).
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css; charset=utf-8"),
    "favicon-32x32.png": ("swagger-ui/favicon-32x32.png", "image/png"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
}

_HEADERS = {
    # Swagger UI sets style attributes from script, hence 'unsafe-inline' for styles only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?token=
    "X-Content-Type-Options": "nosniff",
}


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """The file's bytes and its ETag (read once, on first use: /docs is rarely opened)."""
    data = (STATIC / ASSETS[name][0]).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


@router.get("/openapi.json")
async def openapi(_: ReadAccess, request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(_: ReadAccess) -> HTMLResponse:
    return HTMLResponse(PAGE, headers={**_HEADERS, "Cache-Control": "no-store"})


@router.get("/docs/assets/{name}")
async def asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no docs file {name!r}", status="not_found")
    data, etag = _asset(name)
    headers = {**_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}  # revalidate: cheap 304
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=ASSETS[name][1], headers=headers)
