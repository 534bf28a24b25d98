"""Build the API's response models from the runtime's live objects (supervisors, engines)."""

from __future__ import annotations

from mapper_gateway.api.schemas import (
    DeviceDetail,
    DeviceStatsView,
    DeviceView,
    MethodView,
    ModelPropertyView,
    ModelView,
    ProblemView,
    PropertyView,
)
from mapper_sdk import BoundProperty, Problem
from mapper_sdk._supervisor import DeviceSupervisor
from mapper_sdk.models import DeviceModel


def property_view(supervisor: DeviceSupervisor, point: BoundProperty) -> PropertyView:
    state = supervisor.engine.states[point.index]
    model = point.model
    return PropertyView(
        name=point.name,
        type=point.type.value,
        access_mode=point.access_mode.value,
        writable=point.writable,
        unit=model.unit,
        minimum=model.minimum,
        maximum=model.maximum,
        value=state.text,
        timestamp=state.read_at_ms,
        error=state.error,
        desired=state.desired,
    )


def _stats(supervisor: DeviceSupervisor) -> DeviceStatsView:
    stats = supervisor.stats
    return DeviceStatsView(
        reads=stats.reads,
        read_errors=stats.read_errors,
        reports=stats.reports,
        connects=stats.connects,
        connect_failures=stats.connect_failures,
        writes_applied=stats.writes_applied,
        writes_failed=stats.writes_failed,
        last_read_ms=stats.last_read_ms,
    )


def device_fields(supervisor: DeviceSupervisor, source: str | None) -> dict[str, object]:
    device = supervisor.device
    return {
        "id": device.ref.id,
        "namespace": device.ref.namespace,
        "name": device.ref.name,
        "protocol": device.protocol,
        "model": device.model.metadata.name,
        "source": source,
        "state": supervisor.state.value,
        "last_error": supervisor.last_error,
        "properties": [property_view(supervisor, p) for p in device.properties],
        "stats": _stats(supervisor),
    }


def device_view(supervisor: DeviceSupervisor, source: str | None) -> DeviceView:
    return DeviceView.model_validate(device_fields(supervisor, source))


def device_detail(supervisor: DeviceSupervisor, source: str | None) -> DeviceDetail:
    crd = supervisor.device.device
    methods = [
        MethodView(name=m.name, description=m.description, properties=list(m.property_names))
        for m in crd.spec.methods
    ]
    return DeviceDetail.model_validate(
        {
            **device_fields(supervisor, source),
            "labels": dict(crd.metadata.labels),
            "node_name": crd.spec.node_name,
            "methods": methods,
        }
    )


def model_view(model: DeviceModel, devices: int) -> ModelView:
    return ModelView(
        namespace=model.metadata.namespace,
        name=model.metadata.name,
        protocol=model.spec.protocol,
        devices=devices,
        properties=[
            ModelPropertyView(
                name=p.name,
                type=(p.type.value if p.type else "STRING"),
                access_mode=(p.access_mode.value if p.access_mode else "ReadWrite"),
                description=p.description,
                unit=p.unit,
                minimum=p.minimum,
                maximum=p.maximum,
            )
            for p in model.spec.properties
        ],
    )


def problem_view(problem: Problem) -> ProblemView:
    return ProblemView(
        file=problem.file,
        line=problem.line,
        column=problem.column,
        path=problem.path,
        message=problem.message,
        severity=problem.severity,
    )
