"""Modbus driver for mapper-sdk.

The modules here are split so that loading a Device YAML never imports pymodbus:

- ``config``: pydantic models for ``protocol.configData`` and ``visitors.configData``;
- ``codec``: registers and bits to Python values and back, including one compiled decoder per
  read block and raw-bytes change detection;
- ``planner``: coalesces the properties due in a tick into few read requests and merges writes,
  learning from exception 02/03 what the device accepts.

These three are pure (no I/O). The driver, loaded when a Modbus device actually runs, adds:

- ``connection``: links shared by every device on one endpoint or serial port, each with a bus
  scheduler (write priority, bounded in-flight requests, deadlines, backoff of silent units)
  driving one ``channel.Channel`` per in-flight slot:
- ``tcp``: the lean Modbus/TCP client (MBAP frames built and parsed with ``struct``), the
  channel of every TCP link;
- ``stock``: a pymodbus client as a channel (serial gaps, own timeouts), for RTU, ASCII,
  RTU over TCP, UDP and TLS; ``transport`` holds pymodbus (the only module that imports it)
  behind a one-request interface;
- ``reader``: a device's read cycle (cached plans, block decoding, the 02/03 fallback);
- ``driver``: ``ModbusDriver``, the ``mapper_sdk`` driver registered as ``modbus``.
"""
