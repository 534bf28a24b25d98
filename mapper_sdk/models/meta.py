"""Kubernetes object metadata, as much of it as a device mapper needs."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from mapper_sdk.models._base import CrdModel

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _subdomain(value: str) -> str:
    # Names end up in MQTT topics, file names and socket paths: the Kubernetes rule keeps out
    # '/', '+', '#', '..' and every other character that could escape those.
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit (at most 253 characters)"
        )
    return value


def _label(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            "must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (at most 63 characters)"
        )
    return value


ObjectName = Annotated[str, AfterValidator(_subdomain)]
NamespaceName = Annotated[str, AfterValidator(_label)]


class ObjectMeta(CrdModel):
    """``metadata`` of a Kubernetes object. The namespace defaults to ``default``."""

    name: ObjectName
    namespace: NamespaceName = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    owner_references: list[dict[str, Any]] | None = None
