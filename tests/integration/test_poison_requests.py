"""W7/M7: a request that kills every worker that takes it stops after a bound.

Under the supervisor a dying worker is restarted, so without a bound such a request would
be redelivered and kill workers for ever (Nameko callers send no deadline to end it). After
``rpc_max_attempts`` lost runs (3 by default) the caller gets ``WorkerLost`` and the other
calls keep flowing, on classic queues (the request carries its count) and quorum queues
(the broker's ``x-delivery-count``).
"""

from __future__ import annotations

import pytest

from amqprpc import ClusterRpcClient, RemoteError

from .worker_processes import call_when_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_W7_M7_a_request_that_kills_every_worker_ends_in_worker_lost(workers, amqp_uri, tmp_path,
                                                                       monkeypatch, queue_type):
    monkeypatch.setenv("AMQPRPC_QUEUE_TYPE", queue_type)
    supervised = workers("--workers", "2")  # children under the supervisor, which restarts them
    with ClusterRpcClient(amqp_uri, timeout=60) as client:
        call_when_ready(client, workers.service, "echo", "up")
        with pytest.raises(RemoteError) as caught:
            client.call(workers.service, "crash", str(tmp_path))
        assert caught.value.exc_type == "WorkerLost"
        runs = sorted(tmp_path.glob("*.crash"))
        assert len(runs) == 3, [path.name for path in runs]  # rpc_max_attempts, each in a new process
        assert call_when_ready(client, workers.service, "echo", "after") == "after"
    # The supervisor lived through the crash loop (its exit status after a SIGTERM is 1
    # while a crashed slot still waits out its restart backoff: docs/production.md).
    assert supervised.process.poll() is None
