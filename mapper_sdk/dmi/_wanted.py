"""What EdgeCore wants the mapper to run: the devices and models it sent, and a change count.

Written by the ``DeviceMapperService`` handlers, by the ``MapperRegister`` answer and by the
state directory at start; read by the reconciler, which applies the newest generation.
"""

from __future__ import annotations

import asyncio

from mapper_sdk.binding import DeviceRef
from mapper_sdk.models import Device, DeviceModel

ModelKey = tuple[str, str]
"""``(namespace, name)`` of a DeviceModel."""


def device_ref(device: Device) -> DeviceRef:
    return DeviceRef(device.metadata.namespace, device.metadata.name)


class Wanted:
    """The devices (already merged with their models by EdgeCore) and the models.

    Every change bumps ``generation`` and sets ``dirty``; the reconciler waits on ``dirty``.
    """

    def __init__(self) -> None:
        self.devices: dict[DeviceRef, Device] = {}
        self.models: dict[ModelKey, DeviceModel] = {}
        self.generation = 0
        self.dirty = asyncio.Event()

    def changed(self) -> None:
        self.generation += 1
        self.dirty.set()

    def replace(
        self, devices: dict[DeviceRef, Device], models: dict[ModelKey, DeviceModel]
    ) -> None:
        """Take a whole new set (``MapperRegister``'s answer, the state directory)."""
        self.devices, self.models = devices, models
        self.changed()

    def put_device(self, device: Device) -> DeviceRef:
        ref = device_ref(device)
        self.devices[ref] = device
        self.changed()
        return ref

    def put_model(self, model: DeviceModel) -> None:
        self.models[model.key] = model
        self.changed()

    def remove_device(self, ref: DeviceRef) -> None:
        if self.devices.pop(ref, None) is not None:
            self.changed()

    def remove_model(self, key: ModelKey) -> None:
        if self.models.pop(key, None) is not None:
            self.changed()
