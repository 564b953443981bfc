"""Nameko 2.14's standalone clients, driven by a JSON script (run in the Nameko venv).

``python nameko_client.py '<json>'`` with ``{"amqp_uri", "context_data", "calls":
[{"service", "method", "args", "kwargs"}], "events": [{"source", "type", "payload"}]}``
makes each call with one ``ClusterRpcProxy`` and dispatches each event with the standalone
``event_dispatcher``, then prints one JSON line: ``{"calls": [outcome, ...]}`` where an
outcome is ``{"result": ...}`` or ``{"error": {"class", "module", "exc_type", "value"}}``.
"""

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import sys  # noqa: E402

from nameko.standalone.events import event_dispatcher  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402


def describe(exc):
    return {
        "class": type(exc).__name__,
        "module": type(exc).__module__,
        "exc_type": getattr(exc, "exc_type", None),
        "value": getattr(exc, "value", None),
        "str": str(exc),
    }


def main():
    spec = json.loads(sys.argv[1])
    config = {"AMQP_URI": spec["amqp_uri"]}
    outcomes = []
    if spec.get("calls"):
        with ClusterRpcProxy(config, context_data=spec.get("context_data"), timeout=10) as proxy:
            for call in spec["calls"]:
                method = getattr(getattr(proxy, call["service"]), call["method"])
                try:
                    outcomes.append({"result": method(*call.get("args", []), **call.get("kwargs", {}))})
                except Exception as exc:
                    outcomes.append({"error": describe(exc)})
    if spec.get("events"):
        dispatch = event_dispatcher(config)
        for event in spec["events"]:
            dispatch(event["source"], event["type"], event["payload"])
    print(json.dumps({"calls": outcomes}), flush=True)


if __name__ == "__main__":
    main()
