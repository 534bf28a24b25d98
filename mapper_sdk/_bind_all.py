"""``bind_all``: every loaded device joined with its model and driver, problems located.

Duplicate objects, missing models and drivers, and the binding problems of
``mapper_sdk.binding`` become ``Problem`` entries pointing into the files they came from; a
model's own problems are reported once, at the model, not once per device using it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from mapper_sdk._load_result import Loaded, LoadResult, Source, format_path, gc_paused
from mapper_sdk.binding import BindProblem, BoundDevice, bind
from mapper_sdk.errors import Problem
from mapper_sdk.models import Device, DeviceModel

if TYPE_CHECKING:
    from mapper_sdk._registry import Registry
    from mapper_sdk.driver import DriverClass

Named = TypeVar("Named", Device, DeviceModel)


def bind_all(result: LoadResult, registry: Registry) -> tuple[list[BoundDevice], list[Problem]]:
    """Bind every loaded device to its model and driver.

    Returns the devices that are ready to run (bound without errors *and* with a driver) and
    the problems found: duplicate objects, missing models, binding errors and warnings. A
    protocol without an installed driver is a warning, not an error: the files are valid.
    """
    with gc_paused():
        binder = _BindAll(result, registry)
        for loaded in binder.unique(result.devices, "Device"):
            binder.device(loaded)
        return binder.bound, binder.problems


class _BindAll:
    def __init__(self, result: LoadResult, registry: Registry) -> None:
        self.registry = registry
        self.problems: list[Problem] = []
        self.bound: list[BoundDevice] = []
        self.models = {m.obj.key: m for m in self.unique(result.models, "DeviceModel")}
        self.drivers: dict[str, DriverClass | None] = {}
        self.model_problems: set[tuple[int, str, str]] = set()

    def unique(self, objects: list[Loaded[Named]], kind: str) -> list[Loaded[Named]]:
        first: dict[tuple[str, str], Loaded[Named]] = {}
        for loaded in objects:
            key = (loaded.obj.metadata.namespace, loaded.obj.metadata.name)
            if key in first:
                message = (
                    f"duplicate {kind} {key[0]}/{key[1]}: "
                    f"already defined at {first[key].source.where()}"
                )
                self.problems.append(loaded.source.problem(("metadata", "name"), message))
            else:
                first[key] = loaded
        return list(first.values())

    def driver(self, protocol: str) -> DriverClass | None:
        if protocol not in self.drivers:
            self.drivers[protocol] = self.registry.get(protocol) if protocol else None
        return self.drivers[protocol]

    def device(self, loaded: Loaded[Device]) -> None:
        device, source = loaded.obj, loaded.source
        model = self.find_model(loaded)
        if model is None:
            return
        protocol = device.spec.protocol.protocol_name
        driver = self.driver(protocol)
        if driver is None and protocol:
            self.problems.append(
                source.problem(
                    ("spec", "protocol", "protocolName"),
                    self.registry.why_unavailable(protocol),
                    "warning",
                )
            )
        bound, problems = bind(device, model.obj, driver)
        for problem in problems:
            self.add(problem, source, model.source)
        if bound is not None and driver is not None:
            self.bound.append(bound)

    def find_model(self, loaded: Loaded[Device]) -> Loaded[DeviceModel] | None:
        namespace, name = loaded.obj.model_key
        path = ("spec", "deviceModelRef", "name")
        if not name:
            self.problems.append(loaded.source.problem(path, "is required"))
            return None
        model = self.models.get((namespace, name))
        if model is None:
            there = sorted(n for ns, n in self.models if ns == namespace)
            known = ", ".join(there[:20]) + (", ..." if len(there) > 20 else "") or "none"
            message = (
                f"DeviceModel {name} not found in namespace {namespace}; models there: {known}"
            )
            self.problems.append(loaded.source.problem(path, message))
        return model

    def add(self, problem: BindProblem, device: Source, model: Source) -> None:
        if problem.in_model:
            # Every device of a model would repeat the model's own problems: report each once.
            key = (id(model), format_path(problem.path), problem.message)
            if key in self.model_problems:
                return
            self.model_problems.add(key)
        source = model if problem.in_model else device
        self.problems.append(source.problem(problem.path, problem.message, problem.severity))
