"""OPC-UA driver for mapper-sdk (protocol name ``opcua``), built on asyncua."""
