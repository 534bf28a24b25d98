"""Registration with EdgeCore: ``MapperRegister(withData=true)`` until it answers (§4.4.1).

EdgeCore may start after the mapper, or restart; the Go framework exits when registration fails
and crash-loops (§5.3). Here registration is retried with capped full-jitter backoff for as long
as EdgeCore is unreachable, and the devices and models of the answer replace the ``Wanted`` set
(the reconciler applies them as a diff against what already runs).
"""

from __future__ import annotations

import asyncio
import logging
import os

import grpc
import grpc.aio

from mapper_sdk._backoff import Backoff
from mapper_sdk.binding import DeviceRef
from mapper_sdk.dmi import convert
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.dmi._grpc import unary
from mapper_sdk.dmi._wanted import ModelKey, Wanted, device_ref
from mapper_sdk.dmi.settings import API_VERSION, MANAGER_SERVICE, DmiSettings, DmiStats
from mapper_sdk.models import Device, DeviceModel

log = logging.getLogger("mapper_sdk.dmi")


class Registrar:
    """Registers the mapper once; ``registered`` is set when the answer is in ``wanted``."""

    def __init__(
        self,
        protocol: str,
        *,
        settings: DmiSettings,
        mapper_socket: str,
        edgecore_socket: str,
        wanted: Wanted,
        stats: DmiStats,
    ) -> None:
        self._protocol = protocol
        self._settings = settings
        self._mapper_socket = mapper_socket
        self._edgecore_socket = edgecore_socket
        self._wanted = wanted
        self._stats = stats
        self.registered = asyncio.Event()

    def mapper_info(self) -> pb.MapperInfo:
        return pb.MapperInfo(
            name=self._settings.mapper_name or f"{self._protocol}-mapper",
            version=self._settings.mapper_version,
            api_version=API_VERSION,
            protocol=self._protocol,
            address=os.fsencode(self._mapper_socket),
            state="ok",
        )

    async def run(self) -> None:
        """Register, retrying until EdgeCore answers; then load the answer and return."""
        backoff = Backoff(self._settings.backoff_base, self._settings.backoff_cap)
        request = pb.MapperRegisterRequest(withData=True, mapper=self.mapper_info())
        failing = False
        while True:
            self._stats.register_attempts += 1
            try:
                response = await self._register(request)
            except grpc.aio.AioRpcError as exc:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level,
                    "cannot register with EdgeCore at %s (%s: %s); retrying",
                    self._edgecore_socket,
                    exc.code().name,
                    exc.details(),
                )
                failing = True
                await asyncio.sleep(backoff.next())
                continue
            self._load(response)
            self._stats.registrations += 1
            self.registered.set()
            return

    async def _register(self, request: pb.MapperRegisterRequest) -> pb.MapperRegisterResponse:
        # A fresh channel per attempt: a channel that failed to connect would wait out its
        # own reconnect backoff before trying the socket again.
        target = f"unix:{self._edgecore_socket}"
        async with grpc.aio.insecure_channel(target) as channel:
            call = unary(channel, MANAGER_SERVICE, "MapperRegister", pb.MapperRegisterResponse)
            return await call(request, timeout=self._settings.register_timeout)

    def _load(self, response: pb.MapperRegisterResponse) -> None:
        models: dict[ModelKey, DeviceModel] = {}
        for model_msg in response.modelList:  # may hold duplicates (§4.4.1): the last one wins
            try:
                model = convert.model_from_dmi(model_msg, self._protocol)
            except convert.DmiConversionError as exc:
                log.error(
                    "model %s/%s from EdgeCore is skipped: %s",
                    model_msg.namespace,
                    model_msg.name,
                    exc,
                )
                continue
            models[model.key] = model
        devices: dict[DeviceRef, Device] = {}
        for msg in response.deviceList:
            try:
                device = convert.device_from_dmi(msg)
            except convert.DmiConversionError as exc:
                log.error("device %s from EdgeCore is skipped: %s", convert.ref_of(msg), exc)
                continue
            devices[device_ref(device)] = device
        log.info(
            "registered with EdgeCore as %r: %d devices, %d models",
            self._protocol,
            len(devices),
            len(models),
        )
        self._wanted.replace(devices, models)
