"""``DmiLink``: the EdgeCore link over DMI v1beta1 gRPC (KubeEdge >= 1.15), an ``EventBus``.

The link owns both directions of DMI (contract §4); each part lives in its own module:

- **Mapper side (server)**, ``_servicer``: serves ``DeviceMapperService`` on its own unix
  socket. EdgeCore dials it for every call with a 10 s deadline (§4.1), so each handler only
  converts and validates the message, records the change in the link's copy of "what EdgeCore
  wants" (``_wanted``: devices and models) and answers at once.
- **Diff/apply**, ``_reconcile``: a single task binds the wanted devices and hands the whole
  set to ``MapperRuntime.apply``, which diffs it: an unchanged device keeps running, a
  desired-only change becomes writes through the runtime's single write path (the only way
  desired values arrive in v1beta1, §4.4.3), anything else restarts just that device.
- **EdgeCore side (client)**: ``_registration`` registers with ``MapperRegister(withData=true)``,
  retrying with capped full-jitter backoff for as long as EdgeCore is unreachable (the Go
  framework exits instead and crash-loops, §5.3), and loads the devices and models of the
  answer. ``_reporter`` sends reports as ``ReportDeviceStatus`` (all twins of one device in one
  call) and ``ReportDeviceStates``, paced by a local token bucket and coalesced per device
  (``_pacing``), because EdgeCore's own bucket is shared by every mapper on the node.
- **Edge autonomy**, ``_autonomy``: given a ``state_dir``, the link keeps "what EdgeCore wants"
  there (``mapper_sdk._spec_store``), saved after every change EdgeCore made and before it is
  applied. On start it runs that last known set at once, desired values included, so a mapper
  restarted while EdgeCore or the cloud is unreachable keeps its devices working; when
  ``MapperRegister`` answers, the answer replaces the set and the runtime applies it as a diff,
  like any change.

Use::

    link = DmiLink("modbus", registry=registry, state_dir="/var/lib/mapper")
    runtime = MapperRuntime(link, registry=registry)
    link.attach(runtime)  # the runtime is built with its bus, so it is attached afterwards
    async with runtime:
        await link.wait_registered()
        ...

grpc is imported by this package's link modules only: ``mapper_sdk`` imports it only when a DMI
link is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

import grpc.aio

from mapper_sdk._registry import Registry
from mapper_sdk._spec_store import SpecStore
from mapper_sdk.binding import BoundDevice, DeviceRef
from mapper_sdk.bus import DesiredHandler, TwinReport
from mapper_sdk.dmi._autonomy import SpecKeeper
from mapper_sdk.dmi._grpc import cancel, prepare_socket
from mapper_sdk.dmi._reconcile import Reconciler
from mapper_sdk.dmi._registration import Registrar
from mapper_sdk.dmi._reporter import Reporter
from mapper_sdk.dmi._servicer import MapperServicer
from mapper_sdk.dmi._wanted import Wanted
from mapper_sdk.dmi.settings import (
    API_VERSION,
    DEFAULT_EDGECORE_SOCKET,
    MANAGER_SERVICE,
    MAPPER_SERVICE,
    RATE_LIMITED,
    DmiSettings,
    DmiStats,
    default_mapper_socket,
)
from mapper_sdk.driver import DeviceState
from mapper_sdk.errors import EventBusError

if TYPE_CHECKING:
    from mapper_sdk.runtime import MapperRuntime

log = logging.getLogger("mapper_sdk.dmi")


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
        self._runtime: MapperRuntime | None = None
        self._on_desired: DesiredHandler | None = None
        # What EdgeCore wants: the devices (already merged with their models) and the models.
        self._wanted = Wanted()
        store = SpecStore.in_dir(state_dir, f"dmi-{protocol}") if state_dir else None
        self._keeper = SpecKeeper(store, self._wanted, self.stats)
        self._reconciler = Reconciler(self._wanted, self._keeper, self.stats)
        self._reconciler.registry = registry
        self._registrar = Registrar(
            protocol,
            settings=self.settings,
            mapper_socket=self.mapper_socket,
            edgecore_socket=self.edgecore_socket,
            wanted=self._wanted,
            stats=self.stats,
        )
        self._reporter = Reporter(self.settings, self.stats)
        self._server: grpc.aio.Server | None = None
        self._reconcile_task: asyncio.Task[None] | None = None
        self._register_task: asyncio.Task[None] | None = None
        self._send_task: asyncio.Task[None] | None = None

    # -- wiring -----------------------------------------------------------------------------

    def attach(self, runtime: MapperRuntime) -> None:
        """Give the link the runtime it feeds; call before ``async with runtime``."""
        self._runtime = runtime
        if self._reconciler.registry is None:
            self._reconciler.registry = runtime.registry

    @property
    def registered(self) -> bool:
        return self._registrar.registered.is_set()

    async def wait_registered(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until ``MapperRegister`` succeeded and its devices were handed to the runtime."""
        async with asyncio.timeout(timeout):
            await self._registrar.registered.wait()
            await self.wait_applied()

    async def wait_applied(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every change received so far has been applied to the runtime."""
        await self._reconciler.wait_applied(timeout)

    @property
    def queued(self) -> int:
        """Reports waiting to be sent (at most one twin report and one state per device)."""
        return len(self._reporter.queue)

    @property
    def coalesced(self) -> int:
        return self._reporter.queue.coalesced

    @property
    def dropped(self) -> int:
        return self._reporter.queue.dropped

    # -- EventBus ---------------------------------------------------------------------------

    async def start(self, on_desired: DesiredHandler) -> None:
        """Serve our socket, then register in the background (EdgeCore may not be up yet)."""
        runtime = self._runtime
        if runtime is None:
            raise EventBusError("DmiLink.attach(runtime) must be called before the runtime starts")
        # Desired values arrive inside UpdateDevice and reach the runtime through apply().
        self._on_desired = on_desired
        await self._keeper.restore()
        await self._start_server(runtime)
        self._reporter.open(self.edgecore_socket)
        self._reconcile_task = asyncio.create_task(
            self._reconciler.run(runtime), name="dmi reconcile"
        )
        self._register_task = asyncio.create_task(self._registrar.run(), name="dmi register")
        self._send_task = asyncio.create_task(self._reporter.run(), name="dmi send")

    def publish_twins(self, report: TwinReport) -> None:
        self._reporter.put_twins(report)

    def publish_state(self, ref: DeviceRef, state: DeviceState, timestamp_ms: int) -> None:
        self._reporter.put_state(ref, state, timestamp_ms)

    def device_added(self, device: BoundDevice) -> None:
        """Nothing to subscribe to: EdgeCore calls us."""

    def device_removed(self, ref: DeviceRef) -> None:
        # Its last state (offline) still goes out; stale twins of a stopped device do not.
        self._reporter.discard_twins(ref)

    async def aclose(self) -> None:
        """Stop serving and registering, flush what the rate allows, then disconnect."""
        deadline = asyncio.get_running_loop().time() + self.settings.close_timeout
        await cancel(self._reconcile_task, self._register_task)
        await self._keeper.save_unsaved()
        await self._stop_leftover_devices()
        if self._server is not None:
            await self._server.stop(grace=self.settings.close_timeout / 4)
            self._server = None
        await self._reporter.flush(deadline)
        await cancel(self._send_task)
        self._reconcile_task = self._register_task = self._send_task = None
        await self._reporter.close()
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

    async def _start_server(self, runtime: MapperRuntime) -> None:
        prepare_socket(self.mapper_socket)
        servicer = MapperServicer(self.protocol, self._wanted, self.stats, runtime)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((servicer.generic_handler(),))
        try:
            server.add_insecure_port(f"unix:{self.mapper_socket}")
        except RuntimeError as exc:
            raise EventBusError(f"cannot serve DMI on {self.mapper_socket}: {exc}") from exc
        await server.start()
        self._server = server
        log.info("serving DMI %s on %s", API_VERSION, self.mapper_socket)


__all__ = [
    "API_VERSION",
    "DEFAULT_EDGECORE_SOCKET",
    "MANAGER_SERVICE",
    "MAPPER_SERVICE",
    "RATE_LIMITED",
    "DmiLink",
    "DmiSettings",
    "DmiStats",
    "default_mapper_socket",
]
