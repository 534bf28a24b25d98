"""The REST API's routers, one module per area (see ``app.create_app``)."""

from __future__ import annotations

from fastapi import APIRouter

from mapper_gateway.api import devices, docs, events, health, meta, metrics, models

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    devices.router,
    models.router,
    meta.router,
    events.router,
    metrics.router,
    docs.router,
)
