"""``amqprpc shell``: Tab completion on ``rpc.`` from what discovery knows."""

from __future__ import annotations

import os
import time

from amqprpc import Config, ServiceContainer, ServiceRegistry, rpc
from amqprpc.cli.shell import RpcCompleter, catalog_of
from amqprpc.discovery import build_descriptor


class Client:
    """Stands for ClusterRpcClient: public attributes, and every other name a service."""

    def call(self) -> None: ...

    def stop(self) -> None: ...

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"completion must not call getattr({name!r}): it would be a proxy")


def complete_all(completer: RpcCompleter, text: str) -> list[str]:
    found: list[str] = []
    state = 0
    while (match := completer.complete(text, state)) is not None:
        found.append(match)
        state += 1
    return found


def completer(catalog: dict[str, list[str]]) -> RpcCompleter:
    return RpcCompleter({"rpc": Client(), "answer": 42}, lambda: catalog)


def test_services_and_the_clients_own_methods_complete_after_rpc_dot():
    done = completer({"users": ["get", "create"], "orders": ["place"]})
    assert complete_all(done, "rpc.") == ["rpc.call", "rpc.orders", "rpc.stop", "rpc.users"]
    assert complete_all(done, "rpc.us") == ["rpc.users"]


def test_methods_complete_after_a_service():
    done = completer({"users": ["get", "create", "get_many"], "orders": ["place"]})
    assert complete_all(done, "rpc.users.") == ["rpc.users.create(", "rpc.users.get(", "rpc.users.get_many("]
    assert complete_all(done, "rpc.users.get") == ["rpc.users.get(", "rpc.users.get_many("]
    assert complete_all(done, "rpc.nobody.") == []


def test_everything_else_completes_as_python_does():
    done = completer({})
    assert any(m.startswith("answer.bit_length(") for m in complete_all(done, "answer.bit"))
    assert complete_all(done, "ans") == ["answer"]


def test_the_catalog_comes_from_the_registry():
    class Users:
        name = "users"

        @rpc
        def get(self, user_id: int) -> None: ...

        @rpc
        def create(self, name: str) -> None: ...

    registry = ServiceRegistry(Config())
    now = time.time()
    registry.ingest(build_descriptor(ServiceContainer(Users, Config()), event="up", instance="i1",
                                     host="h", pid=os.getpid(), started_at=now, sent_at=now,
                                     interval=2.0, amqprpc_version="test"))
    assert catalog_of(registry) == {"users": ["create", "get"]}
    done = RpcCompleter({"rpc": Client()}, lambda: catalog_of(registry))
    assert complete_all(done, "rpc.users.c") == ["rpc.users.create("]
