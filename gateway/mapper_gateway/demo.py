"""``mapper-gateway demo``: simulated devices for a first look, no hardware and no setup.

The demo runs the gateway (with the embedded broker unless ``--mqtt-url`` is given) on a
directory of devices: ``--devices`` if given, else ``<state-dir>/demo-devices``, filled on
first use with the virtual devices shipped in this package (edit them: the gateway reloads).

Protocol packages can add their own simulator through the entry-point group
``mapper_sdk.demos``: the entry point is a callable taking that directory and returning an
async context manager, which starts a simulator on 127.0.0.1, writes its DeviceModel and
Device YAMLs into the directory, and stops the simulator on exit. A package that is not
installed, fails to import or fails to start is skipped (logged at DEBUG): the demo always
runs with what works.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path

from mapper_gateway.settings import GatewaySettings

log = logging.getLogger("mapper_gateway.demo")

DEMO_GROUP = "mapper_sdk.demos"
SHIPPED = Path(__file__).resolve().parent / "demo_devices"


@asynccontextmanager
async def demo_devices(settings: GatewaySettings) -> AsyncIterator[GatewaySettings]:
    directory = settings.devices or settings.state_dir / "demo-devices"
    if settings.devices is None:
        directory.mkdir(parents=True, exist_ok=True)
        for shipped in sorted(SHIPPED.glob("*.yaml")):
            target = directory / shipped.name
            if not target.exists():  # keep the user's edits across demo runs
                shutil.copyfile(shipped, target)
    async with AsyncExitStack() as stack:
        for ep in entry_points(group=DEMO_GROUP):
            try:
                factory = ep.load()
                await stack.enter_async_context(factory(directory))
            except Exception as exc:  # an optional simulator must never stop the demo
                log.debug("demo simulator %r skipped: %r", ep.name, exc)
                continue
            log.info("demo simulator %r started", ep.name)
        yield settings.model_copy(update={"devices": directory})
