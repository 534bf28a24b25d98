"""DMI v1beta1 messages <-> mapper-sdk's CRD models and reports. Pure: no I/O, no logging.

This module is the one place to import conversions from; each direction lives in its own module:

- ``device_from_dmi`` / ``model_from_dmi`` (``_from_dmi``): what EdgeCore sends the mapper;
- ``device_to_dmi`` / ``model_to_dmi`` (``_to_dmi``): the same messages built the way EdgeCore
  builds them (tests, the emulator, and ``GetDevice`` answers);
- ``decode_config`` / ``encode_config`` (``_config_data``): configData as protobuf ``Any``
  values, floats for every number (contract §1.5; the precision quirk is explained there);
- ``twin_report_to_dmi`` / ``state_to_dmi`` (here): what the mapper reports.
"""

from __future__ import annotations

from collections.abc import Iterable

from mapper_sdk.binding import DeviceRef
from mapper_sdk.bus import TwinReport, TwinValue
from mapper_sdk.dmi._config_data import DmiConversionError, Scalar, decode_config, encode_config
from mapper_sdk.dmi._from_dmi import device_from_dmi, model_from_dmi
from mapper_sdk.dmi._generated import api_pb2 as pb
from mapper_sdk.dmi._to_dmi import device_to_dmi, model_to_dmi
from mapper_sdk.driver import DeviceState


def twin_to_dmi(twin: TwinValue, timestamp_ms: int, target: pb.Twin) -> None:
    """Fill one ``Twin`` with BOTH values set.

    A twin without ``observedDesired`` (or ``reported``) crashes EdgeCore with a nil pointer
    (§3.5a.10). ``observedDesired.value`` overwrites the edge twin's expected value (§3.5a.11),
    so it carries the current desired value, and ``""`` only when there is none.
    """
    metadata = {"timestamp": str(timestamp_ms), "type": twin.type}
    target.propertyName = twin.name
    target.reported.value = twin.value
    target.reported.metadata.update(metadata)
    target.observedDesired.value = twin.desired if twin.desired is not None else ""
    target.observedDesired.metadata.update(metadata)


def twins_to_dmi(
    twins: Iterable[tuple[TwinValue, int]], target: pb.DeviceStatus
) -> pb.DeviceStatus:
    """Append ``(twin, timestamp_ms)`` pairs to ``target.twins``; returns ``target``."""
    for twin, timestamp_ms in twins:
        twin_to_dmi(twin, timestamp_ms, target.twins.add())
    return target


def twin_report_to_dmi(report: TwinReport) -> pb.ReportDeviceStatusRequest:
    """One device's report as ONE ``ReportDeviceStatus`` request carrying all its twins."""
    msg = pb.ReportDeviceStatusRequest(
        deviceName=report.ref.name, deviceNamespace=report.ref.namespace
    )
    twins_to_dmi(((t, report.timestamp_ms) for t in report.twins), msg.reportedDevice)
    return msg


def state_to_dmi(ref: DeviceRef, state: DeviceState | str) -> pb.ReportDeviceStatesRequest:
    """A device state as a ``ReportDeviceStates`` request (KubeEdge >= 1.18)."""
    return pb.ReportDeviceStatesRequest(
        deviceName=ref.name, deviceNamespace=ref.namespace, state=str(state)
    )


def ref_of(msg: pb.Device) -> DeviceRef:
    """The ``DeviceRef`` a DMI device is known by (namespace ``default`` when empty: 1.15)."""
    return DeviceRef(msg.namespace or "default", msg.name)


__all__ = [
    "DmiConversionError",
    "Scalar",
    "decode_config",
    "device_from_dmi",
    "device_to_dmi",
    "encode_config",
    "model_from_dmi",
    "model_to_dmi",
    "ref_of",
    "state_to_dmi",
    "twin_report_to_dmi",
    "twin_to_dmi",
    "twins_to_dmi",
]
