"""The last known Devices and DeviceModels of a mapper, kept in its state directory.

Edge autonomy: a mapper restarted while EdgeCore (or the cloud) is unreachable runs the devices
it last heard of, with their last desired values (they live in ``Device.spec``), until the link
hears from EdgeCore again. Any link that receives specs from EdgeCore can keep them here; the
DMI link does, and the MQTT membership path can reuse it as is.

One JSON file holds the whole set::

    {"format": 1, "savedAtMs": 1700000000000, "models": [...], "devices": [...]}

each object being ``model_dump(by_alias=True, exclude_none=True, mode="json")``, the shape a
CRD is written in. Writes are atomic (temp file, fsync, ``os.replace``, fsync of the directory):
a mapper killed at any instant leaves either the old file or the new one, never half of one.
Loading validates the file with the pydantic models; a file that does not validate is renamed
aside (quarantined, kept for a human to look at) with a warning, and the mapper starts empty:
a corrupt cache must never keep a mapper from starting, EdgeCore's answer replaces it anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mapper_sdk.models import Device, DeviceModel

log = logging.getLogger("mapper_sdk.spec_store")

FORMAT = 1
"""The file format written; a file of any other format is quarantined, not guessed at."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class Specs:
    """What a ``SpecStore`` holds: the devices, their models, and when they were saved."""

    devices: list[Device]
    models: list[DeviceModel]
    saved_at_ms: int


class _Document(BaseModel):
    """The file's shape, validated in one pass (the CRD models check each object)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1]
    saved_at_ms: int = Field(alias="savedAtMs")
    models: list[DeviceModel]
    devices: list[Device]


class SpecStore:
    """One JSON file of Devices and DeviceModels; see the module docstring.

    Args:
        path: the file. ``SpecStore.in_dir`` names it after a link and creates nothing yet.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def in_dir(cls, state_dir: str | os.PathLike[str], name: str) -> SpecStore:
        """The store ``<state_dir>/specs-<name>.json``; unsafe characters of ``name`` become _."""
        return cls(Path(state_dir) / f"specs-{_UNSAFE.sub('_', name)}.json")

    # -- reading --------------------------------------------------------------------------

    def load(self) -> Specs | None:
        """The stored set, or ``None`` when there is none or it was unusable (and quarantined)."""
        self._remove_leftover_temp_files()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            # Unreadable is not corrupt: leave it alone, a later save may still succeed.
            log.warning("cannot read the last known devices from %s: %s", self.path, exc)
            return None
        try:
            doc = _Document.model_validate_json(raw)
        except ValidationError as exc:
            self._quarantine(_summary(exc))
            return None
        return Specs(list(doc.devices), list(doc.models), doc.saved_at_ms)

    def _quarantine(self, reason: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.warning(
                "the last known devices in %s are unusable (%s) and cannot be moved aside (%s); "
                "starting without them",
                self.path,
                reason,
                exc,
            )
            return
        log.warning(
            "the last known devices in %s are unusable (%s); moved to %s, starting without them",
            self.path,
            reason,
            aside,
        )

    def _remove_leftover_temp_files(self) -> None:
        # A mapper killed between creating its temp file and the rename leaves it behind.
        if self.path.parent.is_dir():
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    # -- writing --------------------------------------------------------------------------

    def save(self, devices: Iterable[Device], models: Iterable[DeviceModel]) -> None:
        """Replace the stored set atomically and durably. Raises ``OSError`` if it cannot."""
        data = _encode(devices, models)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600: configData may hold addresses or credentials.
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)


def _encode(devices: Iterable[Device], models: Iterable[DeviceModel]) -> bytes:
    """The file's bytes for a set of devices and models (each as a CRD would be written)."""
    doc = {
        "format": FORMAT,
        "savedAtMs": int(time.time() * 1000),
        "models": [_dump(m) for m in models],
        "devices": [_dump(d) for d in devices],
    }
    return orjson.dumps(doc)


def _dump(obj: Device | DeviceModel) -> object:
    return obj.model_dump(by_alias=True, exclude_none=True, mode="json")


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is: without this, a power loss
    # right after os.replace can bring back the old file (or none).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not allow opening a directory; the data is still synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _summary(exc: ValidationError) -> str:
    """The first problems of a validation error on one line, each with its location."""
    errors = exc.errors(include_url=False)
    parts = [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in errors[:3]]
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


__all__ = ["FORMAT", "SpecStore", "Specs"]
