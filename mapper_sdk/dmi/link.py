"""``DmiLink``: the EdgeCore link over DMI v1beta1 gRPC (KubeEdge >= 1.15), an ``EventBus``.

The link owns both directions of DMI (contract §4):

- **Mapper side (server).** It serves ``DeviceMapperService`` on its own unix socket. EdgeCore
  dials that socket for every call with a 10 s deadline (§4.1), so each handler only converts
  and validates the message, records the change in the link's copy of "what EdgeCore wants"
  (devices and models) and answers at once; a single reconcile task then binds the devices and
  hands the whole set to ``MapperRuntime.apply``, which diffs it: an unchanged device keeps
  running, a desired-only change becomes writes through the runtime's single write path (the
  only way desired values arrive in v1beta1, §4.4.3), anything else restarts just that device.
- **EdgeCore side (client).** It registers with ``MapperRegister(withData=true)``, retrying with
  capped full-jitter backoff for as long as EdgeCore is unreachable (the Go framework exits
  instead and crash-loops, §5.3), and applies the devices and models of the answer. Reports go
  out as ``ReportDeviceStatus`` (all twins of one device in one call) and
  ``ReportDeviceStates``, paced by a local token bucket and coalesced per device
  (``_pacing``), because EdgeCore's own bucket is shared by every mapper on the node.
- **Edge autonomy.** Given a ``state_dir``, the link keeps "what EdgeCore wants" there
  (``mapper_sdk._spec_store``), saved after every change EdgeCore made and before it is applied.
  On start it runs that last known set at once, desired values included, so a mapper restarted
  while EdgeCore or the cloud is unreachable keeps its devices working; when ``MapperRegister``
  answers, the answer replaces the set and the runtime applies it as a diff, like any change.

Use::

    link = DmiLink("modbus", registry=registry, state_dir="/var/lib/mapper")
    runtime = MapperRuntime(link, registry=registry)
    link.attach(runtime)  # the runtime is built with its bus, so it is attached afterwards
    async with runtime:
        await link.wait_registered()
        ...

grpc is imported by this module only: ``mapper_sdk`` imports it only when a DMI link is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from mapper_sdk._backoff import Backoff
from mapper_sdk._registry import Registry
from mapper_sdk._spec_store import SpecStore
from mapper_sdk._version import __version__
from mapper_sdk.binding import BindProblem, BoundDevice, DeviceRef, bind
from mapper_sdk.bus import DesiredHandler, TwinReport, TwinValue
from mapper_sdk.dmi import convert
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.dmi._pacing import Entry, ReportQueue, StateEntry, TokenBucket, TwinsEntry
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import EventBusError
from mapper_sdk.models import Device, DeviceModel

if TYPE_CHECKING:
    from mapper_sdk.runtime import ApplyResult, MapperRuntime

log = logging.getLogger("mapper_sdk.dmi")

API_VERSION = "v1beta1"
MANAGER_SERVICE = "v1beta1.DeviceManagerService"
MAPPER_SERVICE = "v1beta1.DeviceMapperService"
DEFAULT_EDGECORE_SOCKET = "/etc/kubeedge/dmi.sock"
RATE_LIMITED = "too many request"
"""What EdgeCore's error says when its shared token bucket is empty (§4.1)."""

_MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the terminating NUL on Linux

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class _NotFoundError(Exception):
    """A call named a device the link does not know; answered with NOT_FOUND."""


def default_mapper_socket(protocol: str) -> str:
    """The conventional socket of a mapper: ``/etc/kubeedge/<protocol>.sock`` (§4.1)."""
    return f"/etc/kubeedge/{protocol}.sock"


@dataclass(frozen=True, slots=True)
class DmiSettings:
    """Tuning of a ``DmiLink`` (seconds unless named otherwise)."""

    mapper_name: str = ""
    """``MapperInfo.name``; defaults to ``<protocol>-mapper``."""
    mapper_version: str = __version__
    report_rate: float = 0.8
    """Reports per second, sustained. EdgeCore allows 1/s for ALL mappers together (§4.1)."""
    report_burst: int = 50
    """Reports sent at once after a quiet period; half of EdgeCore's 100, for the others."""
    max_queued: int = 10_000
    """Devices that may have a report waiting (twins and states each); beyond, reports drop."""
    call_timeout: float = 5.0
    """Deadline of each report call."""
    register_timeout: float = 5.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    """Backoff (full jitter) of registration retries and of reports after an error."""
    close_timeout: float = 2.0
    """How long ``aclose`` spends stopping the server and flushing waiting reports."""


@dataclass(slots=True)
class DmiStats:
    """Counters of a ``DmiLink``, read by metrics and tests."""

    register_attempts: int = 0
    registrations: int = 0
    calls_received: int = 0
    twin_reports_sent: int = 0
    state_reports_sent: int = 0
    rate_limited: int = 0
    """Report calls EdgeCore refused with "too many request"; they are retried."""
    send_errors: int = 0
    """Other failed report calls; retried unless EdgeCore called them invalid."""
    dropped_unsendable: int = 0
    """Reports EdgeCore refused as invalid or unimplemented; never retried."""
    applies: int = 0
    last_apply: ApplyResult | None = field(default=None, repr=False)
    restored_devices: int = 0
    """Devices run from the state directory at start, before EdgeCore answered."""
    saves: int = 0
    save_errors: int = 0


class DmiLink:
    """An ``EventBus`` that speaks DMI v1beta1 to EdgeCore. See the module docstring.

    Args:
        protocol: the protocol this mapper serves; EdgeCore routes devices to it by this name.
        registry: drivers used to validate each device's configData while binding; defaults to
            the attached runtime's registry.
        mapper_socket: where to serve ``DeviceMapperService``; default
            ``/etc/kubeedge/<protocol>.sock``. A stale socket file there is replaced.
        edgecore_socket: EdgeCore's DMI socket; default ``/etc/kubeedge/dmi.sock``.
        settings: rates, timeouts and backoff.
        state_dir: where the last known devices and models are kept for edge autonomy (file
            ``specs-dmi-<protocol>.json``); ``None`` keeps nothing, and a restarted mapper
            runs no device until EdgeCore answers.
    """

    def __init__(
        self,
        protocol: str,
        *,
        registry: Registry | None = None,
        mapper_socket: str | os.PathLike[str] | None = None,
        edgecore_socket: str | os.PathLike[str] = DEFAULT_EDGECORE_SOCKET,
        settings: DmiSettings | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not protocol:
            raise ValueError("a DMI mapper needs a protocol name: EdgeCore refuses an empty one")
        self.protocol = protocol
        self.settings = settings or DmiSettings()
        self.mapper_socket = os.path.abspath(mapper_socket or default_mapper_socket(protocol))
        self.edgecore_socket = os.path.abspath(edgecore_socket)
        self.stats = DmiStats()
        self._registry = registry
        self._store = SpecStore.in_dir(state_dir, f"dmi-{protocol}") if state_dir else None
        self._runtime: MapperRuntime | None = None
        self._on_desired: DesiredHandler | None = None
        # What EdgeCore wants: the devices (already merged with their models) and the models.
        self._devices: dict[DeviceRef, Device] = {}
        self._models: dict[tuple[str, str], DeviceModel] = {}
        self._bound: dict[DeviceRef, tuple[Device, DeviceModel, BoundDevice]] = {}
        self._logged: dict[DeviceRef, str] = {}  # the last problem logged per device, to log once
        self._generation = 0
        self._applied_generation = 0
        self._saved_generation = 0
        self._save_task: asyncio.Task[None] | None = None
        self._save_failing = False
        self._dirty = asyncio.Event()
        self._applied = asyncio.Event()
        self._registered = asyncio.Event()
        self._queue = ReportQueue(self.settings.max_queued)
        self._queued = asyncio.Event()
        self._bucket = TokenBucket(self.settings.report_rate, self.settings.report_burst)
        self._states_supported = True
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None
        self._reconcile_task: asyncio.Task[None] | None = None
        self._register_task: asyncio.Task[None] | None = None
        self._send_task: asyncio.Task[None] | None = None

    # -- wiring -----------------------------------------------------------------------------

    def attach(self, runtime: MapperRuntime) -> None:
        """Give the link the runtime it feeds; call before ``async with runtime``."""
        self._runtime = runtime
        if self._registry is None:
            self._registry = runtime.registry

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    async def wait_registered(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until ``MapperRegister`` succeeded and its devices were handed to the runtime."""
        async with asyncio.timeout(timeout):
            await self._registered.wait()
            await self.wait_applied()

    async def wait_applied(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every change received so far has been applied to the runtime."""
        target = self._generation
        async with asyncio.timeout(timeout):
            while self._applied_generation < target:
                self._applied.clear()
                await self._applied.wait()

    @property
    def queued(self) -> int:
        """Reports waiting to be sent (at most one twin report and one state per device)."""
        return len(self._queue)

    @property
    def coalesced(self) -> int:
        return self._queue.coalesced

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    # -- EventBus ---------------------------------------------------------------------------

    async def start(self, on_desired: DesiredHandler) -> None:
        """Serve our socket, then register in the background (EdgeCore may not be up yet)."""
        if self._runtime is None:
            raise EventBusError("DmiLink.attach(runtime) must be called before the runtime starts")
        # Desired values arrive inside UpdateDevice and reach the runtime through apply().
        self._on_desired = on_desired
        await self._restore()
        await self._start_server()
        self._channel = grpc.aio.insecure_channel(
            f"unix:{self.edgecore_socket}", options=self._channel_options()
        )
        self._reconcile_task = asyncio.create_task(self._reconcile_loop(), name="dmi reconcile")
        self._register_task = asyncio.create_task(self._register_loop(), name="dmi register")
        self._send_task = asyncio.create_task(self._send_loop(), name="dmi send")

    def publish_twins(self, report: TwinReport) -> None:
        if report.twins:
            self._queue.put(TwinsEntry.of(report))
            self._queued.set()

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        if self._states_supported:
            self._queue.put(StateEntry(ref, state, timestamp_ms))
            self._queued.set()

    def device_added(self, device: BoundDevice) -> None:
        """Nothing to subscribe to: EdgeCore calls us."""

    def device_removed(self, ref: DeviceRef) -> None:
        # Its last state (offline) still goes out; stale twins of a stopped device do not.
        self._queue.discard(ref, "twins")

    async def aclose(self) -> None:
        """Stop serving and registering, flush what the rate allows, then disconnect."""
        deadline = asyncio.get_running_loop().time() + self.settings.close_timeout
        await _cancel(self._reconcile_task, self._register_task)
        await self._save_unsaved()
        await self._stop_leftover_devices()
        if self._server is not None:
            await self._server.stop(grace=self.settings.close_timeout / 4)
            self._server = None
        await self._flush(deadline)
        await _cancel(self._send_task)
        self._reconcile_task = self._register_task = self._send_task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.mapper_socket)

    async def _stop_leftover_devices(self) -> None:
        # The runtime stops its devices before closing its bus, but an apply that was running
        # at that moment may have started one more; a device left running would keep the
        # runtime's task group from ever finishing.
        runtime = self._runtime
        if runtime is not None:
            for ref in list(runtime.devices):
                await runtime.remove(ref)

    async def _flush(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while len(self._queue) and loop.time() < deadline:
            self._queued.set()
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    # -- server: DeviceMapperService ----------------------------------------------------------

    async def _start_server(self) -> None:
        _prepare_socket(self.mapper_socket)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handlers(),))
        try:
            server.add_insecure_port(f"unix:{self.mapper_socket}")
        except RuntimeError as exc:
            raise EventBusError(f"cannot serve DMI on {self.mapper_socket}: {exc}") from exc
        await server.start()
        self._server = server
        log.info("serving DMI %s on %s", API_VERSION, self.mapper_socket)

    def _handlers(self) -> grpc.GenericRpcHandler:
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "RegisterDevice": _handler(
                self._rpc(self._register_device),
                pb.RegisterDeviceRequest,
                pb.RegisterDeviceResponse,
            ),
            "UpdateDevice": _handler(
                self._rpc(self._update_device), pb.UpdateDeviceRequest, pb.UpdateDeviceResponse
            ),
            "RemoveDevice": _handler(
                self._rpc(self._remove_device), pb.RemoveDeviceRequest, pb.RemoveDeviceResponse
            ),
            "CreateDeviceModel": _handler(
                self._rpc(self._create_model),
                pb.CreateDeviceModelRequest,
                pb.CreateDeviceModelResponse,
            ),
            "UpdateDeviceModel": _handler(
                self._rpc(self._update_model),
                pb.UpdateDeviceModelRequest,
                pb.UpdateDeviceModelResponse,
            ),
            "RemoveDeviceModel": _handler(
                self._rpc(self._remove_model),
                pb.RemoveDeviceModelRequest,
                pb.RemoveDeviceModelResponse,
            ),
            "GetDevice": _handler(
                self._rpc(self._get_device), pb.GetDeviceRequest, pb.GetDeviceResponse
            ),
        }
        return grpc.method_handlers_generic_handler(MAPPER_SERVICE, methods)

    def _rpc(
        self, method: Callable[[Req], Resp]
    ) -> Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
        """Wrap a synchronous handler: count it, turn refusals into gRPC status codes."""

        async def call(request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
            self.stats.calls_received += 1
            try:
                return method(request)
            except convert.DmiConversionError as exc:
                log.warning("refused a DMI call from EdgeCore: %s", exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except _NotFoundError as exc:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

        return call

    def _register_device(self, request: pb.RegisterDeviceRequest) -> pb.RegisterDeviceResponse:
        ref = self._put_device(request.device)
        return pb.RegisterDeviceResponse(deviceName=ref.name, deviceNamespace=ref.namespace)

    def _update_device(self, request: pb.UpdateDeviceRequest) -> pb.UpdateDeviceResponse:
        # Upsert: an update for a device we never heard of (say, the register call timed out)
        # still makes it run.
        self._put_device(request.device)
        return pb.UpdateDeviceResponse()

    def _remove_device(self, request: pb.RemoveDeviceRequest) -> pb.RemoveDeviceResponse:
        ref = DeviceRef(request.deviceNamespace or "default", request.deviceName)
        if self._devices.pop(ref, None) is not None:
            self._changed()
        return pb.RemoveDeviceResponse()

    def _create_model(self, request: pb.CreateDeviceModelRequest) -> pb.CreateDeviceModelResponse:
        model = self._put_model(request.model)
        return pb.CreateDeviceModelResponse(
            deviceModelName=model.metadata.name, deviceModelNamespace=model.metadata.namespace
        )

    def _update_model(self, request: pb.UpdateDeviceModelRequest) -> pb.UpdateDeviceModelResponse:
        self._put_model(request.model)
        return pb.UpdateDeviceModelResponse()

    def _remove_model(self, request: pb.RemoveDeviceModelRequest) -> pb.RemoveDeviceModelResponse:
        key = (request.modelNamespace or "default", request.modelName)
        if self._models.pop(key, None) is not None:
            self._changed()
        return pb.RemoveDeviceModelResponse()

    def _get_device(self, request: pb.GetDeviceRequest) -> pb.GetDeviceResponse:
        ref = DeviceRef(request.deviceNamespace or "default", request.deviceName)
        device = self._devices.get(ref)
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

    def _put_device(self, msg: pb.Device) -> DeviceRef:
        device = convert.device_from_dmi(msg)
        ref = _ref(device)
        self._devices[ref] = device
        self._changed()
        return ref

    def _put_model(self, msg: pb.DeviceModel) -> DeviceModel:
        model = convert.model_from_dmi(msg, self.protocol)
        self._models[model.key] = model
        self._changed()
        return model

    # -- reconcile: the wanted set -> runtime.apply ------------------------------------------

    def _changed(self) -> None:
        self._generation += 1
        self._dirty.set()

    async def _reconcile_loop(self) -> None:
        runtime = self._runtime
        assert runtime is not None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            generation = self._generation
            # Saved before it is applied: a change EdgeCore was told we took must survive a
            # crash during a long apply.
            await self._persist(generation)
            try:
                self.stats.last_apply = await runtime.apply(self._bind_all())
                self.stats.applies += 1
            except Exception:  # a bug in one apply must not stop later ones
                log.exception("applying the devices from EdgeCore failed")
            self._applied_generation = generation
            self._applied.set()

    # -- edge autonomy: the wanted set <-> the state directory ---------------------------------

    async def _restore(self) -> None:
        """Take the last known set from the state directory, to run it until EdgeCore answers."""
        if self._store is None:
            return
        specs = await asyncio.to_thread(self._store.load)
        if specs is None:
            return
        self._models = {model.key: model for model in specs.models}
        self._devices = {_ref(device): device for device in specs.devices}
        self.stats.restored_devices = len(self._devices)
        self._changed()
        self._saved_generation = self._generation  # it is what the file holds
        log.info(
            "running the %d last known device(s) from %s until EdgeCore answers",
            len(self._devices),
            self._store.path,
        )

    async def _persist(self, generation: int) -> None:
        """Save the wanted set as of ``generation`` unless that is already saved."""
        if self._store is None or self._saved_generation >= generation:
            return
        if self._save_task is not None:
            # One writer at a time, so an older set can never replace a newer one.
            await asyncio.shield(self._save_task)
        devices, models = list(self._devices.values()), list(self._models.values())
        self._save_task = asyncio.create_task(self._save(self._store, generation, devices, models))
        # Shielded: a cancelled reconcile must not leave the write half-known; aclose waits
        # for it and saves what came after.
        await asyncio.shield(self._save_task)

    async def _save(
        self, store: SpecStore, generation: int, devices: list[Device], models: list[DeviceModel]
    ) -> None:
        try:
            # Off the event loop: encoding thousands of devices and fsync take a while, and
            # EdgeCore's calls must keep getting answers meanwhile.
            await asyncio.to_thread(store.save, devices, models)
        except Exception as exc:  # the devices keep running; the next change tries again
            self.stats.save_errors += 1
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
        self.stats.saves += 1
        self._saved_generation = max(self._saved_generation, generation)

    async def _save_unsaved(self) -> None:
        """On close: finish a running save, then save a change the reconcile did not reach."""
        if self._save_task is not None:
            await asyncio.gather(self._save_task, return_exceptions=True)
        await self._persist(self._generation)

    def _bind_all(self) -> list[BoundDevice]:
        bound = []
        for ref, device in self._devices.items():
            result = self._bind_one(ref, device)
            if result is not None:
                bound.append(result)
        for ref in [r for r in self._bound if r not in self._devices]:
            del self._bound[ref]
            self._logged.pop(ref, None)
        return bound

    def _bind_one(self, ref: DeviceRef, device: Device) -> BoundDevice | None:
        cached = self._bound.get(ref)
        model = self._models.get(device.model_key)
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
        assert self._registry is not None
        driver = self._registry.get(device.spec.protocol.protocol_name)
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

    # -- client: registration ------------------------------------------------------------------

    def _channel_options(self) -> list[tuple[str, Any]]:
        # gRPC's own reconnect backoff grows to 120 s by default: EdgeCore coming back would
        # then wait minutes for our reports. Cap it like every other retry of the link.
        cap_ms = int(self.settings.backoff_cap * 1000)
        initial_ms = max(100, min(cap_ms, int(self.settings.backoff_base * 1000)))
        return [
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", max(initial_ms, cap_ms)),
        ]

    def _mapper_info(self) -> pb.MapperInfo:
        return pb.MapperInfo(
            name=self.settings.mapper_name or f"{self.protocol}-mapper",
            version=self.settings.mapper_version,
            api_version=API_VERSION,
            protocol=self.protocol,
            address=os.fsencode(self.mapper_socket),
            state="ok",
        )

    async def _register_loop(self) -> None:
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        request = pb.MapperRegisterRequest(withData=True, mapper=self._mapper_info())
        failing = False
        while True:
            self.stats.register_attempts += 1
            try:
                response = await self._register(request)
            except grpc.aio.AioRpcError as exc:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(
                    level,
                    "cannot register with EdgeCore at %s (%s: %s); retrying",
                    self.edgecore_socket,
                    exc.code().name,
                    exc.details(),
                )
                failing = True
                await asyncio.sleep(backoff.next())
                continue
            self._load(response)
            self.stats.registrations += 1
            self._registered.set()
            return

    async def _register(self, request: pb.MapperRegisterRequest) -> pb.MapperRegisterResponse:
        # A fresh channel per attempt: a channel that failed to connect would wait out its
        # own reconnect backoff before trying the socket again.
        target = f"unix:{self.edgecore_socket}"
        async with grpc.aio.insecure_channel(target) as channel:
            call = _unary(channel, MANAGER_SERVICE, "MapperRegister", pb.MapperRegisterResponse)
            return await call(request, timeout=self.settings.register_timeout)

    def _load(self, response: pb.MapperRegisterResponse) -> None:
        models: dict[tuple[str, str], DeviceModel] = {}
        for model_msg in response.modelList:  # may hold duplicates (§4.4.1): the last one wins
            try:
                model = convert.model_from_dmi(model_msg, self.protocol)
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
            devices[_ref(device)] = device
        self._models, self._devices = models, devices
        log.info(
            "registered with EdgeCore as %r: %d devices, %d models",
            self.protocol,
            len(devices),
            len(models),
        )
        self._changed()

    # -- client: paced reports -----------------------------------------------------------------

    async def _send_loop(self) -> None:
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap)
        failing = False
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            # The token comes first and the entry after it, so what waited for the token is
            # the newest merged value, not one popped before newer readings arrived.
            wait = self._bucket.wait_time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            entry = self._queue.pop()
            assert entry is not None
            self._bucket.try_take()
            ok = await self._send(entry, failing)
            if ok:
                if failing:
                    log.info("reports to EdgeCore are flowing again")
                failing = False
                backoff.reset()
            else:
                failing = True
                await asyncio.sleep(backoff.next())

    async def _send(self, entry: Entry, failing: bool) -> bool:
        """Send one entry; ``False`` when it was requeued and the sender should back off."""
        try:
            if isinstance(entry, TwinsEntry):
                await self._send_twins(entry)
            else:
                await self._send_state(entry)
        except grpc.aio.AioRpcError as exc:
            return self._send_failed(entry, exc, failing)
        return True

    async def _send_twins(self, entry: TwinsEntry) -> None:
        assert self._channel is not None
        request = pb.ReportDeviceStatusRequest(
            deviceName=entry.ref.name, deviceNamespace=entry.ref.namespace
        )
        convert.twins_to_dmi(entry.twins.values(), request.reportedDevice)
        call = _unary(
            self._channel, MANAGER_SERVICE, "ReportDeviceStatus", pb.ReportDeviceStatusResponse
        )
        await call(request, timeout=self.settings.call_timeout)
        self.stats.twin_reports_sent += 1

    async def _send_state(self, entry: StateEntry) -> None:
        assert self._channel is not None
        call = _unary(
            self._channel, MANAGER_SERVICE, "ReportDeviceStates", pb.ReportDeviceStatesResponse
        )
        await call(convert.state_to_dmi(entry.ref, entry.state), timeout=self.settings.call_timeout)
        self.stats.state_reports_sent += 1

    def _send_failed(self, entry: Entry, exc: grpc.aio.AioRpcError, failing: bool) -> bool:
        code, details = exc.code(), exc.details() or ""
        what = "twins" if isinstance(entry, TwinsEntry) else "state"
        if code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT):
            self.stats.dropped_unsendable += 1
            if isinstance(entry, StateEntry) and code is grpc.StatusCode.UNIMPLEMENTED:
                # EdgeCore < 1.18 has no ReportDeviceStates: stop queueing states for good.
                self._states_supported = False
                self._queue.discard_kind("state")
                log.warning("EdgeCore does not implement ReportDeviceStates; states not sent")
            else:
                log.error("EdgeCore refused the %s report of %s: %s", what, entry.ref, details)
            return True  # not retried: the same report would be refused again
        self._queue.requeue(entry)
        self._queued.set()
        if RATE_LIMITED in details:
            self.stats.rate_limited += 1
        else:
            self.stats.send_errors += 1
        log.log(
            logging.DEBUG if failing else logging.WARNING,
            "reporting %s of %s to EdgeCore failed (%s: %s); backing off",
            what,
            entry.ref,
            code.name,
            details,
        )
        return False


# -- helpers -----------------------------------------------------------------------------------


def _handler(
    behaviour: Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
    request_cls: type[Req],
    response_cls: type[Resp],
) -> grpc.RpcMethodHandler[Req, Resp]:
    del response_cls  # for the reader and the type checker: the handler returns this type
    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=request_cls.FromString,
        response_serializer=_serialize,
    )


def _describe(ref: DeviceRef, problems: list[BindProblem], *, skipped: bool) -> str:
    """One log line with every binding problem of a device, each with its field path."""
    parts = []
    for p in problems:
        where = ("model " if p.in_model else "") + ".".join(map(str, p.path))
        parts.append(f"{where}: {p.message}" + (" (warning)" if p.severity != "error" else ""))
    return f"device {ref}: " + "; ".join(parts) + (" -- the device is skipped" if skipped else "")


def _ref(device: Device) -> DeviceRef:
    return DeviceRef(device.metadata.namespace, device.metadata.name)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _unary(
    channel: grpc.aio.Channel, service: str, method: str, response_cls: type[Resp]
) -> grpc.aio.UnaryUnaryMultiCallable[Message, Resp]:
    return channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=_serialize,
        response_deserializer=response_cls.FromString,
    )


def _prepare_socket(path: str) -> None:
    """Make room for our socket: create the directory, remove a stale socket file."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        raise EventBusError(
            f"socket path {path!r} is longer than {_MAX_UNIX_PATH} bytes, "
            "the limit of a unix socket address"
        )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EventBusError(f"{path} exists and is not a socket; refusing to replace it")
    # Left by a mapper that did not shut down cleanly (or by a previous run of this one):
    # binding fails while the file exists. EdgeCore talks to the last mapper registered.
    os.unlink(path)


async def _cancel(*tasks: asyncio.Task[None] | None) -> None:
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    await asyncio.gather(*live, return_exceptions=True)


__all__ = [
    "API_VERSION",
    "DEFAULT_EDGECORE_SOCKET",
    "DmiLink",
    "DmiSettings",
    "DmiStats",
    "default_mapper_socket",
]
