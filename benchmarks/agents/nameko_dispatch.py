"""Nameko event load: the standalone ``event_dispatcher`` (each dispatch waits for its confirm).

The same loop and backlog bound as benchmarks/agents/amqprpc_dispatch.py.
"""

import eventlet

eventlet.monkey_patch()

import _common  # noqa: E402
from _dispatch import Backlog, run_dispatcher  # noqa: E402
from nameko.standalone.events import event_dispatcher  # noqa: E402


def main():
    p = _common.params()
    payload = "x" * p["payload"]
    backlog = Backlog(p["url"], p["queue"], p["max_backlog"])
    dispatch = event_dispatcher({"AMQP_URI": p["url"]})
    run_dispatcher(lambda: dispatch(p["source"], "tick", payload), lambda done: done, backlog, p)
    backlog.close()


if __name__ == "__main__":
    main()
