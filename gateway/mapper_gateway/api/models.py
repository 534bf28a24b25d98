"""``/api/v1/models`` (the DeviceModels in use) and ``/api/v1/files`` (the devices directory:
which files are in force, which are rejected and why, with ``file:line:col``)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from mapper_gateway.api.schemas import ErrorBody, FilesReport, FileView, ModelView
from mapper_gateway.api.views import model_view, problem_view
from mapper_gateway.deps import GatewayDep, ReadAccess, RuntimeDep
from mapper_gateway.gateway import Gateway
from mapper_gateway.security import ApiError
from mapper_sdk import MapperRuntime
from mapper_sdk.models import DeviceModel

router = APIRouter(prefix="/api/v1", tags=["models"])
_ERRORS: dict[int | str, dict[str, object]] = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}}


def _models(
    gateway: Gateway, runtime: MapperRuntime
) -> tuple[dict[tuple[str, str], DeviceModel], Counter[tuple[str, str]]]:
    models: dict[tuple[str, str], DeviceModel] = {}
    used: Counter[tuple[str, str]] = Counter()
    for supervisor in runtime.devices.values():
        model = supervisor.device.model
        models.setdefault(model.key, model)
        used[model.key] += 1
    if gateway.files is not None:
        for state in gateway.files.files.values():
            for loaded in state.good.models if state.good is not None else ():
                models.setdefault(loaded.obj.key, loaded.obj)
    return models, used


@router.get("/models", responses=_ERRORS)
async def list_models(_: ReadAccess, gateway: GatewayDep, runtime: RuntimeDep) -> list[ModelView]:
    models, used = _models(gateway, runtime)
    return [model_view(models[key], used[key]) for key in sorted(models)]


@router.get("/models/{namespace}/{name}", responses=_ERRORS)
async def get_model(
    namespace: str, name: str, _: ReadAccess, gateway: GatewayDep, runtime: RuntimeDep
) -> ModelView:
    models, used = _models(gateway, runtime)
    model = models.get((namespace, name))
    if model is None:
        raise ApiError(
            404, "unknown_model", f"no DeviceModel {namespace}/{name}", status="not_found"
        )
    return model_view(model, used[(namespace, name)])


@router.get("/files", responses=_ERRORS)
async def list_files(_: ReadAccess, gateway: GatewayDep) -> FilesReport:
    files = gateway.files
    if files is None:
        return FilesReport(directory=None, reloads=0, files=[], problems=[])
    views = [
        FileView(
            file=file,
            ok=state.ok,
            running_last_good=not state.ok and state.good is not None,
            problems=[problem_view(p) for p in state.problems],
        )
        for file, state in sorted(files.files.items())
    ]
    own = {(p.file, p.line, p.column, p.message) for s in files.files.values() for p in s.problems}
    binding = [p for p in files.bind_problems if (p.file, p.line, p.column, p.message) not in own]
    return FilesReport(
        directory=str(files.directory),
        reloads=gateway.reloads,
        files=views,
        problems=[problem_view(p) for p in binding],
    )
