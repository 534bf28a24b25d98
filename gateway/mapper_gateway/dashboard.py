"""The dashboard: one static page at ``/`` with its script and stylesheet, no build step.

The page holds no data: it is the same bytes for every gateway (they ship in the wheel), and
everything it shows comes from the guarded API (``GET /api/v1/devices``, then the event
stream). So the shell is served without a token, like ``/healthz``; that lets a person open
it on an exposed gateway and type the token into the page instead of a URL.

``install`` also redacts ``token=`` from uvicorn's access log. The gateway runs uvicorn with
the access log off, but the demo prints a URL carrying the token and the page's event stream
sends it in the query (EventSource cannot send headers), so anyone turning the access log on
to debug must not write the token into a log file.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

from mapper_gateway.security import ApiError

STATIC = Path(__file__).resolve().parent / "static"

# Only these files are served: a fixed list cannot be walked out of with ``..``.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page loads nothing from elsewhere (it must work offline) and runs no inline code.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?token=
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded gateway serves its new page
}

router = APIRouter(include_in_schema=False)


@functools.cache
def _asset(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/")
async def index() -> Response:
    """The dashboard page."""
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no static file {name!r}", status="not_found")
    return Response(_asset(name), media_type=media_type, headers=_HEADERS)


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#\s\"]*")


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` query parameter replaced."""
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactToken(logging.Filter):
    """Rewrites a log record's message and arguments so no ``?token=`` value survives."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


REDACT_FILTER = RedactToken()


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` and keep its token out of the access log."""
    app.include_router(router)
    # A logger holds a filter object once however often this runs (one app per test).
    logging.getLogger("uvicorn.access").addFilter(REDACT_FILTER)
