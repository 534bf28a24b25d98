"""Fixtures shared by every test suite."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.mosquitto import Mosquitto, ensure_available

# --- mosquitto: a real broker per test -----------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started mosquitto on a free 127.0.0.1 port (anonymous, no persistence,
    ``max_queued_messages 0``), stopped after the test. Use ``helpers.mosquitto.Mosquitto``
    directly for other configurations (persistence, password file, TLS).

    Skips when ``/usr/sbin/mosquitto`` is missing (Debian package ``mosquitto``), except under
    CI (``CI=true``), where it fails instead."""
    ensure_available()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.resume()
        broker.stop()


# --- leaks are reported by the test that caused them ---------------------------------------------


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect garbage after every test, so an unclosed socket or file (a ResourceWarning,
    an error under ``filterwarnings = error``) fails the test that leaked it instead of
    whichever later test happens to trigger the collection."""
    yield
    gc.collect()
