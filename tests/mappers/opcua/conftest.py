"""Fixtures of the OPC-UA driver tests: one device server per test module.

An asyncua server takes 1-2 s to start, so each module shares one, in the module's event loop
(the modules mark their tests ``asyncio(loop_scope="module")``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from .device import DeviceServer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def device() -> AsyncIterator[DeviceServer]:
    server = await DeviceServer.start()
    try:
        yield server
    finally:
        await server.stop()
