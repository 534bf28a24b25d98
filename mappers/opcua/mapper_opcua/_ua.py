"""asyncua names imported from their defining modules.

asyncua's packages re-export these implicitly, which ``mypy --strict`` does not accept; naming
them once here keeps the other modules type-checked without per-line ignores.
"""

from asyncua.client.client import Client as Client
from asyncua.client.ua_client import UaClientState as UaClientState
from asyncua.common.node import Node as Node
from asyncua.observer import Observer as Observer
from asyncua.observer import SubscriptionEvent as SubscriptionEvent
from asyncua.ua.attribute_ids import AttributeIds as AttributeIds
from asyncua.ua.object_ids import ObjectIds as ObjectIds
from asyncua.ua.status_codes import StatusCodes as StatusCodes
from asyncua.ua.uaerrors._base import UaError as UaError
from asyncua.ua.uaerrors._base import UaStatusCodeError as UaStatusCodeError

__all__ = [
    "AttributeIds",
    "Client",
    "Node",
    "ObjectIds",
    "Observer",
    "StatusCodes",
    "SubscriptionEvent",
    "UaClientState",
    "UaError",
    "UaStatusCodeError",
]
