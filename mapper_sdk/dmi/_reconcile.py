"""The diff/apply side of the DMI link: the wanted set, bound, handed to ``MapperRuntime.apply``.

One task applies changes, however many calls made them: it waits for the wanted set to change,
saves it (``_autonomy``), binds every device to its model and driver (reusing the binding of a
device whose spec and model did not change) and gives the whole list to the runtime, which diffs
it: an unchanged device keeps running, a desired-only change becomes writes, anything else
restarts just that device.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mapper_sdk._registry import Registry
from mapper_sdk.binding import BindProblem, BoundDevice, DeviceRef, bind
from mapper_sdk.dmi._autonomy import SpecKeeper
from mapper_sdk.dmi._wanted import Wanted
from mapper_sdk.dmi.settings import DmiStats
from mapper_sdk.models import Device, DeviceModel

if TYPE_CHECKING:
    from mapper_sdk.runtime import MapperRuntime

log = logging.getLogger("mapper_sdk.dmi")


class Reconciler:
    """Applies the newest ``Wanted`` generation to the runtime; see the module docstring.

    ``registry`` validates each device's configData while binding; set it before ``run``.
    """

    def __init__(self, wanted: Wanted, keeper: SpecKeeper, stats: DmiStats) -> None:
        self.registry: Registry | None = None
        self._wanted = wanted
        self._keeper = keeper
        self._stats = stats
        self._bound: dict[DeviceRef, tuple[Device, DeviceModel, BoundDevice]] = {}
        self._logged: dict[DeviceRef, str] = {}  # the last problem logged per device, to log once
        self._applied_generation = 0
        self._applied = asyncio.Event()

    async def wait_applied(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every change made so far has been applied to the runtime."""
        target = self._wanted.generation
        async with asyncio.timeout(timeout):
            while self._applied_generation < target:
                self._applied.clear()
                await self._applied.wait()

    async def run(self, runtime: MapperRuntime) -> None:
        wanted = self._wanted
        while True:
            await wanted.dirty.wait()
            wanted.dirty.clear()
            generation = wanted.generation
            # Saved before it is applied: a change EdgeCore was told we took must survive a
            # crash during a long apply.
            await self._keeper.persist(generation)
            try:
                self._stats.last_apply = await runtime.apply(self._bind_all())
                self._stats.applies += 1
            except Exception:  # a bug in one apply must not stop later ones
                log.exception("applying the devices from EdgeCore failed")
            self._applied_generation = generation
            self._applied.set()

    def _bind_all(self) -> list[BoundDevice]:
        devices = self._wanted.devices
        bound = []
        for ref, device in devices.items():
            result = self._bind_one(ref, device)
            if result is not None:
                bound.append(result)
        for ref in [r for r in self._bound if r not in devices]:
            del self._bound[ref]
            self._logged.pop(ref, None)
        return bound

    def _bind_one(self, ref: DeviceRef, device: Device) -> BoundDevice | None:
        cached = self._bound.get(ref)
        model = self._wanted.models.get(device.model_key)
        if model is None:
            if cached is not None and cached[0] is device:
                return cached[2]  # the model was removed; the device keeps what it runs with
            self._log_once(
                ref,
                f"device {ref} waits for its DeviceModel {device.spec.device_model_ref.name!r}, "
                "which EdgeCore has not sent",
                error=False,
            )
            return None
        if cached is not None and cached[0] is device and cached[1] is model:
            return cached[2]
        assert self.registry is not None
        driver = self.registry.get(device.spec.protocol.protocol_name)
        result, problems = bind(device, model, driver)
        if problems:
            self._log_once(
                ref, _describe(ref, problems, skipped=result is None), error=result is None
            )
        else:
            self._logged.pop(ref, None)
        if result is not None:
            self._bound[ref] = (device, model, result)
        return result

    def _log_once(self, ref: DeviceRef, message: str, *, error: bool = True) -> None:
        if self._logged.get(ref) != message:
            self._logged[ref] = message
            log.log(logging.ERROR if error else logging.WARNING, "%s", message)


def _describe(ref: DeviceRef, problems: list[BindProblem], *, skipped: bool) -> str:
    """One log line with every binding problem of a device, each with its field path."""
    parts = []
    for p in problems:
        where = ("model " if p.in_model else "") + ".".join(map(str, p.path))
        parts.append(f"{where}: {p.message}" + (" (warning)" if p.severity != "error" else ""))
    return f"device {ref}: " + "; ".join(parts) + (" -- the device is skipped" if skipped else "")
