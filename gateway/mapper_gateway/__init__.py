"""mapper-gateway: every installed mapper-sdk driver in one process, with a REST API.

``Gateway`` composes the runtime, the links to EdgeCore and the devices directory;
``create_app`` serves it over HTTP; ``mapper-gateway run`` (``__main__``) does both.
"""

from mapper_gateway._version import __version__
from mapper_gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "__version__"]
