"""Modbus driver for mapper-sdk.

The modules here are split so that loading a Device YAML never imports pymodbus:

- ``config``: pydantic models for ``protocol.configData`` and ``visitors.configData``;
- ``codec``: registers and bits to Python values and back, including one compiled decoder per
  read block and raw-bytes change detection;
- ``planner``: coalesces the properties due in a tick into few read requests and merges writes,
  learning from exception 02/03 what the device accepts.

These three are pure (no I/O). The driver, loaded when a Modbus device actually runs, adds:

- ``transport``: pymodbus (the only module that imports it) behind a one-request interface;
- ``connection``: links shared by every device on one endpoint or serial port, each with a bus
  scheduler (write priority, bounded in-flight requests, backoff of silent units, serial gaps);
- ``reader``: a device's read cycle (cached plans, block decoding, the 02/03 fallback);
- ``driver``: ``ModbusDriver``, the ``mapper_sdk`` driver registered as ``modbus``.
"""
