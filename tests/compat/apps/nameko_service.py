"""A Nameko 2.14 service, run by the compat suite in the Nameko venv (not importable here).

Names come from the environment so that every run uses its own queues:
``NAMEKO_SERVICE`` (this service), ``AMQPRPC_SERVICE`` (the amqprpc service it calls and
whose events it handles). It prints ``READY`` once its consumers are up and stops on
SIGTERM. Event handlers record what they receive; ``received()`` returns the records.
"""

import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.events import BROADCAST, SERVICE_POOL, SINGLETON, EventDispatcher, event_handler  # noqa: E402
from nameko.extensions import DependencyProvider  # noqa: E402
from nameko.rpc import RpcProxy, rpc  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

NAME = os.environ["NAMEKO_SERVICE"]
PEER = os.environ["AMQPRPC_SERVICE"]
RECEIVED = []


class InsufficientFunds(Exception):
    pass


class Context(DependencyProvider):
    """Inject the worker context, to report what context the call arrived with."""

    def get_dependency(self, worker_ctx):
        return worker_ctx


def _context_of(worker_ctx):
    data = dict(worker_ctx.context_data)
    return {"data": data, "call_id_stack": worker_ctx.call_id_stack}


class NamekoService:
    name = NAME
    ctx = Context()
    peer = RpcProxy(PEER)
    dispatch = EventDispatcher()

    @rpc
    def implementation(self):
        return "nameko"

    @rpc
    def add(self, a, b):
        return a + b

    @rpc
    def echo(self, value):
        return value

    @rpc
    def fail(self, message):
        raise ValueError(message)

    @rpc
    def charge(self, amount):
        raise InsufficientFunds(f"balance too low for {amount}")

    @rpc
    def whoami(self):
        return _context_of(self.ctx)

    @rpc
    def relay(self, method, *args, **kwargs):
        """Call the amqprpc service through Nameko's own RpcProxy."""
        return getattr(self.peer, method)(*args, **kwargs)

    @rpc
    def emit(self, event_type, payload):
        """Dispatch an event from inside a worker: it carries this call's context."""
        self.dispatch(event_type, payload)
        return _context_of(self.ctx)["call_id_stack"]

    @rpc
    def received(self):
        return list(RECEIVED)

    def _record(self, handler, payload):
        RECEIVED.append({"handler": handler, "payload": payload, "context": _context_of(self.ctx)})

    @event_handler(PEER, "compat_event", handler_type=SERVICE_POOL)
    def on_pool(self, payload):
        self._record("service_pool", payload)

    @event_handler(PEER, "compat_event", handler_type=SINGLETON)
    def on_singleton(self, payload):
        self._record("singleton", payload)

    @event_handler(PEER, "compat_event", handler_type=BROADCAST, reliable_delivery=False)
    def on_broadcast(self, payload):
        self._record("broadcast", payload)


def main():
    runner = ServiceRunner({"AMQP_URI": os.environ["AMQP_URI"], "max_workers": 10})
    runner.add_service(NamekoService)
    signal.signal(signal.SIGTERM, lambda *_: eventlet.spawn_n(runner.stop))
    runner.start()
    print("READY", flush=True)
    runner.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
