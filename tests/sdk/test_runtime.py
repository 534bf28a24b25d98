"""The runtime with the real virtual driver: supervision, writes, diffs, failure isolation."""

import asyncio
import dataclasses
import gc
from collections.abc import Iterator, Sequence

import pytest

from mapper_sdk.binding import BoundProperty
from mapper_sdk.bus import WriteStatus
from mapper_sdk.driver import DeviceState, Value
from mapper_sdk.errors import DriverError
from mapper_sdk.models import Device, DeviceModel
from mapper_sdk.testing import (
    FAST_SETTINGS,
    bind_or_raise,
    make_device,
    make_model,
    model_property,
    ref_of,
    run_devices,
)
from mapper_sdk.virtual import VirtualDriver


@pytest.fixture(autouse=True)
def fresh_world() -> Iterator[None]:
    VirtualDriver.world.reset()
    yield
    VirtualDriver.world.reset()


MODEL = make_model(
    "thermo",
    model_property("temp", "FLOAT", "ReadOnly"),
    model_property("setpoint", "FLOAT", "ReadWrite", minimum="5", maximum="35"),
)
VISITORS = {
    "temp": {"kind": "constant", "value": 20.5},
    "setpoint": {"kind": "writable", "value": 21},
}


def thermo(name: str, **kwargs: object) -> Device:
    return make_device(name, MODEL, {}, VISITORS, **kwargs)  # type: ignore[arg-type]


async def test_reports_flow_and_spec_desired_is_applied_at_start() -> None:
    device = thermo("t1", desired={"setpoint": "25"})
    ref = ref_of(device)
    async with run_devices([(device, MODEL)]) as (runtime, bus):
        await bus.wait_for(lambda: bus.latest(ref, "setpoint") == "25.0")
        await bus.wait_for(lambda: bus.latest(ref, "temp") == "20.5")
        assert VirtualDriver.world.device(ref.id).writes == [("setpoint", 25.0)]
        assert bus.state_of(ref) is DeviceState.ONLINE
        assert runtime.devices[ref].schedule.missed == 0


async def test_writes_go_through_the_model_checks() -> None:
    device = thermo("t1")
    ref = ref_of(device)
    async with run_devices([(device, MODEL)]) as (_, bus):
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.ONLINE)
        refused = await bus.send_desired(ref, "temp", "30")
        assert (refused.status, refused.reason) == (WriteStatus.REFUSED, "read_only")
        out_of_range = await bus.send_desired(ref, "setpoint", "99")
        assert (out_of_range.status, out_of_range.reason) == (WriteStatus.REFUSED, "out_of_range")
        applied = await bus.send_desired(ref, "setpoint", "30")
        assert applied.status is WriteStatus.APPLIED
        assert VirtualDriver.world.device(ref.id).writes == [("setpoint", 30.0)]
        await bus.wait_for(lambda: bus.latest(ref, "setpoint") == "30.0")


async def test_a_dead_device_does_not_delay_the_others() -> None:
    dead, alive = thermo("dead"), thermo("alive")
    VirtualDriver.world.device(ref_of(dead).id).online = False
    async with run_devices([(dead, MODEL), (alive, MODEL)]) as (runtime, bus):
        alive_ref, dead_ref = ref_of(alive), ref_of(dead)
        before = len(bus.reports)
        # The live device keeps its 100 ms cycle while the other one fails to connect.
        await bus.wait_for(
            lambda: sum(r.ref == alive_ref for r in list(bus.reports)[before:]) >= 5, timeout=3
        )
        assert all(r.ref != dead_ref for r in bus.reports)
        assert runtime.devices[dead_ref].stats.connect_failures >= 1
        assert runtime.devices[alive_ref].schedule.missed == 0


async def test_device_recovers_and_pending_write_is_applied_on_return() -> None:
    device = thermo("flaky")
    ref = ref_of(device)
    sim = VirtualDriver.world.device(ref.id)
    async with run_devices([(device, MODEL)], write_wait=0.2) as (runtime, bus):
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.ONLINE)
        sim.online = False
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.OFFLINE)
        result = await bus.send_desired(ref, "setpoint", "12")
        assert result.status is WriteStatus.PENDING  # answered, not dropped
        sim.online = True
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.ONLINE)
        await bus.wait_for(lambda: bus.latest(ref, "setpoint") == "12.0")
        assert sim.writes[-1] == ("setpoint", 12.0)
        assert runtime.devices[ref].stats.connects >= 2


async def test_desired_value_for_an_offline_device_expires_with_an_answer() -> None:
    device = thermo("gone")
    ref = ref_of(device)
    VirtualDriver.world.device(ref.id).online = False
    async with run_devices([(device, MODEL)], write_wait=3.0) as (runtime, _):
        supervisor = runtime.devices[ref]
        decision = supervisor.engine.check_desired("setpoint", "10")
        future = supervisor.submit(decision)
        # FAST_SETTINGS.desired_ttl is 5 s; the supervisor expires it while backing off.
        supervisor._expire_pending(asyncio.get_running_loop().time() + 10)
        result = await asyncio.wait_for(future, 1)
        assert (result.status, result.reason) == (WriteStatus.EXPIRED, "expired")
        assert supervisor.stats.writes_expired == 1


async def test_failing_reads_mark_the_device_unhealthy_then_reconnect() -> None:
    device = make_device("sick", MODEL, {"failEvery": 1}, VISITORS)
    ref = ref_of(device)
    async with run_devices([(device, MODEL)]) as (runtime, bus):
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.UNHEALTHY)
        # FAST_SETTINGS drop the connection after 2 failed reads in a row.
        await bus.wait_for(lambda: runtime.devices[ref].stats.connects >= 2, timeout=5)
        assert runtime.devices[ref].stats.read_errors >= 2
        assert runtime.devices[ref].last_error is not None


async def test_apply_is_a_diff() -> None:
    one, two = thermo("one"), thermo("two")
    registry_driver = VirtualDriver
    async with run_devices([(one, MODEL), (two, MODEL)]) as (runtime, bus):
        r1, r2 = ref_of(one), ref_of(two)
        await bus.wait_for(lambda: bus.state_of(r1) is DeviceState.ONLINE)
        await bus.wait_for(lambda: bus.state_of(r2) is DeviceState.ONLINE)

        same = bind_or_raise(thermo("one"), MODEL, registry_driver)
        new_desired = bind_or_raise(
            thermo("two", desired={"setpoint": "15"}), MODEL, registry_driver
        )
        result = await runtime.apply([same, new_desired])
        assert result.unchanged == [r1]
        assert result.updated == [r2]
        await bus.wait_for(lambda: bus.latest(r2, "setpoint") == "15.0")
        assert runtime.devices[r2].stats.connects == 1  # written in place, not restarted

        changed = bind_or_raise(thermo("one", collect_cycle_ms=200), MODEL, registry_driver)
        result = await runtime.apply([changed])
        assert result.restarted == [r1]
        assert result.stopped == [r2]
        assert r2 not in runtime.devices
        assert bus.state_of(r2) is DeviceState.OFFLINE


async def test_device_with_unknown_protocol_is_reported_not_fatal() -> None:
    model = make_model("other", model_property("x"), protocol="nope")
    device = make_device("x1", model, {}, {"x": {}})
    bound = bind_or_raise(device, model, None)
    async with run_devices([(thermo("ok"), MODEL)]) as (runtime, _):
        result = await runtime.apply([bound, bind_or_raise(thermo("ok"), MODEL, VirtualDriver)])
        assert "nope" in result.failed[bound.ref]
        assert result.unchanged == [ref_of(thermo("ok"))]


async def test_shutdown_closes_every_device_and_reports_offline() -> None:
    devices = [thermo(f"d{i}") for i in range(5)]
    async with run_devices([(d, MODEL) for d in devices]) as (runtime, bus):
        refs = [ref_of(d) for d in devices]
        await bus.wait_for(lambda: all(bus.state_of(r) is DeviceState.ONLINE for r in refs))
    assert runtime.devices == {}
    assert all(bus.state_of(r) is DeviceState.OFFLINE for r in refs)
    assert bus.closed


def test_model_fixture_is_a_model() -> None:
    assert isinstance(MODEL, DeviceModel)


async def test_a_write_queued_while_offline_is_answered_applied_on_reconnect() -> None:
    device = thermo("late")
    ref = ref_of(device)
    sim = VirtualDriver.world.device(ref.id)
    sim.online = False
    async with run_devices([(device, MODEL)], write_wait=0.1) as (runtime, _):
        supervisor = runtime.devices[ref]
        future = supervisor.submit(supervisor.engine.check_desired("setpoint", "11"))
        sim.online = True
        result = await asyncio.wait_for(future, 5)
        assert result.status is WriteStatus.APPLIED  # not "superseded" by the reconnect
        assert sim.writes == [("setpoint", 11.0)]


class BatchingDriver(VirtualDriver):
    """Records write_many calls; refuses a batch holding the value 13 (to test the fallback)."""

    batches: list[list[tuple[str, object]]] = []

    async def write_many(self, writes):  # type: ignore[no-untyped-def]
        BatchingDriver.batches.append([(p.name, v) for p, v in writes])
        if any(v == 13.0 for _, v in writes):
            from mapper_sdk.errors import DeviceProtocolError

            raise DeviceProtocolError("the device refuses 13")
        await super().write_many(writes)


async def test_waiting_desired_values_are_written_in_one_batch() -> None:
    BatchingDriver.batches = []
    model = make_model(
        "pair",
        model_property("a", "FLOAT", "ReadWrite"),
        model_property("b", "FLOAT", "ReadWrite"),
    )
    device = make_device("p1", model, {}, {"a": {"kind": "writable"}, "b": {"kind": "writable"}})
    ref = ref_of(device)
    sim = VirtualDriver.world.device(ref.id)
    sim.online = False
    async with run_devices([(device, model)], drivers=[BatchingDriver]) as (runtime, _):
        supervisor = runtime.devices[ref]
        first = supervisor.submit(supervisor.engine.check_desired("a", "1"))
        second = supervisor.submit(supervisor.engine.check_desired("b", "2"))
        sim.online = True
        results = await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert [r.status for r in results] == [WriteStatus.APPLIED, WriteStatus.APPLIED]
        assert BatchingDriver.batches == [[("a", 1.0), ("b", 2.0)]]
        assert sorted(sim.writes) == [("a", 1.0), ("b", 2.0)]

        sim.online = False
        await asyncio.wait_for(_until_offline(runtime, ref), 5)
        bad = supervisor.submit(supervisor.engine.check_desired("a", "13"))
        good = supervisor.submit(supervisor.engine.check_desired("b", "3"))
        sim.online = True
        results = await asyncio.wait_for(asyncio.gather(bad, good), 5)
        # The refused batch is retried value by value: each value gets its own answer.
        assert [r.status for r in results] == [WriteStatus.APPLIED, WriteStatus.APPLIED]
        assert BatchingDriver.batches[-1] == [("a", 13.0), ("b", 3.0)]
        assert sim.writes[-2:] == [("a", 13.0), ("b", 3.0)]


async def _until_offline(runtime, ref) -> None:  # type: ignore[no-untyped-def]
    from mapper_sdk.driver import DeviceState as S

    bus = runtime.bus
    await bus.wait_for(lambda: runtime.devices[ref].state is S.OFFLINE, 5)


async def test_heap_is_frozen_after_start_up_and_thawed_to_stop_devices() -> None:
    from mapper_sdk._registry import Registry
    from mapper_sdk.runtime import MapperRuntime
    from mapper_sdk.testing import FAST_SETTINGS, MemoryBus

    assert gc.get_freeze_count() == 0
    registry = Registry.from_entry_points()
    one, two = thermo("one"), thermo("two")
    bound = [bind_or_raise(d, MODEL, VirtualDriver) for d in (one, two)]
    bus = MemoryBus()
    runtime = MapperRuntime(bus, registry=registry, settings=FAST_SETTINGS, freeze_after=None)
    async with runtime:
        await runtime.apply(bound)
        frozen = gc.get_freeze_count()
        assert frozen > 0  # start-up objects are out of the collector's way
        await bus.wait_for(lambda: bus.state_of(ref_of(two)) is DeviceState.ONLINE)
        await runtime.remove(ref_of(two))
        # Thawed to stop "two", collected, then frozen again for the device that runs on.
        assert gc.get_freeze_count() > 0
        assert runtime._frozen
        assert runtime._thawed
        await runtime.apply(bound[:1])
    assert gc.get_freeze_count() == 0  # nothing stays frozen after the runtime
    assert not runtime._frozen


async def test_a_heap_frozen_by_the_application_is_left_alone() -> None:
    from mapper_sdk.runtime import MapperRuntime
    from mapper_sdk.testing import FAST_SETTINGS, MemoryBus

    gc.freeze()
    try:
        before = gc.get_freeze_count()
        runtime = MapperRuntime(MemoryBus(), settings=FAST_SETTINGS, freeze_after=None)
        async with runtime:
            await runtime.apply([bind_or_raise(thermo("one"), MODEL, VirtualDriver)])
            assert not runtime._frozen
        assert gc.get_freeze_count() > before // 2  # not thawed by us (0 if it were)
    finally:
        gc.unfreeze()


class _StuckDriver(VirtualDriver):
    """The virtual driver, whose reads never answer while ``stuck`` is set."""

    stuck = True
    reading: asyncio.Event | None = None  # set when a read gets stuck

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        if _StuckDriver.stuck:
            if _StuckDriver.reading is not None:
                _StuckDriver.reading.set()
            await asyncio.Event().wait()
        return await super().read(points)


TIMEOUT_SETTINGS = dataclasses.replace(FAST_SETTINGS, read_timeout=0.1)


async def test_a_read_that_never_answers_times_out_and_the_device_reconnects() -> None:
    _StuckDriver.stuck = True
    device = thermo("stuck", collect_cycle_ms=50)
    ref = ref_of(device)
    async with run_devices(
        [(device, MODEL)], drivers=[_StuckDriver], settings=TIMEOUT_SETTINGS
    ) as (runtime, bus):
        supervisor = runtime.devices[ref]
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.UNHEALTHY)
        assert supervisor.last_error == "read timed out after 0.1 s"
        # FAST_SETTINGS drop the connection after 2 failed reads in a row.
        await bus.wait_for(lambda: supervisor.stats.connects >= 2)
        assert supervisor.stats.read_errors >= 2
        _StuckDriver.stuck = False
        await bus.wait_for(lambda: bus.state_of(ref) is DeviceState.ONLINE)
        await bus.wait_for(lambda: bus.latest(ref, "temp") == "20.5")


async def test_slow_reads_within_the_timeout_never_time_out() -> None:
    # 60 ms reads every 50 ms with a 100 ms timeout: the timer armed by one read fires while
    # a later one is in flight, and must wait for that read's own deadline.
    device = make_device("slow", MODEL, {"latencyMs": 60}, VISITORS, collect_cycle_ms=50)
    ref = ref_of(device)
    async with run_devices([(device, MODEL)], settings=TIMEOUT_SETTINGS) as (runtime, bus):
        supervisor = runtime.devices[ref]
        await bus.wait_for(lambda: supervisor.stats.reads >= 8)
        assert supervisor.stats.read_errors == 0
        assert supervisor.stats.connects == 1


async def test_a_device_removed_during_a_stuck_read_stops_cleanly() -> None:
    _StuckDriver.stuck, _StuckDriver.reading = True, asyncio.Event()
    device = thermo("stopping", collect_cycle_ms=50)
    ref = ref_of(device)
    settings = dataclasses.replace(FAST_SETTINGS, read_timeout=30.0)
    async with run_devices([(device, MODEL)], drivers=[_StuckDriver], settings=settings) as (
        runtime,
        bus,
    ):
        supervisor = runtime.devices[ref]
        await asyncio.wait_for(_StuckDriver.reading.wait(), 5)
        assert supervisor._reader is not None
        assert await runtime.remove(ref)
        assert bus.state_of(ref) is DeviceState.OFFLINE
        assert supervisor.stats.read_errors == 0  # cancelled, not turned into a timeout


class _SwallowingDriver(VirtualDriver):
    """Its first read outlives the timeout and swallows the cancellation (a badly behaved
    driver); later reads record whether their task still looks cancelled."""

    swallowed = False
    cancelling: list[int] = []  # reset by the test

    async def read(self, points: Sequence[BoundProperty]) -> list[Value | DriverError]:
        task = asyncio.current_task()
        assert task is not None
        if not _SwallowingDriver.swallowed:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                _SwallowingDriver.swallowed = True
        else:
            _SwallowingDriver.cancelling.append(task.cancelling())
        return await super().read(points)


async def test_a_timeout_the_driver_swallowed_leaves_the_poll_task_uncancelled() -> None:
    _SwallowingDriver.swallowed, _SwallowingDriver.cancelling = False, []
    device = thermo("swallow", collect_cycle_ms=50)
    ref = ref_of(device)
    async with run_devices(
        [(device, MODEL)], drivers=[_SwallowingDriver], settings=TIMEOUT_SETTINGS
    ) as (runtime, bus):
        supervisor = runtime.devices[ref]
        await bus.wait_for(lambda: supervisor.stats.reads >= 3)
        assert _SwallowingDriver.swallowed
        assert _SwallowingDriver.cancelling
        assert set(_SwallowingDriver.cancelling) == {0}
        assert supervisor.stats.read_errors == 0  # it answered: no error, as asyncio.timeout


def _device_tasks(name: str) -> list[str]:
    """Names of the running tasks that belong to device ``name`` (besides its supervisor's)."""
    return sorted(
        task.get_name().split(" ")[0]
        for task in asyncio.all_tasks()
        if task.get_name().endswith(f"/{name}") and not task.done()
    )


async def test_a_device_runs_in_one_task_and_a_writer_only_while_values_wait() -> None:
    """Polling runs in the supervisor's own task; the write task exists only while desired
    values are queued, and a new one starts for the next value."""
    device = thermo("t1")
    ref = ref_of(device)
    async with run_devices([(device, MODEL)]) as (runtime, bus):
        await bus.wait_for(lambda: bus.latest(ref, "temp") == "20.5")
        supervisor = runtime.devices[ref]
        assert _device_tasks("t1") == ["device"]  # the supervisor's, which also polls
        for value in ("22", "23"):
            result = await bus.send_desired(ref, "setpoint", value)
            assert result.status is WriteStatus.APPLIED
            await bus.wait_for(lambda: supervisor._writer is None)
            assert _device_tasks("t1") == ["device"]
        assert VirtualDriver.world.device(ref.id).writes == [("setpoint", 22.0), ("setpoint", 23.0)]
