"""Modbus driver for mapper-sdk.

The modules here are split so that loading a Device YAML never imports pymodbus:

- ``config``: pydantic models for ``protocol.configData`` and ``visitors.configData``;
- ``codec``: registers and bits to Python values and back, including one compiled decoder per
  read block and raw-bytes change detection;
- ``planner``: coalesces the properties due in a tick into few read requests and merges writes,
  learning from exception 02/03 what the device accepts.

All three are pure (no I/O). pymodbus is imported only by the driver module, when a Modbus device
actually runs.
"""
