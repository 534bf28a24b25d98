"""Load KubeEdge device objects from YAML into validated models, with every problem located.

This module owns turning files into ``Device``/``DeviceModel``/``DeviceStatus`` objects:

- finding files (directories recursively, ``*.yaml``/``*.yml``, sorted; hidden entries such as
  the ``..data`` links of a mounted ConfigMap are skipped) and the per-file size limit;
- dispatching each document on ``apiVersion``/``kind``: v1beta1 objects, v1alpha2 objects
  (converted by ``mapper_sdk.models.legacy``), ``kind: List`` (and ``DeviceList``...) items;
  foreign kinds, such as the CRD definitions themselves, are skipped with a warning;
- pydantic validation, with its messages shortened into ones people can act on, and warnings
  for unknown fields (which the CRD models keep rather than refuse);
- ``bind_all``: resolving each device's model and driver and binding them.

Every problem is a ``Problem`` that prints as ``file:line:column: path: message``; loading
never stops at a bad object, so one run reports them all. Items of a ``List`` are reported with
paths from the document root (``items[1].spec.properties[0].name``) so that the path and the
line agree. YAML safety (limits, tags, aliases) and positions are ``_yaml``'s business.
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson
from pydantic import BaseModel, ValidationError

from mapper_sdk import _yaml
from mapper_sdk._bind_all import bind_all
from mapper_sdk._crd_checks import TOO_DEEP, message, too_deep_free_form
from mapper_sdk._load_result import (
    Loaded,
    LoadResult,
    Source,
    format_path,
    gc_paused,
    parse_path,
)
from mapper_sdk.errors import ConfigError, Problem, YamlError
from mapper_sdk.models import GROUP, Device, DeviceModel, DeviceProperty, DeviceStatus

if TYPE_CHECKING:
    from mapper_sdk._registry import Registry

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "LoadResult",
    "Loaded",
    "Source",
    "bind_all",
    "format_path",
    "gc_paused",
    "load_paths",
    "load_text",
    "parse_path",
    "validate_paths",
]

T = TypeVar("T", bound=BaseModel)

V1BETA1 = f"{GROUP}/v1beta1"
V1ALPHA2 = f"{GROUP}/v1alpha2"
YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_MAX_FILE_BYTES = 1 << 20


# --- loading -----------------------------------------------------------------------------------


def load_paths(
    paths: Iterable[str | os.PathLike[str]], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> LoadResult:
    """Load every YAML file under ``paths`` (files, or directories searched recursively)."""
    loader = _Loader()
    with gc_paused():
        for path in paths:
            loader.load_path(os.fspath(path), max_file_bytes)
        return loader.finish()


def load_text(
    text: str, file: str = "<string>", *, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> LoadResult:
    """Load the YAML stream ``text``, reporting problems as if it were the file ``file``."""
    loader = _Loader()
    with gc_paused():
        # Characters are at most 4 bytes: encode only when the count alone cannot decide.
        too_big = len(text) > max_bytes or (
            len(text) * 4 > max_bytes and len(text.encode()) > max_bytes
        )
        if too_big:
            loader.problems.append(Problem(_too_big(max_bytes, "max_bytes"), file))
        else:
            loader.load_stream(text, file)
        return loader.finish()


def _too_big(limit: int, setting: str) -> str:
    return f"larger than {limit} bytes ({setting}); refusing to read it"


def _yaml_files(directory: str, problems: list[Problem]) -> list[str]:
    found: list[str] = []

    def unreadable(exc: OSError) -> None:
        problems.append(Problem(f"cannot read directory: {exc.strerror}", exc.filename))

    for root, dirs, files in os.walk(directory, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.extend(
            os.path.join(root, name)
            for name in files
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        )
    found.sort()
    return found


class _Loader:
    """Accumulates objects and problems across files, in load order."""

    def __init__(self) -> None:
        self.result = LoadResult()
        self.problems = self.result.problems
        self.legacy_devices: list[_Deferred] = []

    # files and documents

    def load_path(self, path: str, max_bytes: int) -> None:
        if os.path.isdir(path):
            files = _yaml_files(path, self.problems)
            if not files:
                self.problems.append(
                    Problem("no *.yaml or *.yml files here", path, None, None, "", "warning")
                )
            for file in files:
                self.load_file(file, max_bytes)
        else:
            self.load_file(path, max_bytes)

    def load_file(self, file: str, max_bytes: int) -> None:
        try:
            data = _read(file, max_bytes)
        except OSError as exc:
            self.problems.append(Problem(f"cannot read: {exc.strerror or exc}", file))
            return
        if data is None:
            self.problems.append(Problem(_too_big(max_bytes, "max_file_bytes"), file))
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            message = f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
            self.problems.append(Problem(message, file, line))
            return
        self.load_stream(text, file)

    def load_stream(self, text: str, file: str) -> None:
        for chunk in _yaml.split_documents(text, file):
            try:
                data, shallow = _yaml.parse(chunk)
            except YamlError as exc:
                self.problems.extend(exc.problems)
                continue
            if data is not None:  # an empty document, such as a trailing "---"
                locator = _yaml.Locator(chunk)
                source = Source(file, chunk.index, None, chunk.first_line, locator, shallow)
                self.document(data, source)

    def document(self, data: Any, source: Source) -> None:
        if type(data) is not dict:
            what = "a list" if type(data) is list else f"the value {data!r:.40}"
            self.problems.append(
                source.problem((), f"must be a mapping (a Kubernetes object), not {what}")
            )
            return
        api, kind = data.get("apiVersion"), data.get("kind")
        if not self.header_ok(api, kind, source):
            return
        if kind == "List" or (str(api).startswith(f"{GROUP}/") and str(kind).endswith("List")):
            self.list_items(data, str(kind), source)
        elif api == V1BETA1 and kind == "Device":
            self.add(self.result.devices, Device, data, source)
        elif api == V1BETA1 and kind == "DeviceModel":
            self.add(self.result.models, DeviceModel, data, source)
        elif api == V1BETA1 and kind == "DeviceStatus":
            self.add(self.result.statuses, DeviceStatus, data, source)
        elif api == V1ALPHA2 and kind == "DeviceModel":
            self.legacy_model(data, source)
        elif api == V1ALPHA2 and kind == "Device":
            # Converting needs the device's model (for v1alpha2 default values), which may be
            # in a later file: convert at the end and insert the results where they belong.
            deferred = _Deferred(len(self.problems), len(self.result.devices), data, source)
            self.legacy_devices.append(deferred)
        else:
            self.problems.append(
                source.problem(
                    (),
                    f"skipped: kind {kind} of apiVersion {api} is not a device object",
                    "warning",
                    at=("kind",),
                )
            )

    def header_ok(self, api: Any, kind: Any, source: Source) -> bool:
        ok = True
        for key, value in (("apiVersion", api), ("kind", kind)):
            if value is None:
                self.problems.append(source.problem((key,), "is required"))
                ok = False
            elif type(value) is not str:
                self.problems.append(source.problem((key,), "must be a string"))
                ok = False
        return ok

    def list_items(self, data: dict[str, Any], kind: str, source: Source) -> None:
        items = data.get("items")
        if source.item_index is not None:
            message = f"skipped: a {kind} inside a List is not supported"
            self.problems.append(source.problem((), message, "warning", at=("kind",)))
        elif items is None:
            return  # "items:" with nothing under it: nothing to load
        elif type(items) is not list:
            self.problems.append(source.problem(("items",), "must be a list"))
        else:
            for index, item in enumerate(items):
                self.document(item, dataclasses.replace(source, item_index=index))

    # validation

    def add(self, into: list[Loaded[T]], cls: type[T], data: Any, source: Source) -> None:
        if cls is Device:
            data, fresh = _reuse_properties(data)
            problems = len(self.problems)
            obj = self.validate(cls, data, source)
            if obj is not None and len(self.problems) == problems:
                _keep_properties(cast(Device, obj), fresh)
        else:
            obj = self.validate(cls, data, source)
        if obj is not None:
            into.append(Loaded(obj, source))

    def validate(self, cls: type[T], data: Any, source: Source) -> T | None:
        try:
            # Forbidding unknown fields costs nothing and proves, in the common case, that
            # there are none anywhere in the object: no walk over the result is needed.
            obj = cls.model_validate(data, extra="forbid")
        except ValidationError as exc:
            if not self.report(exc, source):
                return None
            obj = cls.model_validate(data)  # only unknown fields were found: keep them
        if not source._shallow:
            path = too_deep_free_form(obj)
            if path is not None:
                self.problems.append(source.problem(path, TOO_DEEP))
                return None
        return obj

    def report(self, exc: ValidationError, source: Source) -> bool:
        """Report ``exc``; true when its only errors were unknown fields (just warnings)."""
        only_unknown = True
        for error in exc.errors(include_url=False):
            path = tuple(error["loc"])
            if error["type"] != "extra_forbidden":
                self.problems.append(source.problem(path, message(error)))
                only_unknown = False
                continue
            self.problems.append(source.problem(path, "unknown field (ignored)", "warning"))
            inner = _yaml.too_deep(error["input"])  # an unknown field is a free-form value
            if inner is not None:
                self.problems.append(source.problem((*path, *inner), TOO_DEEP))
                only_unknown = False
        return only_unknown

    # v1alpha2

    def legacy_model(self, data: dict[str, Any], source: Source) -> None:
        try:
            from mapper_sdk.models.legacy import model_from_v1alpha2
        except ImportError:
            self.problems.append(_no_legacy(source))
            return
        converted = self.convert(source, model_from_v1alpha2, data)
        if converted is not None:
            # The text's nesting bound says nothing about the converted object: walk it.
            source = dataclasses.replace(source, _shallow=False)
            self.add(self.result.models, DeviceModel, converted, source)

    def convert(self, source: Source, convert: Any, *args: Any) -> dict[str, Any] | None:
        """Run a v1alpha2 converter; its problems are located in the original document."""
        try:
            converted: dict[str, Any] = convert(*args)
        except ConfigError as exc:
            for problem in exc.problems:
                self.problems.append(source.problem(parse_path(problem.path), problem.message))
            return None
        return converted

    def finish(self) -> LoadResult:
        # Back to front, so the recorded insertion points of earlier devices stay valid.
        for deferred in reversed(self.legacy_devices):
            self.legacy_device(deferred)
        self.legacy_devices.clear()
        return self.result

    def legacy_device(self, deferred: _Deferred) -> None:
        problems, self.problems = self.problems, []
        devices: list[Loaded[Device]] = []
        try:
            from mapper_sdk.models.legacy import device_from_v1alpha2
        except ImportError:
            self.problems.append(_no_legacy(deferred.source))
        else:
            model = self.model_annotations(deferred.data)
            converted = self.convert(deferred.source, device_from_v1alpha2, deferred.data, model)
            if converted is not None:
                source = dataclasses.replace(deferred.source, _shallow=False)
                self.add(devices, Device, converted, source)
        problems[deferred.problem_at : deferred.problem_at] = self.problems
        self.problems = self.result.problems = problems
        self.result.devices[deferred.device_at : deferred.device_at] = devices

    def model_annotations(self, device: dict[str, Any]) -> dict[str, Any] | None:
        """The device's loaded model as far as the v1alpha2 converter needs it (annotations)."""
        spec, meta = device.get("spec"), device.get("metadata")
        ref = spec.get("deviceModelRef") if isinstance(spec, dict) else None
        name = ref.get("name") if isinstance(ref, dict) else None
        namespace = (meta.get("namespace") if isinstance(meta, dict) else None) or "default"
        for loaded in self.result.models:
            if loaded.obj.key == (namespace, name):
                return {"metadata": {"annotations": dict(loaded.obj.metadata.annotations)}}
        return None


def _read(file: str, limit: int) -> bytes | None:
    """The file's bytes, or ``None`` when it is larger than ``limit``; never reads much more.

    Reads exactly the size ``fstat`` reports (plus one byte, to notice files that grew or whose
    size is not known, such as pipes): asking for ``limit`` bytes up front would allocate and
    shrink a 1 MiB buffer per file, which made reading three times slower.
    """
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            return None
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        parts, total = [data], len(data)
        while total <= limit:
            more = os.read(fd, min(1 << 16, limit + 1 - total))
            if not more:
                break
            parts.append(more)
            total += len(more)
        return b"".join(parts) if total <= limit else None
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Deferred:
    problem_at: int
    device_at: int
    data: dict[str, Any]
    source: Source


_SHARED_PROPERTIES: weakref.WeakValueDictionary[bytes, DeviceProperty] = (
    weakref.WeakValueDictionary()
)


def _reuse_properties(data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[int, bytes]]]:
    """``data`` with property blocks seen before replaced by their validated objects.

    A fleet written from one template repeats each property block (visitors, cycles) on every
    device; the validated copies are most of a device's memory (about 2 KB per property) and
    validating them is most of the time spent on a device. pydantic takes a model instance in
    place of its input as it is, so equal blocks validate once and become one frozen object.
    Returns the new data (the input is not changed) and the (index, key) of blocks not seen
    yet, for ``_keep_properties``.
    """
    spec = data.get("spec")
    if type(spec) is not dict:
        return data, []
    raw = spec.get("properties")
    if type(raw) is not list:
        return data, []
    properties: list[Any] = []
    fresh: list[tuple[int, bytes]] = []
    for index, item in enumerate(raw):
        try:
            key = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            properties.append(item)  # not JSON-like: validated, and kept, on its own
            continue
        shared = _SHARED_PROPERTIES.get(key)
        if shared is None:
            fresh.append((index, key))
            properties.append(item)
        else:
            properties.append(shared)
    return {**data, "spec": {**spec, "properties": properties}}, fresh


def _keep_properties(device: Device, fresh: list[tuple[int, bytes]]) -> None:
    """Remember the blocks ``device`` validated first (only from a device with no problem, so
    a reused block never hides a warning that every device using it must get)."""
    properties = device.spec.properties
    for index, key in fresh:
        if index < len(properties):
            _SHARED_PROPERTIES.setdefault(key, properties[index])


def _no_legacy(source: Source) -> Problem:
    return source.problem((), "v1alpha2 support not available", at=("apiVersion",))


def validate_paths(paths: Iterable[str | os.PathLike[str]], registry: Registry) -> list[Problem]:
    """Load and bind everything under ``paths``; every problem, sorted by file and line."""
    result = load_paths(paths)
    _, problems = bind_all(result, registry)
    return sorted(
        [*result.problems, *problems],
        key=lambda p: (p.file or "", p.line or 0, p.column or 0),
    )
