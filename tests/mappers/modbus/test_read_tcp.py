"""Reads over Modbus TCP from a real pymodbus server: every type and order, end to end."""

from __future__ import annotations

from mapper_modbus.driver import ModbusDriver
from mapper_sdk.driver import DeviceState
from mapper_sdk.testing import make_device, make_model, model_property, ref_of, run_devices

from .kit import device_of, every_type, image_of, tcp_config
from .sim import Simulator


async def test_every_type_and_order_reaches_the_bus_exactly() -> None:
    cases = every_type()
    async with Simulator({1: image_of(cases)}) as sim:
        device, model = device_of(cases, tcp_config(sim.port))
        ref = ref_of(device)
        async with run_devices([(device, model)], drivers=[ModbusDriver]) as (_, bus):
            await bus.wait_for(lambda: all(bus.latest(ref, c.name) is not None for c in cases))
            got = {c.name: bus.latest(ref, c.name) for c in cases}
            assert bus.state_of(ref) is DeviceState.ONLINE
    assert got == {c.name: c.twin for c in cases}


async def test_kubeedge_temperature_sample_decodes_as_intended() -> None:
    """The visitors of KubeEdge's temperature-sensor example, verbatim (v1beta1 sample)."""
    model = make_model(
        "temperature-model",
        model_property("temperature", "FLOAT", "ReadWrite", minimum="0", maximum="100.0"),
        model_property("temperature-switch", "INT", "ReadWrite"),
        protocol="modbus",
    )
    common = {"isSwap": False, "isRegisterSwap": False, "offset": 0, "limit": 1}
    visitors = {
        "temperature": {"dataType": "float", "register": "HoldingRegister", "scale": 0.1,
                        "max": 100.0, "min": 1.0, **common},
        "temperature-switch": {"dataType": "int", "register": "CoilRegister", "scale": 1,
                               **common},
    }  # fmt: skip
    sim = Simulator({1: image_of([])})
    sim.images[1].put_words("holding", 0, [235])  # 23.5 degrees
    sim.images[1].put_bits("coils", 0, [True])
    async with sim:
        config = {"communicateMode": "TCP", "port": str(sim.port), "slaveID": 1, "ip": "127.0.0.1"}
        device = make_device("temperature-instance", model, config, visitors)
        ref = ref_of(device)
        async with run_devices([(device, model)], drivers=[ModbusDriver]) as (_, bus):
            await bus.wait_for(lambda: bus.latest(ref, "temperature-switch") is not None)
            await bus.wait_for(lambda: bus.latest(ref, "temperature") is not None)
            assert bus.latest(ref, "temperature") == "23.5"
            assert bus.latest(ref, "temperature-switch") == "1"
