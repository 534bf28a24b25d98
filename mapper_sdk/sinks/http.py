"""HTTP push (``pushMethod.http``): POST samples to ``hostName:port/requestPath``.

Two body formats:

- **json** (default): one request per batch, ``{"samples": [{"device", "namespace", "name",
  "property", "value", "type", "timestamp"}, ...]}`` with ``timestamp`` in ms since the epoch.
- **form**, KubeEdge's format (contract §5.6): one request per sample, the form body
  ``<property>=<value>&time=<YYYY-MM-DD hh:mm:ss>`` (local time, second precision). Use it for
  receivers written for KubeEdge's mapper-framework. It carries no device id, as upstream.

The format is chosen per target by the query parameter ``pushFormat=form`` (or ``json``) in
``requestPath``, which is removed before sending, or for every target by
``SinkHub(http_format="form")``. ``timeout`` is the CRD's milliseconds (0: 10 s).

Unlike the framework, a failed request is never dereferenced as a response (§5.8): connection
errors and 408/429/5xx answers are retried with backoff, other 4xx answers drop the batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import PushMethodHttp
from mapper_sdk.sinks import _httpclient
from mapper_sdk.sinks._base import Sample, SinkError, SinkRejected

Format = Literal["json", "form"]
FORMAT_PARAM = "pushFormat"
_FORM_ALIASES = {"form": "form", "kubeedge": "form", "json": "json"}


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """One HTTP push target. Equal settings share one sink (and its connection pool)."""

    url: str
    format: Format = "json"
    timeout: float = _httpclient.DEFAULT_TIMEOUT

    @classmethod
    def from_crd(cls, crd: PushMethodHttp, default_format: Format = "json") -> HttpSettings:
        host = crd.host_name.strip().rstrip("/")
        if not host:
            raise ConfigError("pushMethod.http.hostName is empty")
        if "://" not in host:
            host = f"http://{host}"  # upstream requires the scheme; be lenient
        parts = urlsplit(host)
        netloc = parts.netloc
        if crd.port and parts.port is None:
            netloc = f"{netloc}:{crd.port}"
        path_parts = urlsplit(crd.request_path or "/")
        path = path_parts.path if path_parts.path.startswith("/") else f"/{path_parts.path}"
        fmt: Format = default_format
        query = []
        for key, value in parse_qsl(path_parts.query, keep_blank_values=True):
            if key == FORMAT_PARAM:
                if value.lower() not in _FORM_ALIASES:
                    raise ConfigError(
                        f"pushMethod.http: {FORMAT_PARAM}={value!r}: use form or json"
                    )
                fmt = "form" if _FORM_ALIASES[value.lower()] == "form" else "json"
            else:
                query.append((key, value))
        url = urlunsplit((parts.scheme, netloc, path, urlencode(query), ""))
        timeout = crd.timeout / 1000 if crd.timeout > 0 else _httpclient.DEFAULT_TIMEOUT
        return cls(url=url, format=fmt, timeout=timeout)

    def build(self) -> HttpSink:
        return HttpSink(self)


def kubeedge_time(timestamp_ms: int) -> str:
    """``YYYY-MM-DD hh:mm:ss`` in local time, like Go's ``time.Now().Format(...)`` upstream."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp_ms / 1000))


def form_body(sample: Sample) -> bytes:
    """KubeEdge's form body for one sample."""
    fields = [(sample.property, sample.value), ("time", kubeedge_time(sample.timestamp_ms))]
    return urlencode(fields).encode()


def json_body(batch: Sequence[Sample]) -> bytes:
    return orjson.dumps({"samples": [s.to_dict() for s in batch]})


class HttpSink:
    """POSTs batches (json) or single samples (form) to one URL."""

    def __init__(self, settings: HttpSettings) -> None:
        self.settings = settings
        self.name = f"http {settings.url}"
        self._http: Any = _httpclient.client("http", settings.timeout)

    async def open(self) -> None:
        """Nothing to prepare: connections open on the first request."""

    async def write(self, batch: Sequence[Sample]) -> None:
        s = self.settings
        if s.format == "json":
            headers = {"Content-Type": "application/json"}
            await _httpclient.post(self._http, self.name, s.url, json_body(batch), headers)
            return
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        # One request per value, as upstream. After a failure half-way only the samples not
        # yet accepted are retried.
        for done, sample in enumerate(batch):
            try:
                await _httpclient.post(self._http, self.name, s.url, form_body(sample), headers)
            except SinkError as exc:
                if isinstance(exc, SinkRejected):
                    raise
                raise SinkError(str(exc), written=done) from exc

    async def aclose(self) -> None:
        await self._http.aclose()
