"""Cancellation next to Nameko 2.14.1: its workers ignore cancels and still answer.

A Nameko service binds no queue to ``amqprpc.control``, so the cancels an amqprpc caller
sends for its calls are dropped by the broker; the calls run and are answered as ever (a
reply to a call given up is dropped by the caller). Nameko callers of amqprpc services send
no cancels: ``test_rpc_compat`` runs those with cancellation on (the default).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import CancelledError

import pytest

from amqprpc import ClusterRpcClient, Config

from .conftest import NamekoProcess, Names

pytestmark = [pytest.mark.compat, pytest.mark.integration]


@pytest.fixture
def client(amqp_uri: str) -> Iterator[ClusterRpcClient]:
    config = Config(broker_url=amqp_uri, cancellation=1)
    with ClusterRpcClient(config=config, direct_reply_to=False, timeout=10) as rpc:
        yield rpc


def test_a_nameko_service_ignores_cancels_and_still_answers(nameko_service: NamekoProcess,
                                                            names: Names,
                                                            client: ClusterRpcClient) -> None:
    proxy = getattr(client, names.nameko)
    assert proxy.add(1, 2) == 3
    given_up = []
    for i in range(20):
        future = proxy.add.call_async(i, i)
        given_up.append(i % 2 == 0 and future.cancel())  # False only if Nameko was quicker
        if not given_up[-1]:
            assert future.result() == 2 * i
        else:
            with pytest.raises(CancelledError):
                future.result()
    # Sent, and dropped by the broker: nothing is bound for a Nameko service.
    assert client._caller._cancels is not None
    assert client._caller._cancels.sent == sum(given_up) > 0
    assert proxy.echo("still here") == "still here"
    assert nameko_service.process.poll() is None
    assert "Traceback" not in nameko_service.output()
