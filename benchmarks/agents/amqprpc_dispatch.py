"""amqprpc event load: ``EventPublisher.dispatch`` with asynchronous confirms (futures)."""

from __future__ import annotations

import _common
from _dispatch import Backlog, run_dispatcher

from amqprpc import EventPublisher


def main() -> None:
    p = _common.params()
    payload = "x" * p["payload"]
    backlog = Backlog(p["url"], p["queue"], p["max_backlog"])
    try:
        with EventPublisher(p["url"]) as publisher:
            run_dispatcher(lambda: publisher.dispatch(p["source"], "tick", payload),
                           lambda future: future.result(), backlog, p)
    finally:
        backlog.close()


if __name__ == "__main__":
    main()
