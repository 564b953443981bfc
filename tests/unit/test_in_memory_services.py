"""A whole service on ``memory://``: runner, client and events with no broker (docs/testing.md)."""

import threading

import pytest

from amqprpc import ClusterRpcClient, Config, EventDispatcher, RemoteError, UnknownService, event_handler, rpc
from amqprpc.runner import ServiceRunner


class Greeter:
    name = "greeter"
    dispatch = EventDispatcher()

    @rpc
    def hello(self, who: str) -> str:
        if not who:
            raise ValueError("who is empty")
        self.dispatch("greeted", {"who": who})
        return f"hello {who}"


def _listener(seen: list[str], done: threading.Event) -> type:
    class Listener:
        name = "listener"

        @event_handler("greeter", "greeted")
        def on_greeted(self, payload: dict[str, str]) -> None:
            seen.append(payload["who"])
            done.set()

    return Listener


@pytest.mark.parametrize("direct_reply_to", [True, False])
def test_a_call_and_its_event_go_round_in_memory(request: pytest.FixtureRequest,
                                                 direct_reply_to: bool) -> None:
    config = Config(broker_url=f"memory://{request.node.name}")
    seen: list[str] = []
    done = threading.Event()
    runner = ServiceRunner(config)
    runner.add_service(Greeter)
    runner.add_service(_listener(seen, done))
    runner.start()
    try:
        with ClusterRpcClient(config=config, direct_reply_to=direct_reply_to, timeout=5) as client:
            assert client.greeter.hello("ann") == "hello ann"
            with pytest.raises(RemoteError, match="who is empty"):
                client.greeter.hello("")
        assert done.wait(5)
        assert seen == ["ann"]
    finally:
        runner.stop()


def test_memory_brokers_of_other_names_are_apart(request: pytest.FixtureRequest) -> None:
    runner = ServiceRunner(Config(broker_url=f"memory://{request.node.name}-a"))
    runner.add_service(Greeter)
    runner.start()
    try:
        other = Config(broker_url=f"memory://{request.node.name}-b", rpc_timeout=1)
        with ClusterRpcClient(config=other) as client, pytest.raises(UnknownService) as caught:
            client.greeter.hello("ann")
        assert "greeter" in str(caught.value)  # no queue on that broker: returned at once
    finally:
        runner.stop()
