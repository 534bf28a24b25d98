"""The audit file: one line per write attempt however it ends, on disk at once, rotated by size.

The gateway's audit file is read back from disk (not from the logger): every kind of write
attempt the API can meet (accepted, refused by the model, by the guard, by the body limit,
by validation, by routing) must leave exactly one JSON line, and reads none.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import orjson
import pytest

from mapper_gateway.audit import AuditLog
from mapper_gateway.gateway import Gateway
from mapper_gateway.security import Principal
from mapper_sdk import ConfigError

from .kit import AUTH

WRITE = "/api/v1/devices/default/thermo-1/properties/mode"
WHO = Principal("token:abcd1234", "127.0.0.1:5000")


def lines_of(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_every_write_attempt_is_one_line_in_the_file_and_reads_none(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    attempts: list[tuple[str, str, dict[str, object], int, str]] = [
        ("PUT", WRITE, {"json": {"value": "heat"}, "headers": AUTH}, 200, "applied"),
        (
            "PUT",
            "/api/v1/devices/default/thermo-1/properties/temperature",
            {"json": {"value": "1"}, "headers": AUTH},
            409,
            "refused",
        ),
        (
            "PUT",
            "/api/v1/devices/default/nope/properties/mode",
            {"json": {"value": "1"}, "headers": AUTH},
            404,
            "refused",
        ),
        ("PUT", WRITE, {"json": {"value": "heat"}}, 401, "unauthorized"),
        ("PUT", WRITE, {"json": {"nothing": 1}, "headers": AUTH}, 422, "invalid"),
        ("PUT", WRITE, {"content": b"x" * 70_000, "headers": AUTH}, 413, "too_large"),
        ("PUT", "/api/v1/no-such-route", {"json": {"value": 1}, "headers": AUTH}, 404, "no_route"),
        ("DELETE", WRITE, {"headers": AUTH}, 405, "method_not_allowed"),
        (
            "POST",
            "/api/v1/devicemethod/default/thermo-1/NoSuchMethod/mode/heat",
            {"headers": AUTH},
            404,
            "refused",
        ),
        (
            "GET",
            "/api/v1/devicemethod/default/thermo-1/SetClimate/mode/heat",
            {},
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/v1/devicemethod/default/thermo-1/SetClimate/mode/cool",
            {"headers": AUTH},
            200,
            "applied",
        ),
    ]
    for method, path, options, status, _ in attempts:
        answer = await client.request(method, path, **options)  # type: ignore[arg-type]
        assert answer.status_code == status, (method, path, answer.text)
    for read in ("/api/v1/devices", WRITE, "/metrics"):  # reads leave no line
        assert (await client.get(read)).status_code == 200
    assert gateway.audit.wait_written(10)
    path = gateway.settings.state_dir / "audit.log"
    records = lines_of(path)
    assert [(r["result"], r["status"]) for r in records] == [(a[4], a[3]) for a in attempts]
    assert all(r["event"] == "write" for r in records)
    assert records[0]["target"] == "default/thermo-1/mode"
    assert records[0]["value"] == "heat"
    assert records[1]["reason"] == "read_only"
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o600  # values and addresses: owner only
    metrics = (await client.get("/metrics")).text
    assert f"mapper_gateway_audit_lines_total {float(len(attempts))}" in metrics
    assert "mapper_gateway_audit_lost_total 0.0" in metrics


async def test_lines_are_fsynced_in_batches_never_in_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    log = AuditLog(tmp_path / "audit.log", max_bytes=1 << 20, keep=2)
    log.start()
    try:
        log.record("write", WHO, "applied", target="a/b/c", value="1")
        assert log.wait_written(10)
        # On disk before close: another process reading the file sees it now.
        assert lines_of(tmp_path / "audit.log")[0]["value"] == "1"
        assert len(synced) == 1
        for n in range(500):
            log.record("write", WHO, "applied", target="a/b/c", value=str(n))
        assert log.wait_written(10)
        assert 1 < len(synced) <= 501  # at most one fsync per line, fewer when lines queue up
    finally:
        log.close()
    assert [r["value"] for r in lines_of(tmp_path / "audit.log")][-3:] == ["497", "498", "499"]


def test_the_file_rotates_by_size_and_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=2048, keep=3)
    log.start()
    try:
        for n in range(300):
            log.record("write", WHO, "applied", seq=n)
        assert log.wait_written(10)
    finally:
        log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    # Oldest first: .3, .2, .1, then the live file; no line split, none lost in between.
    seqs = [r["seq"] for name in reversed(names[1:]) for r in lines_of(tmp_path / name)] + [
        r["seq"] for r in lines_of(path)
    ]
    assert seqs == list(range(seqs[0], 300))
    assert seqs[0] > 0  # the oldest file was dropped
    for name in names:
        assert (tmp_path / name).stat().st_size <= 2048


def test_a_restart_appends_and_counts_the_existing_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    for run in range(2):
        log = AuditLog(path, max_bytes=1500, keep=1)
        log.start()
        for n in range(6):
            log.record("write", WHO, "applied", run=run, seq=n)
        assert log.wait_written(10)
        log.close()
    rotated = lines_of(tmp_path / "audit.log.1")
    current = lines_of(path)
    everything = [(r["run"], r["seq"]) for r in rotated + current]
    assert everything[-1] == (1, 5)
    assert len(everything) == len(set(everything))
    assert path.stat().st_size <= 1500


def test_a_failing_disk_is_reported_and_the_gateway_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = Path("/dev/full")  # every write fails with ENOSPC
    if not full.exists():
        pytest.skip("no /dev/full on this system")
    caplog.set_level(logging.INFO)
    log = AuditLog(full, max_bytes=1 << 30, keep=1)
    log.start()
    try:
        for n in range(3):
            log.record("write", WHO, "applied", seq=n)
        assert log.wait_written(10)
        assert log.errors == 3
        assert log.written == 0
    finally:
        log.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once, not once a line
    assert "audit log /dev/full" in errors[0]
    assert "still in the process log" in errors[0]
    audit_lines = [r for r in caplog.records if r.name == "mapper_gateway.audit"]
    assert len(audit_lines) == 3


def test_an_unwritable_audit_path_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"audit_file .*--audit-file"):
        AuditLog(blocker / "audit.log", max_bytes=4096, keep=1).start()
