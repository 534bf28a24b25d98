"""Edge autonomy of the DMI link: "what EdgeCore wants" kept in the state directory.

Saved after every change EdgeCore made and before it is applied, so a change EdgeCore was told
we took survives a crash during a long apply; loaded at start, so a mapper restarted while
EdgeCore or the cloud is unreachable runs its last known devices, desired values included,
until ``MapperRegister`` answers (then the answer replaces the set, applied as a diff).
"""

from __future__ import annotations

import asyncio
import logging

from mapper_sdk._spec_store import SpecStore
from mapper_sdk.dmi._wanted import Wanted, device_ref
from mapper_sdk.dmi.settings import DmiStats
from mapper_sdk.models import Device, DeviceModel

log = logging.getLogger("mapper_sdk.dmi")


class SpecKeeper:
    """Loads and saves a ``Wanted`` set; does nothing without a store."""

    def __init__(self, store: SpecStore | None, wanted: Wanted, stats: DmiStats) -> None:
        self._store = store
        self._wanted = wanted
        self._stats = stats
        self._saved_generation = 0
        self._save_task: asyncio.Task[None] | None = None
        self._save_failing = False

    async def restore(self) -> None:
        """Take the last known set from the state directory, to run it until EdgeCore answers."""
        if self._store is None:
            return
        specs = await asyncio.to_thread(self._store.load)
        if specs is None:
            return
        wanted = self._wanted
        models = {model.key: model for model in specs.models}
        devices = {device_ref(device): device for device in specs.devices}
        self._stats.restored_devices = len(devices)
        wanted.replace(devices, models)
        self._saved_generation = wanted.generation  # it is what the file holds
        log.info(
            "running the %d last known device(s) from %s until EdgeCore answers",
            len(devices),
            self._store.path,
        )

    async def persist(self, generation: int) -> None:
        """Save the wanted set as of ``generation`` unless that is already saved."""
        if self._store is None or self._saved_generation >= generation:
            return
        if self._save_task is not None:
            # One writer at a time, so an older set can never replace a newer one.
            await asyncio.shield(self._save_task)
        devices, models = list(self._wanted.devices.values()), list(self._wanted.models.values())
        self._save_task = asyncio.create_task(self._save(self._store, generation, devices, models))
        # Shielded: a cancelled reconcile must not leave the write half-known; aclose waits
        # for it and saves what came after.
        await asyncio.shield(self._save_task)

    async def save_unsaved(self) -> None:
        """On close: finish a running save, then save a change the reconcile did not reach."""
        if self._save_task is not None:
            await asyncio.gather(self._save_task, return_exceptions=True)
        await self.persist(self._wanted.generation)

    async def _save(
        self, store: SpecStore, generation: int, devices: list[Device], models: list[DeviceModel]
    ) -> None:
        try:
            # Off the event loop: encoding thousands of devices and fsync take a while, and
            # EdgeCore's calls must keep getting answers meanwhile.
            await asyncio.to_thread(store.save, devices, models)
        except Exception as exc:  # the devices keep running; the next change tries again
            self._stats.save_errors += 1
            level = logging.DEBUG if self._save_failing else logging.ERROR
            log.log(
                level,
                "cannot save the devices from EdgeCore to %s: %s",
                store.path,
                exc,
                exc_info=not isinstance(exc, OSError),  # anything else is a bug: show where
            )
            self._save_failing = True
            return
        if self._save_failing:
            log.info("the devices from EdgeCore are saved to %s again", store.path)
        self._save_failing = False
        self._stats.saves += 1
        self._saved_generation = max(self._saved_generation, generation)
