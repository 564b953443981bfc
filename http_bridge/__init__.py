"""http_bridge: the HTTP gateway to amqprpc services (aiohttp).

It holds no service code: routes, parameter schemas and roles come from the descriptors
the running services announce on the bus (``amqprpc.discovery``). See docs/bridge.md.
"""

from .app import create_app
from .settings import BridgeSettings

__all__ = ["BridgeSettings", "create_app"]
