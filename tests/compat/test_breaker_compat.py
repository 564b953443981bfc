"""A Nameko 2.14.1 service called through a circuit breaker and the retry path still behaves."""

from __future__ import annotations

import pytest

from amqprpc import ClusterRpcClient, Config, IncorrectSignature, MethodNotFound, RemoteError
from amqprpc.resilience.breaker import State

pytestmark = pytest.mark.integration


def test_a_nameko_service_through_a_breaker_and_retries(nameko_service, names, amqp_uri):
    config = Config(broker_url=amqp_uri, breaker=1, breaker_min_calls=2, retries=1,
                    retry_idempotent=f"{names.nameko}.add", retry_budget_min=1)
    with ClusterRpcClient(config=config, direct_reply_to=False, timeout=10) as client:
        proxy = getattr(client, names.nameko)
        assert proxy.add(2, 3) == 5  # idempotent by the caller's word: the guarded path
        assert proxy.echo({"a": [1, None]}) == {"a": [1, None]}
        futures = [proxy.add.call_async(i, i) for i in range(20)]
        assert [f.result() for f in futures] == [2 * i for i in range(20)]
        for _ in range(3):  # application and request errors say nothing about its health
            with pytest.raises(RemoteError):
                proxy.fail("boom")
            with pytest.raises(MethodNotFound):
                proxy.no_such_method()
            with pytest.raises(IncorrectSignature):
                proxy.add(1)
        assert client.resilience is not None and client.resilience.breakers is not None
        assert client.resilience.breakers.get(names.nameko, "add").state is State.CLOSED
        assert proxy.add(1, 1) == 2
