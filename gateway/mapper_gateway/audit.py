"""The audit log: one JSON line per write attempt, accepted or refused, durable and rotated.

Every record goes two ways: to the logger ``mapper_gateway.audit`` (the process log, where an
operator watches) and to the audit file (``audit_file``, default ``<state_dir>/audit.log``).

The file is written by one thread of its own, so a slow disk (an SD card's ``fsync`` can take
tens of milliseconds) never stalls the event loop that polls the devices. The thread takes
every line queued since its last pass, appends them and ``fsync``s once (a group commit): a
line is on disk a few milliseconds after the request that made it, whatever the write rate.

Rotation is by size: before a line would take the file past ``max_bytes``, ``audit.log``
becomes ``audit.log.1``, ``.1`` becomes ``.2`` and so on, and ``.<keep>`` is dropped. A line
is never split across two files. The file is created ``0600``: it holds written values and
client addresses (never a token: principals are digest prefixes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from mapper_gateway.security import Principal
from mapper_sdk import ConfigError

AUDIT = logging.getLogger("mapper_gateway.audit")
log = logging.getLogger("mapper_gateway")

_ERROR_LOG_EVERY_S = 60.0  # a failing disk is reported once a minute, not once a line


class AuditLog:
    """Writes audit records; ``start`` opens the file, ``close`` drains and closes it."""

    def __init__(self, path: Path, *, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.queued = 0  # records handed to the writer
        self.written = 0  # records on disk (written and fsynced)
        self.errors = 0  # records lost to a failing disk
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._fd = -1
        self._size = 0
        self._last_error_log = -_ERROR_LOG_EVERY_S

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            raise ConfigError(
                f"audit_file {self.path}: {exc.strerror}; set --audit-file to a writable path"
            ) from exc
        self._thread = threading.Thread(target=self._run, name="audit log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, then stop (blocking: call it from a worker thread)."""
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        thread.join()
        self._thread = None
        os.close(self._fd)
        self._fd = -1

    def record(self, event: str, principal: Principal, result: str, **fields: Any) -> None:
        """One audit record: logged at once, on disk within one ``fsync``."""
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "principal": principal.name,
            "client": principal.client,
            "result": result,
            **fields,
        }
        line = orjson.dumps(record)
        AUDIT.info("%s", line.decode())
        if self._thread is not None:
            self.queued += 1
            self._queue.put(line + b"\n")

    def wait_written(self, timeout: float = 10.0) -> bool:
        """Block until every record queued so far is on disk (or lost); False on timeout."""
        target = self.queued
        with self._done:
            return self._done.wait_for(lambda: self.written + self.errors >= target, timeout)

    # -- the writer thread -------------------------------------------------------------------

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(self.path, flags, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._queue.get_nowait())
            lines = [line for line in batch if line is not None]
            stopping = len(lines) < len(batch)
            if lines:
                self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        try:
            pending: list[bytes] = []
            size = self._size
            for line in lines:
                if size > 0 and size + len(line) > self.max_bytes:
                    self._append(pending)
                    pending = []
                    self._rotate()
                    size = 0
                pending.append(line)
                size += len(line)
            self._append(pending)
        except OSError as exc:
            self._failed(exc, len(lines))
            return
        with self._done:
            self.written += len(lines)
            self._done.notify_all()

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        base = str(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{base}.{self.keep}")
        for n in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{base}.{n}", f"{base}.{n + 1}")
        os.rename(base, f"{base}.1")
        self._open()
        _fsync_dir(self.path.parent)  # the renames survive a power cut with the lines

    def _failed(self, exc: OSError, count: int) -> None:
        if self._fd < 0:  # a rotation failed half-way: write on in a fresh file
            with contextlib.suppress(OSError):
                self._open()
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_S:
            self._last_error_log = now
            log.error(
                "audit log %s: %s; %d records lost so far (they are still in the process log)",
                self.path,
                exc.strerror or exc,
                self.errors + count,
            )
        with self._done:
            self.errors += count
            self._done.notify_all()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
