"""Prometheus metrics of one worker process (``amqprpc run --metrics-port``); docs/observability.md.

Nothing here is imported unless metrics are on: ``prometheus_client`` is the ``metrics`` extra.
``registry`` holds the metrics, ``extension`` feeds them from each container's worker hooks,
``server`` serves ``/metrics`` and is what the runner owns.
"""
