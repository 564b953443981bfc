"""A Nameko 2.14 service with a reliable BROADCAST handler whose identifier is overridden,
as Nameko documents it (run by the compat suite in the Nameko venv; not importable here).

``NAMEKO_SERVICE`` names the service, ``EVENT_SOURCE`` the service whose ``invalidate``
events it handles, ``BROADCAST_ID`` this instance's broadcast identifier. It prints
``READY`` once its consumers are up; ``received()`` returns the payloads handled so far.
"""

import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import sys  # noqa: E402

from nameko.events import BROADCAST, EventHandler  # noqa: E402
from nameko.rpc import rpc  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

RECEIVED = []


class IdentifiedEventHandler(EventHandler):
    """Nameko's recipe for broadcast queues that survive restarts of an instance."""

    @property
    def broadcast_identifier(self):
        return os.environ["BROADCAST_ID"]


identified_handler = IdentifiedEventHandler.decorator


class NamekoBroadcast:
    name = os.environ["NAMEKO_SERVICE"]

    @rpc
    def received(self):
        return list(RECEIVED)

    @identified_handler(os.environ["EVENT_SOURCE"], "invalidate", handler_type=BROADCAST)
    def drop(self, payload):
        RECEIVED.append(payload)


def main():
    runner = ServiceRunner({"AMQP_URI": os.environ["AMQP_URI"], "max_workers": 10})
    runner.add_service(NamekoBroadcast)
    runner.start()
    print("READY", flush=True)
    runner.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
