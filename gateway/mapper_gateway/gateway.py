"""``Gateway``: every part of the edge service, composed and started in order.

Start order (``async with Gateway(settings) as gateway``): the embedded broker when no
``mqtt_url`` is given, the bus stack (``TapBus`` -> ``RoutingBus`` -> MQTT event bus and one
DMI link per protocol), the runtime, then the devices: the YAML directory is loaded in a
worker thread while the API already answers ``/healthz``, and is watched for changes from
then on. Stop order is the reverse. The API (``app.py``) only reads from a started gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, cast

import orjson
import watchfiles

from mapper_gateway.audit import AuditLog
from mapper_gateway.broker import EmbeddedBroker
from mapper_gateway.events import EventHub, TapBus
from mapper_gateway.files import DeviceFiles
from mapper_gateway.routing import RoutingBus
from mapper_gateway.security import ApiToken, FailureLimiter, Guard
from mapper_gateway.settings import GatewaySettings
from mapper_gateway.sources import DeviceSources
from mapper_sdk import BoundDevice, ConfigError, EventBus, MapperRuntime, Registry
from mapper_sdk.loader import gc_paused

if TYPE_CHECKING:
    from mapper_sdk.bus.mqtt import MqttEventBus
    from mapper_sdk.dmi.link import DmiLink
    from mapper_sdk.sinks import SinkHub

log = logging.getLogger("mapper_gateway")

FILES = "files"
WATCH_DEBOUNCE_MS = 200  # groups an editor's write-rename-chmod into one reload
START_PASSES = 3  # loop passes a started device needs to connect and start its loops


async def _let_devices_start() -> None:
    """Let the loop run the first steps of the devices just started (connect, then their
    poll and write loops), still inside ``gc_paused``.

    Those steps allocate about as many objects again as the apply did (tasks, schedules,
    timers: 10,000 devices make some 300,000); with the collector back on they set off two
    full collections of the whole fleet in the first second, 0.3 s each, before ``/readyz``
    could answer. Passes, not time: a device whose connect waits on the network simply
    allocates the rest later, under the normal collector.
    """
    for _ in range(START_PASSES):
        await asyncio.sleep(0)


def _libc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None  # musl and others: nothing to do
    return trim


_MALLOC_TRIM = _libc_trim()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system after a big load.

    Parsing 10,000 files leaves megabytes of freed memory inside glibc's heap, which RSS keeps
    counting (about 25 MB for 10,000 devices); ``malloc_trim`` returns it in a few milliseconds.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Gateway:
    def __init__(self, settings: GatewaySettings, *, registry: Registry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else Registry.from_entry_points()
        self.events = EventHub(settings.events_queue)
        self.token, self.generated_token = ApiToken.resolve(settings)
        limiter = FailureLimiter(settings.auth_max_failures, settings.auth_block_seconds)
        self.guard = Guard(self.token, limiter, loopback_only=settings.loopback_only)
        self.audit = AuditLog(
            settings.audit_path, max_bytes=settings.audit_max_bytes, keep=settings.audit_keep
        )
        self.files = DeviceFiles(settings.devices, self.registry) if settings.devices else None
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttEventBus | None = None
        self.links: dict[str, DmiLink] = {}
        self.runtime: MapperRuntime | None = None
        self.sinks: SinkHub | None = None
        self.sources: DeviceSources | None = None
        self.members: set[str] | None = None
        self.started_at = time.time()
        self.reloads = 0
        self._loaded = asyncio.Event()
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    async def _start(self) -> None:
        if self.files is not None and not self.files.directory.is_dir():
            raise ConfigError(f"--devices {self.settings.devices}: not a directory")
        try:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"state_dir {self.settings.state_dir}: {exc.strerror}; set --state-dir to a "
                "directory this user can write"
            ) from exc
        self.audit.start()
        self._stack.push_async_callback(asyncio.to_thread, self.audit.close)
        mqtt_url = self.settings.mqtt_url
        if mqtt_url is None:
            self.broker = EmbeddedBroker(port=self.settings.broker_port)
            await self.broker.start()
            self._stack.push_async_callback(self.broker.stop)
            mqtt_url = self.broker.url
        if mqtt_url != "off":
            self.mqtt = self._mqtt_bus(mqtt_url)
        self.members = self._load_members() if self.settings.membership else None
        self.sinks = self._sink_hub()
        runtime = MapperRuntime(
            TapBus(self._router(), self.events), registry=self.registry, sinks=self.sinks
        )
        self.runtime = runtime
        assert self.sources is not None
        self.sources.attach(runtime)
        await self._stack.enter_async_context(runtime)
        self._tasks.append(asyncio.create_task(self._load_and_watch(), name="devices directory"))

    def _sink_hub(self) -> SinkHub:
        """The devices' ``pushMethod``/``dbMethod`` destinations and the local SQLite store,
        each behind its own bounded queue (the runtime closes the hub when it stops)."""
        from mapper_sdk.sinks import RunnerSettings, SinkHub, SqliteSettings

        settings = self.settings
        local = None
        if settings.local_store:
            local = SqliteSettings(
                settings.state_dir / "values.sqlite3",
                max_rows=settings.local_store_max_rows,
                max_age=settings.local_store_max_age,
            )
        return SinkHub(settings=RunnerSettings(max_queue=settings.sink_queue), local_store=local)

    def _mqtt_bus(self, url: str) -> MqttEventBus:
        # Imported here: paho and the outbox cost ~60 ms of start-up that --mqtt-url off skips.
        from mapper_sdk.bus.mqtt import MqttEventBus
        from mapper_sdk.bus.mqtt_settings import ConfirmMode, MqttSettings
        from mapper_sdk.bus.topics import IdStyle

        settings = MqttSettings.from_url(
            url,
            node=self.settings.node,
            id_style=IdStyle(self.settings.id_style.value),
            confirm=ConfirmMode.AUTO,
            client_id=f"mapper-gateway-{self.settings.node}",
        ).with_env_credentials()
        return MqttEventBus(
            settings, state_dir=self.settings.state_dir, on_membership=self._membership_changed
        )

    def _router(self) -> RoutingBus:
        sources = DeviceSources()
        self.sources = sources
        sources.register(FILES)  # local files win over EdgeCore for the same device
        owned: dict[str, EventBus] = {}
        if self.settings.dmi:
            for protocol in self._dmi_protocols():
                link = self._dmi_link(protocol)
                # The link calls apply/remove on what it is attached to: a view scoped to
                # its own devices, so it cannot stop the YAML devices or another link's.
                link.attach(cast(MapperRuntime, sources.view(f"dmi:{protocol}")))
                self.links[protocol] = link
                owned[f"dmi:{protocol}"] = link
        broadcast: list[EventBus] = [self.mqtt] if self.mqtt is not None else []
        # A lambda, not sources.owner.get: every apply replaces the owner dict.
        return RoutingBus(broadcast, owned, lambda ref: sources.owner.get(ref))

    def _dmi_protocols(self) -> list[str]:
        wanted = self.settings.dmi_protocols or self.registry.names()
        return [p for p in wanted if self.registry.get(p) is not None]

    def _dmi_link(self, protocol: str) -> DmiLink:
        try:
            from mapper_sdk.dmi.link import DmiLink
        except ImportError as exc:
            raise ConfigError(
                f"--dmi needs the 'dmi' extra: pip install 'mapper-gateway[dmi]' ({exc})"
            ) from exc
        assert self.settings.dmi is not None
        return DmiLink(
            protocol,
            registry=self.registry,
            mapper_socket=self.settings.dmi_socket_dir / f"{protocol}.sock",
            edgecore_socket=self.settings.dmi,
            state_dir=self.settings.state_dir,
        )

    # -- the devices directory ---------------------------------------------------------------

    async def _load_and_watch(self) -> None:
        files = self.files
        if files is None:
            self._loaded.set()
            return
        # In a worker thread: 10,000 files take seconds, and /healthz must answer meanwhile.
        began = time.perf_counter()
        await asyncio.to_thread(files.load_all)
        read = time.perf_counter()
        self._log_problems(files, set(files.files))
        with gc_paused():  # starting 10,000 supervisors is another million objects
            await self._apply_files()
            await _let_devices_start()
        trim_heap()
        self._loaded.set()
        log.info(
            "start-up: %d files read in %.2f s, %d devices started in %.2f s",
            len(files.files),
            read - began,
            len(self.runtime.devices) if self.runtime is not None else 0,
            time.perf_counter() - read,
        )
        await self._watch(files)

    async def _watch(self, files: DeviceFiles) -> None:
        try:
            async for _ in watchfiles.awatch(
                files.directory, debounce=WATCH_DEBOUNCE_MS, step=50, recursive=True
            ):
                await self.reload()
        except Exception:  # the devices keep running; only hot reload is lost
            log.exception("watching %s failed; changes are no longer reloaded", files.directory)

    async def reload(self) -> None:
        """Load what changed in the devices directory and apply it (also called by tests)."""
        files = self.files
        if files is None:
            return
        changed = files.refresh()  # in the loop: a few files take milliseconds
        if not changed:
            return
        self.reloads += 1
        self._log_problems(files, changed)
        await self._apply_files()
        if len(changed) >= 100:
            trim_heap()

    async def _apply_files(self) -> None:
        assert self.files is not None
        assert self.sources is not None
        devices = [d for d in self.files.devices if self._is_member(d)]
        result = await self.sources.replace(FILES, devices)
        log.info(
            "devices: %d started, %d restarted, %d updated, %d stopped, %d unchanged%s",
            len(result.started),
            len(result.restarted),
            len(result.updated),
            len(result.stopped),
            len(result.unchanged),
            f", {len(result.failed)} failed" if result.failed else "",
        )

    def _log_problems(self, files: DeviceFiles, changed: set[str]) -> None:
        rejected = set(files.rejected())
        for problem in files.problems:
            if problem.file not in changed:
                continue
            level = logging.ERROR if problem.severity == "error" else logging.WARNING
            log.log(level, "%s", problem)
        for file in sorted(rejected & changed):
            kept = (
                "its last good version keeps running"
                if files.files[file].good
                else "nothing from it runs"
            )
            log.error("%s has errors: %s", file, kept)

    async def wait_loaded(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self._loaded.wait()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    # -- membership (legacy EdgeCore over MQTT) ---------------------------------------------

    def _is_member(self, device: BoundDevice) -> bool:
        members = self.members
        return members is None or device.ref.id in members or device.ref.name in members

    def _members_file(self) -> Path:
        return self.settings.state_dir / "membership.json"

    def _load_members(self) -> set[str]:
        # Edge autonomy: the last list EdgeCore sent runs until it answers again.
        with contextlib.suppress(OSError, ValueError):
            return set(orjson.loads(self._members_file().read_bytes()))
        return set()

    def _membership_changed(self, added: list[str], removed: list[str]) -> None:
        if self.members is None or self.mqtt is None:
            return
        self.members = set(self.mqtt.membership)
        log.info("membership of %s: +%d -%d devices", self.settings.node, len(added), len(removed))
        with contextlib.suppress(OSError):
            self._members_file().write_bytes(orjson.dumps(sorted(self.members)))
        if self.files is not None and self.loaded:
            task = asyncio.get_running_loop().create_task(self._apply_files())
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks.append(task)

    # -- state, for the API ------------------------------------------------------------------

    def readiness(self) -> list[str]:
        """Why the gateway is not ready; empty when it is."""
        waiting = []
        if not self.loaded:
            waiting.append("devices are still loading")
        if self.mqtt is not None and not self.mqtt.connected:
            waiting.append(f"MQTT broker {self.mqtt.settings.url} is not connected")
        for protocol, link in self.links.items():
            if not link.registered:
                waiting.append(f"DMI link {protocol!r} is not registered with EdgeCore")
        return waiting

    def require_runtime(self) -> MapperRuntime:
        if self.runtime is None:
            raise RuntimeError("the gateway is not started")
        return self.runtime
