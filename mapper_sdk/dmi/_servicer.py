"""``DeviceMapperService``: the calls EdgeCore makes to the mapper (contract §4.4).

EdgeCore dials the mapper's socket for every call with a 10 s deadline (§4.1), so each handler
only converts and validates the message, records the change in the ``Wanted`` set and answers
at once; the reconciler applies the change afterwards. ``UpdateDevice`` is also the only way
desired values arrive in v1beta1 (§4.4.3): they ride in the device spec, and the runtime's diff
turns a desired-only change into writes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinValue
from mapper_sdk.dmi import convert
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.dmi._grpc import Req, Resp, method_handler
from mapper_sdk.dmi._wanted import Wanted
from mapper_sdk.dmi.settings import MAPPER_SERVICE, DmiStats

if TYPE_CHECKING:
    from mapper_sdk.runtime import MapperRuntime

log = logging.getLogger("mapper_sdk.dmi")


class _NotFoundError(Exception):
    """A call named a device the link does not know; answered with NOT_FOUND."""


class MapperServicer:
    """The handlers of ``DeviceMapperService``, over a ``Wanted`` set.

    Args:
        protocol: the mapper's protocol, given to the models EdgeCore sends (they carry none).
        wanted: where devices and models are recorded.
        stats: ``calls_received`` is counted here.
        runtime: answers ``GetDevice`` with its last known values.
    """

    def __init__(
        self, protocol: str, wanted: Wanted, stats: DmiStats, runtime: MapperRuntime | None
    ) -> None:
        self._protocol = protocol
        self._wanted = wanted
        self._stats = stats
        self._runtime = runtime

    def generic_handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "RegisterDevice": method_handler(
                self._rpc(self._register_device),
                pb.RegisterDeviceRequest,
                pb.RegisterDeviceResponse,
            ),
            "UpdateDevice": method_handler(
                self._rpc(self._update_device), pb.UpdateDeviceRequest, pb.UpdateDeviceResponse
            ),
            "RemoveDevice": method_handler(
                self._rpc(self._remove_device), pb.RemoveDeviceRequest, pb.RemoveDeviceResponse
            ),
            "CreateDeviceModel": method_handler(
                self._rpc(self._create_model),
                pb.CreateDeviceModelRequest,
                pb.CreateDeviceModelResponse,
            ),
            "UpdateDeviceModel": method_handler(
                self._rpc(self._update_model),
                pb.UpdateDeviceModelRequest,
                pb.UpdateDeviceModelResponse,
            ),
            "RemoveDeviceModel": method_handler(
                self._rpc(self._remove_model),
                pb.RemoveDeviceModelRequest,
                pb.RemoveDeviceModelResponse,
            ),
            "GetDevice": method_handler(
                self._rpc(self._get_device), pb.GetDeviceRequest, pb.GetDeviceResponse
            ),
        }
        return grpc.method_handlers_generic_handler(MAPPER_SERVICE, methods)

    def _rpc(
        self, method: Callable[[Req], Resp]
    ) -> Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
        """Wrap a synchronous handler: count it, turn refusals into gRPC status codes."""

        async def call(request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
            self._stats.calls_received += 1
            try:
                return method(request)
            except convert.DmiConversionError as exc:
                log.warning("refused a DMI call from EdgeCore: %s", exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except _NotFoundError as exc:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

        return call

    def _register_device(self, request: pb.RegisterDeviceRequest) -> pb.RegisterDeviceResponse:
        ref = self._wanted.put_device(convert.device_from_dmi(request.device))
        return pb.RegisterDeviceResponse(deviceName=ref.name, deviceNamespace=ref.namespace)

    def _update_device(self, request: pb.UpdateDeviceRequest) -> pb.UpdateDeviceResponse:
        # Upsert: an update for a device we never heard of (say, the register call timed out)
        # still makes it run.
        self._wanted.put_device(convert.device_from_dmi(request.device))
        return pb.UpdateDeviceResponse()

    def _remove_device(self, request: pb.RemoveDeviceRequest) -> pb.RemoveDeviceResponse:
        self._wanted.remove_device(
            DeviceRef(request.deviceNamespace or "default", request.deviceName)
        )
        return pb.RemoveDeviceResponse()

    def _create_model(self, request: pb.CreateDeviceModelRequest) -> pb.CreateDeviceModelResponse:
        model = convert.model_from_dmi(request.model, self._protocol)
        self._wanted.put_model(model)
        return pb.CreateDeviceModelResponse(
            deviceModelName=model.metadata.name, deviceModelNamespace=model.metadata.namespace
        )

    def _update_model(self, request: pb.UpdateDeviceModelRequest) -> pb.UpdateDeviceModelResponse:
        self._wanted.put_model(convert.model_from_dmi(request.model, self._protocol))
        return pb.UpdateDeviceModelResponse()

    def _remove_model(self, request: pb.RemoveDeviceModelRequest) -> pb.RemoveDeviceModelResponse:
        self._wanted.remove_model((request.modelNamespace or "default", request.modelName))
        return pb.RemoveDeviceModelResponse()

    def _get_device(self, request: pb.GetDeviceRequest) -> pb.GetDeviceResponse:
        ref = DeviceRef(request.deviceNamespace or "default", request.deviceName)
        device = self._wanted.devices.get(ref)
        if device is None:
            raise _NotFoundError(f"no device {ref}")
        msg = convert.device_to_dmi(device)
        # The last known values from the twin engine: no live read (a slow device must not
        # make EdgeCore's 10 s deadline), and each value is the twin string, not a JSON blob
        # (the Go framework's bug, §5.8).
        del msg.status.twins[:]
        convert.twins_to_dmi(self._known_twins(ref), msg.status)
        return pb.GetDeviceResponse(device=msg)

    def _known_twins(self, ref: DeviceRef) -> list[tuple[TwinValue, int]]:
        supervisor = self._runtime.supervisor(ref) if self._runtime is not None else None
        if supervisor is None:
            return []
        twins = []
        for point in supervisor.device.properties:
            state = supervisor.engine.states[point.index]
            if state.text is not None:
                twin = TwinValue(point.name, state.text, point.twin_type, state.desired)
                twins.append((twin, state.read_at_ms or 0))
        return twins
