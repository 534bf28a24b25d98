"""Names, tuning and counters of the DMI link: ``DmiSettings``, ``DmiStats``, the constants.

No grpc here: the gateway's configuration reads these without loading the gRPC runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mapper_sdk._version import __version__

if TYPE_CHECKING:
    from mapper_sdk.runtime import ApplyResult

API_VERSION = "v1beta1"
MANAGER_SERVICE = "v1beta1.DeviceManagerService"
MAPPER_SERVICE = "v1beta1.DeviceMapperService"
DEFAULT_EDGECORE_SOCKET = "/etc/kubeedge/dmi.sock"
RATE_LIMITED = "too many request"
"""What EdgeCore's error says when its shared token bucket is empty (§4.1)."""


def default_mapper_socket(protocol: str) -> str:
    """The conventional socket of a mapper: ``/etc/kubeedge/<protocol>.sock`` (§4.1)."""
    return f"/etc/kubeedge/{protocol}.sock"


@dataclass(frozen=True, slots=True)
class DmiSettings:
    """Tuning of a ``DmiLink`` (seconds unless named otherwise)."""

    mapper_name: str = ""
    """``MapperInfo.name``; defaults to ``<protocol>-mapper``."""
    mapper_version: str = __version__
    report_rate: float = 0.8
    """Reports per second, sustained. EdgeCore allows 1/s for ALL mappers together (§4.1)."""
    report_burst: int = 50
    """Reports sent at once after a quiet period; half of EdgeCore's 100, for the others."""
    max_queued: int = 10_000
    """Devices that may have a report waiting (twins and states each); beyond, reports drop."""
    call_timeout: float = 5.0
    """Deadline of each report call."""
    register_timeout: float = 5.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    """Backoff (full jitter) of registration retries and of reports after an error."""
    close_timeout: float = 2.0
    """How long ``aclose`` spends stopping the server and flushing waiting reports."""


@dataclass(slots=True)
class DmiStats:
    """Counters of a ``DmiLink``, read by metrics and tests."""

    register_attempts: int = 0
    registrations: int = 0
    calls_received: int = 0
    twin_reports_sent: int = 0
    state_reports_sent: int = 0
    rate_limited: int = 0
    """Report calls EdgeCore refused with "too many request"; they are retried."""
    send_errors: int = 0
    """Other failed report calls; retried unless EdgeCore called them invalid."""
    dropped_unsendable: int = 0
    """Reports EdgeCore refused as invalid or unimplemented; never retried."""
    applies: int = 0
    last_apply: ApplyResult | None = field(default=None, repr=False)
    restored_devices: int = 0
    """Devices run from the state directory at start, before EdgeCore answered."""
    saves: int = 0
    save_errors: int = 0


__all__ = [
    "API_VERSION",
    "DEFAULT_EDGECORE_SOCKET",
    "MANAGER_SERVICE",
    "MAPPER_SERVICE",
    "RATE_LIMITED",
    "DmiSettings",
    "DmiStats",
    "default_mapper_socket",
]
