"""An EdgeCore DMI emulator for tests.

This module EMULATES EdgeCore's DMI server; it is not EdgeCore. It reproduces what a mapper sees
of EdgeCore's devicetwin DMI module over the unix sockets, following
``shared/spec/kubeedge-contract.md``:

- §4.1 transport: it serves ``v1beta1.DeviceManagerService`` (insecure) on a unix socket; every
  ``ReportDeviceStatus`` / ``ReportDeviceStates`` takes a token from ONE bucket shared by all
  mappers (default 1 token/s, burst 100, starting full) and, when it is empty, fails with
  status UNKNOWN and "fail to report device status|states because of too many request".
  Calls back to the mapper dial ``MapperInfo.address`` anew for each call, with a 10 s deadline.
- §4.2/§4.5 services and messages: it uses the stubs generated from ``mapper_sdk/dmi/api.proto``
  (``api_pb2_grpc``), independently of the link's own hand-written method table.
- §4.3: a registration with an empty ``protocol`` is rejected.
- §4.4.1 ``MapperRegister``: records the ``MapperInfo``; with ``withData`` it answers the devices
  whose protocol equals the mapper's, merged with their model (§1.6) and with configData
  encoded as EdgeCore does (every number a ``FloatValue``, §1.5), plus one model entry per
  device (so duplicates occur, as upstream). A device EdgeCore cannot convert (nested configData)
  is left out of the answer and recorded in ``skipped``.
- §4.4.2 later changes: ``register_device`` / ``update_device`` / ``remove_device`` and the model
  calls act as the cloud would, calling the mapper's ``DeviceMapperService``.
- §4.4.4/§3.5a.10: an accepted report is recorded; a twin lacking ``reported`` or
  ``observedDesired`` is recorded in ``crash_triggers`` (the real EdgeCore process would die of a
  nil pointer) and the call fails with INTERNAL.

Not emulated: the MQTT side of a report (result/document/delta topics), SQLite, cloud sync,
gRPC reflection, routing between several mappers beyond "last registration wins".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.dmi._generated import api_pb2_grpc as pb_grpc
from mapper_sdk.dmi.convert import DmiConversionError, device_to_dmi, model_to_dmi
from mapper_sdk.models import Device, DeviceModel

CALL_DEADLINE = 10.0
"""EdgeCore's deadline for each call to a mapper (§4.1)."""


class SharedBucket:
    """EdgeCore's limiter: ``rate`` tokens/s, ``burst`` at most, starting full; never waits."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass
class AcceptedReport:
    """One accepted ``ReportDeviceStatus`` call."""

    device_id: str
    twins: dict[str, pb.Twin]
    at: float = field(default_factory=time.monotonic)

    def reported(self, name: str) -> str:
        return self.twins[name].reported.value

    def observed_desired(self, name: str) -> str:
        return self.twins[name].observedDesired.value


class _Manager(pb_grpc.DeviceManagerServiceServicer):
    def __init__(self, emulator: DmiEmulator) -> None:
        self.emulator = emulator

    async def MapperRegister(self, request: pb.MapperRegisterRequest, context: Any) -> Any:
        return await self.emulator._on_register(request, context)

    async def ReportDeviceStatus(self, request: pb.ReportDeviceStatusRequest, context: Any) -> Any:
        return await self.emulator._on_report(request, context)

    async def ReportDeviceStates(self, request: pb.ReportDeviceStatesRequest, context: Any) -> Any:
        return await self.emulator._on_states(request, context)


class DmiEmulator:
    """EdgeCore's DMI server on ``socket_path``, plus the cloud's calls to the mapper.

    ``devices`` are ``(Device, DeviceModel)`` pairs EdgeCore knows for this node.
    """

    def __init__(
        self,
        socket_path: Path,
        devices: list[tuple[Device, DeviceModel]] | None = None,
        *,
        rate: float = 1.0,
        burst: int = 100,
    ) -> None:
        self.socket_path = socket_path
        self.devices: dict[str, tuple[Device, DeviceModel]] = {
            d.id: (d, m) for d, m in devices or []
        }
        self.bucket = SharedBucket(rate, burst)
        self.mappers: list[pb.MapperInfo] = []
        self.reports: list[AcceptedReport] = []
        self.states: list[tuple[str, str]] = []
        self.refused = 0
        self.crash_triggers: list[pb.ReportDeviceStatusRequest] = []
        self.skipped: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._server: grpc.aio.Server | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # EdgeCore replaces a stale socket (§3.5a.12)
        server = grpc.aio.server()
        pb_grpc.add_DeviceManagerServiceServicer_to_server(_Manager(self), server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.2)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    async def __aenter__(self) -> DmiEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- DeviceManagerService -------------------------------------------------------------

    async def _on_register(
        self, request: pb.MapperRegisterRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.MapperRegisterResponse:
        if not request.mapper.protocol:
            await context.abort(grpc.StatusCode.UNKNOWN, "fail to register mapper: empty protocol")
        self.mappers.append(request.mapper)
        self._notify()
        response = pb.MapperRegisterResponse()
        if not request.withData:
            return response
        for device_id, (device, model) in self.devices.items():
            if device.spec.protocol.protocol_name != request.mapper.protocol:
                continue
            try:
                message = device_to_dmi(device, model)
            except DmiConversionError as exc:
                self.skipped[device_id] = str(exc)
                continue
            response.deviceList.append(message)
            response.modelList.append(model_to_dmi(model))
        return response

    async def _on_report(
        self, request: pb.ReportDeviceStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReportDeviceStatusResponse:
        if not self.bucket.allow():
            self.refused += 1
            await context.abort(
                grpc.StatusCode.UNKNOWN, "fail to report device status because of too many request"
            )
        twins = request.reportedDevice.twins
        if any(not t.HasField("reported") or not t.HasField("observedDesired") for t in twins):
            self.crash_triggers.append(request)
            await context.abort(grpc.StatusCode.INTERNAL, "EdgeCore would crash: nil twin value")
        device_id = f"{request.deviceNamespace}/{request.deviceName}"
        self.reports.append(AcceptedReport(device_id, {t.propertyName: t for t in twins}))
        self._notify()
        return pb.ReportDeviceStatusResponse()

    async def _on_states(
        self, request: pb.ReportDeviceStatesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReportDeviceStatesResponse:
        if not self.bucket.allow():
            self.refused += 1
            await context.abort(
                grpc.StatusCode.UNKNOWN, "fail to report device states because of too many request"
            )
        self.states.append((f"{request.deviceNamespace}/{request.deviceName}", request.state))
        self._notify()
        return pb.ReportDeviceStatesResponse()

    # -- the cloud's changes: calls to the mapper's DeviceMapperService ------------------------

    def _mapper_target(self) -> str:
        if not self.mappers:
            raise RuntimeError("no mapper has registered with the emulator")
        return "unix:" + os.fsdecode(self.mappers[-1].address)  # the last registration wins

    async def _call(self, method: str, request: Any) -> Any:
        # EdgeCore dials the mapper for every call and gives it 10 s (§4.1).
        async with grpc.aio.insecure_channel(self._mapper_target()) as channel:
            stub = pb_grpc.DeviceMapperServiceStub(channel)
            return await getattr(stub, method)(request, timeout=CALL_DEADLINE)

    async def register_device(self, device: Device, model: DeviceModel) -> Any:
        self.devices[device.id] = (device, model)
        message = device_to_dmi(device, model)
        return await self._call("RegisterDevice", pb.RegisterDeviceRequest(device=message))

    async def update_device(self, device: Device, model: DeviceModel) -> Any:
        self.devices[device.id] = (device, model)
        message = device_to_dmi(device, model)
        return await self._call("UpdateDevice", pb.UpdateDeviceRequest(device=message))

    async def remove_device(self, device: Device) -> Any:
        self.devices.pop(device.id, None)
        request = pb.RemoveDeviceRequest(
            deviceName=device.metadata.name, deviceNamespace=device.metadata.namespace
        )
        return await self._call("RemoveDevice", request)

    async def create_device_model(self, model: DeviceModel) -> Any:
        return await self._call(
            "CreateDeviceModel", pb.CreateDeviceModelRequest(model=model_to_dmi(model))
        )

    async def remove_device_model(self, model: DeviceModel) -> Any:
        request = pb.RemoveDeviceModelRequest(
            modelName=model.metadata.name, modelNamespace=model.metadata.namespace
        )
        return await self._call("RemoveDeviceModel", request)

    async def get_device(self, namespace: str, name: str) -> pb.Device:
        request = pb.GetDeviceRequest(deviceName=name, deviceNamespace=namespace)
        response = await self._call("GetDevice", request)
        return response.device

    # -- for tests ------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    def reports_of(self, device_id: str) -> list[AcceptedReport]:
        return [r for r in self.reports if r.device_id == device_id]

    def latest(self, device_id: str, name: str) -> pb.Twin | None:
        """The last accepted twin of ``name`` for ``device_id``."""
        for report in reversed(self.reports):
            if report.device_id == device_id and name in report.twins:
                return report.twins[name]
        return None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds, re-checking after every call the emulator gets."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
