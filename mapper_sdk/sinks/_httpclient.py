"""The HTTP plumbing of the HTTP-based sinks (http, otel, influxdb2, tdengine): one pooled
``httpx.AsyncClient`` per sink and one rule for which answers are worth retrying.

httpx is an optional dependency (extra ``http``; the influxdb2, tdengine and otel extras pull
it too): a mapper that only reports to EdgeCore never installs it.
"""

from __future__ import annotations

from typing import Any

from mapper_sdk.sinks._base import SinkError, SinkRejected, require

DEFAULT_TIMEOUT = 10.0
"""Seconds, when the CRD gives no (or a zero) timeout."""

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Answers that say "later" rather than "never" (the OTLP/HTTP spec's list plus 408, 425
and 500: a server error is usually the server's state, not the batch)."""


def client(extra: str, timeout: float, headers: dict[str, str] | None = None) -> Any:
    """A pooled client with a whole-request ``timeout``; the library's error names ``extra``."""
    httpx = require("httpx", extra)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        headers=headers or {},
        # A sink is one destination: a couple of kept-alive connections is all it needs.
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        follow_redirects=False,
        trust_env=False,  # proxies and netrc credentials from the environment are not ours
    )


OPERATOR_STATUS = frozenset({401, 403, 404})
"""Wrong credentials or a missing bucket are fixed by an operator, not by dropping data: keep
retrying (the bounded queue drops the oldest meanwhile)."""


async def post(
    http: Any,
    name: str,
    url: str,
    content: bytes,
    headers: dict[str, str] | None = None,
    *,
    retry: frozenset[int] = RETRYABLE_STATUS | OPERATOR_STATUS,
) -> Any:
    """POST and classify the outcome: the response on 2xx, ``SinkError`` (retry) for a status
    in ``retry`` or a transport error, ``SinkRejected`` (drop) for any other status."""
    httpx = require("httpx", "http")
    try:
        response = await http.post(url, content=content, headers=headers)
    except httpx.HTTPError as exc:
        # Connect refused, timeout, reset: the server may come back.
        raise SinkError(f"{name}: {type(exc).__name__}: {exc}") from exc
    status = int(response.status_code)
    if 200 <= status < 300:
        return response
    detail = f"{name}: HTTP {status} {_snippet(response.text)}".rstrip()
    if status in retry:
        raise SinkError(detail)
    raise SinkRejected(detail)


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
