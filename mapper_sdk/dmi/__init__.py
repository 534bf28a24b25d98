"""The DMI v1beta1 gRPC link to EdgeCore (KubeEdge >= 1.15), contract §4.

- ``mapper_sdk.dmi.link``: ``DmiLink``, the ``EventBus`` that registers with EdgeCore, serves
  ``DeviceMapperService`` and sends paced reports; its parts are ``_servicer`` (the calls
  EdgeCore makes), ``_wanted`` and ``_reconcile`` (what EdgeCore wants, applied as a diff),
  ``_autonomy`` (that set kept on disk), ``_registration`` (``MapperRegister``),
  ``_reporter`` and ``_pacing`` (paced reports), ``_grpc`` (plumbing);
- ``mapper_sdk.dmi.settings``: ``DmiSettings``, ``DmiStats`` and the constants, without grpc;
- ``mapper_sdk.dmi.convert``: DMI messages <-> the CRD models, pure (``_config_data``,
  ``_from_dmi``, ``_to_dmi``);
- ``mapper_sdk/dmi/api.proto`` and ``_generated/``: the wire definition and its Python code
  (``scripts/gen-dmi``).

Needs the ``dmi`` extra (grpcio, protobuf). Names are loaded on first use, so importing this
package does not import grpc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mapper_sdk.dmi.convert import DmiConversionError
    from mapper_sdk.dmi.link import DmiLink, DmiSettings, DmiStats

_LAZY = {
    "DmiLink": "mapper_sdk.dmi.link",
    "DmiSettings": "mapper_sdk.dmi.link",
    "DmiStats": "mapper_sdk.dmi.link",
    "DmiConversionError": "mapper_sdk.dmi.convert",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["DmiConversionError", "DmiLink", "DmiSettings", "DmiStats"]
