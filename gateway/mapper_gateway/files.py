"""``DeviceFiles``: the devices directory, file by file, with the last good version of each.

This module owns what "the devices in the directory" means while files change under a running
gateway:

- A file is loaded on its own; if it has an error (YAML, validation, or a binding error located
  in it), its problems are reported with ``file:line:col`` and its *last good* version stays
  in force, so the devices it defined keep running as they were. A file that never loaded
  cleanly contributes nothing until it is fixed.
- A removed file takes its objects with it.
- Binding is incremental: a device is re-bound only when its Device or its DeviceModel object
  changed, so a change to one file costs that file, not the directory. A device whose own file
  did not change but whose model went bad keeps its last bound version (and the problem is
  reported), for the same last-good reason.

Changes are found by comparing each file's ``(mtime, size, inode)`` with what was loaded, which
also catches a Kubernetes ConfigMap update (an atomic swap of a hidden directory behind
unchanged symlinks).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mapper_sdk import BoundDevice, DeviceRef, Problem, Registry, loader
from mapper_sdk.binding import bind
from mapper_sdk.loader import Loaded, LoadResult, Source, gc_paused
from mapper_sdk.models import Device, DeviceModel

log = logging.getLogger("mapper_gateway.files")

Signature = tuple[int, int, int]
Named = TypeVar("Named", Device, DeviceModel)


@dataclass(slots=True)
class FileState:
    """One file: its last good objects and the problems of the version on disk."""

    signature: Signature
    good: LoadResult | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


@dataclass(slots=True)
class _Bound:
    device: Device
    model: DeviceModel
    bound: BoundDevice


class DeviceFiles:
    def __init__(self, directory: Path, registry: Registry) -> None:
        self.directory = directory.resolve()
        self.registry = registry
        self.files: dict[str, FileState] = {}
        self.bind_problems: list[Problem] = []
        self._bound: dict[DeviceRef, _Bound] = {}

    # -- loading ---------------------------------------------------------------------------

    def load_all(self) -> None:
        """The first load: every file at once (the loader's fast path), split per file."""
        found = self._scan()
        result = loader.load_paths([self.directory]) if found else LoadResult()
        per_file = _split(result)
        for file, signature in found.items():
            part = per_file.get(file, LoadResult())
            state = FileState(signature, None, part.problems)
            state.good = part if state.ok else None
            self.files[file] = state
        self._bind_and_settle(set(found))

    def refresh(self) -> set[str]:
        """Load what changed on disk since the last call; return the files that changed."""
        found = self._scan()
        changed = {f for f, sig in found.items() if self.files.get(f, _NONE).signature != sig}
        removed = set(self.files) - set(found)
        for file in removed:
            del self.files[file]
        previous: dict[str, LoadResult | None] = {}
        for file in sorted(changed):
            old = self.files.get(file)
            previous[file] = old.good if old is not None else None
            result = loader.load_paths([file])
            state = FileState(found[file], None, result.problems)
            state.good = result if state.ok else previous[file]
            self.files[file] = state
        if changed or removed:
            self._bind_and_settle(changed, previous)
        return changed | removed

    def _scan(self) -> dict[str, Signature]:
        found: dict[str, Signature] = {}
        for root, dirs, names in os.walk(self.directory, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # ConfigMap ..data
            for name in names:
                if name.startswith(".") or not name.endswith(loader.YAML_SUFFIXES):
                    continue
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)  # follows symlinks: a swapped target is a change
                except OSError:
                    continue
                found[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return found

    # -- binding ---------------------------------------------------------------------------

    def _bind_and_settle(
        self, changed: set[str], previous: dict[str, LoadResult | None] | None = None
    ) -> None:
        """Bind; a changed file whose new version has binding errors falls back to its last
        good version, and the binding is redone once without it."""
        with gc_paused():
            self._settle(changed, previous or {})

    def _settle(self, changed: set[str], previous: dict[str, LoadResult | None]) -> None:
        problems = self._bind()
        rejected = {p.file for p in problems if p.severity == "error" and p.file in changed}
        for file in rejected:
            assert file is not None  # it is one of ``changed``
            state = self.files[file]
            state.problems = state.problems + [p for p in problems if p.file == file]
            state.good = previous.get(file)
        if rejected:
            problems = [p for p in self._bind() if p.file not in rejected]
        self.bind_problems = problems
        for file in changed:
            _forget_text(self.files[file].good)

    def _bind(self) -> list[Problem]:
        problems: list[Problem] = []
        good = [state.good for state in self._good()]
        models = _unique("DeviceModel", [result.models for result in good], problems)
        devices = _unique("Device", [result.devices for result in good], problems)
        keep: dict[DeviceRef, _Bound] = {}
        for key, loaded in devices.items():
            ref = DeviceRef(*key)
            entry = self._bind_one(ref, loaded, models, problems)
            if entry is not None:
                keep[ref] = entry
        self._bound = keep
        return problems

    def _bind_one(
        self,
        ref: DeviceRef,
        loaded: Loaded[Device],
        models: dict[tuple[str, str], Loaded[DeviceModel]],
        problems: list[Problem],
    ) -> _Bound | None:
        device, source = loaded.obj, loaded.source
        cached = self._bound.get(ref)
        model = models.get(device.model_key)
        unchanged = cached is not None and cached.device is device
        if model is not None and unchanged and cached is not None and cached.model is model.obj:
            return cached
        if model is None:
            message = f"DeviceModel {device.model_key[1]} not found in namespace {ref.namespace}"
            problems.append(source.problem(("spec", "deviceModelRef", "name"), message))
            return cached if cached is not None and cached.device is device else None
        protocol = device.spec.protocol.protocol_name
        driver = self.registry.get(protocol) if protocol else None
        if driver is None and protocol:
            where = ("spec", "protocol", "protocolName")
            problems.append(
                source.problem(where, self.registry.why_unavailable(protocol), "warning")
            )
        bound, found = bind(device, model.obj, driver)
        for problem in found:
            origin = model.source if problem.in_model else source
            problems.append(origin.problem(problem.path, problem.message, problem.severity))
        if bound is None or driver is None:
            return cached if cached is not None and cached.device is device else None
        return _Bound(device, model.obj, bound)

    def _good(self) -> list[_GoodFile]:
        return [
            _GoodFile(file, state.good)
            for file, state in sorted(self.files.items())
            if state.good is not None
        ]

    # -- results ---------------------------------------------------------------------------

    @property
    def devices(self) -> list[BoundDevice]:
        return [entry.bound for entry in self._bound.values()]

    @property
    def problems(self) -> list[Problem]:
        """Every current problem: each file's own, then the binding's, sorted by place."""
        found = [p for state in self.files.values() for p in state.problems]
        seen = {(p.file, p.line, p.column, p.message) for p in found}
        found += [
            p for p in self.bind_problems if (p.file, p.line, p.column, p.message) not in seen
        ]
        return sorted(found, key=lambda p: (p.file or "", p.line or 0, p.column or 0))

    def rejected(self) -> list[str]:
        """Files whose version on disk has errors (their last good version is in force)."""
        return sorted(f for f, state in self.files.items() if not state.ok)


_NONE = FileState((-1, -1, -1), None)


@dataclass(frozen=True, slots=True)
class _GoodFile:
    file: str
    good: LoadResult


def _unique(
    kind: str, groups: list[list[Loaded[Named]]], problems: list[Problem]
) -> dict[tuple[str, str], Loaded[Named]]:
    """The first object of each name, in file order; later ones are reported as duplicates."""
    first: dict[tuple[str, str], Loaded[Named]] = {}
    for group in groups:
        for loaded in group:
            meta = loaded.obj.metadata
            key = (meta.namespace, meta.name)
            if key in first:
                where = first[key].source.where()
                message = f"duplicate {kind} {key[0]}/{key[1]}: already defined at {where}"
                problems.append(loaded.source.problem(("metadata", "name"), message))
                continue
            first[key] = loaded
    return first


def _forget_text(result: LoadResult | None) -> None:
    """Drop the file text each object keeps for locating problems, once it is bound.

    The text costs kilobytes per device; without it a later problem in this version (its model
    changed, say) is located at the object's first line instead of the exact key.
    """
    if result is None:
        return
    result.models[:] = [Loaded(m.obj, _textless(m.source)) for m in result.models]
    result.devices[:] = [Loaded(d.obj, _textless(d.source)) for d in result.devices]


def _textless(source: Source) -> Source:
    # The constructor, not dataclasses.replace: 10,000 devices make the difference visible.
    return Source(source.file, source.doc_index, source.item_index, source.first_line)


def _split(result: LoadResult) -> dict[str, LoadResult]:
    per_file: dict[str, LoadResult] = {}

    def part(file: str | None) -> LoadResult:
        return per_file.setdefault(file or "", LoadResult())

    for model in result.models:
        part(model.source.file).models.append(model)
    for device in result.devices:
        part(device.source.file).devices.append(device)
    for problem in result.problems:
        part(problem.file).problems.append(problem)
    return per_file
