"""Find drivers: entry points of the group ``mapper_sdk.drivers``, loaded only when needed.

Built-in and third-party drivers are found the same way. Listing the registry does not import
anything; a driver's module (and so its protocol library) is imported the first time a device
of that protocol is bound. A plugin that fails to import is reported once and marked broken,
never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from mapper_sdk.driver import Driver, DriverClass

log = logging.getLogger(__name__)

DRIVER_GROUP = "mapper_sdk.drivers"


class Registry:
    """The drivers a runtime may use. Injectable: tests build one with ``add``."""

    def __init__(self) -> None:
        self._classes: dict[str, DriverClass] = {}
        self._entry_points: dict[str, EntryPoint] = {}
        self.broken: dict[str, str] = {}
        """Protocol name -> why its plugin could not be loaded."""

    @classmethod
    def from_entry_points(
        cls,
        *,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] = (),
        group: str = DRIVER_GROUP,
    ) -> Registry:
        """Discover installed drivers without importing them."""
        registry = cls()
        allowed = set(allow) if allow is not None else None
        denied = set(deny)
        for ep in entry_points(group=group):
            if ep.name in denied or (allowed is not None and ep.name not in allowed):
                continue
            registry._entry_points.setdefault(ep.name, ep)
        return registry

    def add(self, driver: DriverClass) -> None:
        """Register a driver class directly (tests, embedded use)."""
        self._classes[driver.protocol] = driver
        self.broken.pop(driver.protocol, None)

    def names(self) -> list[str]:
        """Every protocol this registry knows, loaded or not, broken ones excluded."""
        known = set(self._classes) | set(self._entry_points)
        return sorted(known - set(self.broken))

    def __contains__(self, protocol: object) -> bool:
        return protocol in self._classes or protocol in self._entry_points

    def get(self, protocol: str) -> DriverClass | None:
        """The driver for ``protocol``, importing its plugin on first use; ``None`` if unusable."""
        driver = self._classes.get(protocol)
        if driver is not None:
            return driver
        ep = self._entry_points.get(protocol)
        if ep is None or protocol in self.broken:
            return None
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin must not take the process down
            self._mark_broken(protocol, f"cannot import {ep.value}: {exc!r}")
            return None
        if not (isinstance(loaded, type) and issubclass(loaded, Driver)):
            self._mark_broken(protocol, f"{ep.value} is not a mapper_sdk.Driver subclass")
            return None
        if loaded.protocol != protocol:
            self._mark_broken(
                protocol,
                f"{ep.value} declares protocol {loaded.protocol!r}, "
                f"but its entry point is named {protocol!r}",
            )
            return None
        self._classes[protocol] = loaded
        return loaded

    def _mark_broken(self, protocol: str, reason: str) -> None:
        self.broken[protocol] = reason
        log.error("driver plugin %r is broken and will not be used: %s", protocol, reason)
        return

    def why_unavailable(self, protocol: str) -> str:
        """A sentence for the user about why ``protocol`` has no usable driver."""
        if protocol in self.broken:
            return f"the driver plugin for {protocol!r} is broken: {self.broken[protocol]}"
        known = ", ".join(self.names()) or "none"
        return (
            f"no installed driver speaks protocol {protocol!r} (installed: {known}); "
            f"install the mapper package that registers it in the {DRIVER_GROUP!r} "
            "entry-point group"
        )
