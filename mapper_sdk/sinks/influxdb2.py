"""InfluxDB 2 (``dbMethod.influxdb2``, extra ``influxdb2``): line protocol over HTTP.

Each batch is one ``POST <url>/api/v2/write?org=<org>&bucket=<bucket>&precision=ms`` with
``Authorization: Token $TOKEN`` (the token from the environment, never from the CRD) and a
``text/plain`` body of line-protocol lines::

    <measurement>,<tags> <fieldKey>=<value> <timestamp ms>

We speak the documented wire format with httpx instead of pulling in the official client.

Differences from upstream (contract §5.6), which writes the value as a string field at the
time of the write:

- the timestamp is the sample's (the time it was read), not the time it reached the sink;
- the field is typed from the twin type: ``int`` as an integer (``42i``), ``float`` as a float,
  ``boolean`` as a boolean, anything else (or a value that does not parse) as a string;
- tags ``device`` (``namespace/name``) and ``property`` are added unless the CRD's ``tag`` map
  sets those keys, so properties sharing a measurement stay distinct series;
- an empty ``measurement`` defaults to the property name, an empty ``fieldKey`` to ``value``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from mapper_sdk.errors import ConfigError
from mapper_sdk.models.device import DbMethodInfluxdb2
from mapper_sdk.sinks import _httpclient
from mapper_sdk.sinks._base import Sample, secret


@dataclass(frozen=True, slots=True)
class InfluxRoute:
    """Per-property settings: the measurement, the CRD's tags and the field key."""

    measurement: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    field_key: str = ""


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    """One bucket on one server. Equal settings share one sink."""

    url: str
    org: str
    bucket: str
    token: str | None = field(default=None, repr=False)
    timeout: float = _httpclient.DEFAULT_TIMEOUT

    @classmethod
    def from_crd(
        cls, crd: DbMethodInfluxdb2, env: Mapping[str, str] | None = None
    ) -> tuple[InfluxSettings, InfluxRoute]:
        client, data = crd.influxdb2_client_config, crd.influxdb2_data_config
        if client is None or not client.url or not client.bucket:
            raise ConfigError("dbMethod.influxdb2.influxdb2ClientConfig needs url and bucket")
        url = client.url.rstrip("/")
        if "://" not in url:
            url = f"http://{url}"
        route = InfluxRoute()
        if data is not None:
            tags = tuple(sorted((str(k), str(v)) for k, v in data.tag.items()))
            route = InfluxRoute(data.measurement, tags, data.field_key)
        return cls(url, client.org, client.bucket, secret(env, "TOKEN")), route

    def build(self) -> InfluxSink:
        return InfluxSink(self)

    @property
    def write_url(self) -> str:
        query = urlencode({"org": self.org, "bucket": self.bucket, "precision": "ms"})
        return f"{self.url}/api/v2/write?{query}"


def _escape(text: str, specials: str) -> str:
    text = text.replace("\\", "\\\\")
    for char in specials:
        text = text.replace(char, f"\\{char}")
    # Line protocol has no escape for line breaks in keys and tags: they would end the line.
    return text.replace("\n", "\\n").replace("\r", "\\r")


def field_value(value: str, twin_type: str) -> str:
    """The line-protocol field value for a twin string of ``twin_type``."""
    if twin_type == "int":
        try:
            return f"{int(value)}i"
        except ValueError:
            pass
    elif twin_type == "float":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return repr(number)
    elif twin_type == "boolean" and value.lower() in ("true", "false"):
        return value.lower()
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(sample: Sample, route: InfluxRoute) -> str:
    """One line of line protocol for ``sample``."""
    measurement = _escape(route.measurement or sample.property, ", ")
    tags = dict(route.tags)
    tags.setdefault("device", sample.device_id)
    tags.setdefault("property", sample.property)
    tag_text = "".join(
        f",{_escape(k, ',= ')}={_escape(v, ',= ')}" for k, v in sorted(tags.items()) if v != ""
    )
    key = _escape(route.field_key or "value", ",= ")
    return f"{measurement}{tag_text} {key}={field_value(sample.value, sample.type)} " + str(
        sample.timestamp_ms
    )


class InfluxSink:
    """Writes each batch as one line-protocol request."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.name = f"influxdb2 {settings.url} {settings.org}/{settings.bucket}"
        headers = {"Content-Type": "text/plain; charset=utf-8", "Accept": "application/json"}
        if settings.token:
            headers["Authorization"] = f"Token {settings.token}"
        self._http: Any = _httpclient.client("influxdb2", settings.timeout, headers)

    async def open(self) -> None:
        """Nothing to prepare: the bucket must exist (401/404 answers are retried)."""

    async def write(self, batch: Sequence[Sample]) -> None:
        lines = []
        for sample in batch:
            route = sample.route if isinstance(sample.route, InfluxRoute) else InfluxRoute()
            lines.append(line(sample, route))
        body = ("\n".join(lines) + "\n").encode()
        # InfluxDB answers 204 No Content; 400/413/422 (bad lines, too large) drop the batch.
        await _httpclient.post(self._http, self.name, self.settings.write_url, body)

    async def aclose(self) -> None:
        await self._http.aclose()
