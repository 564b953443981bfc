"""The testing kit's broker-free half: worker_factory, and reshaping unstarted containers."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from unittest.mock import MagicMock

import pytest

from amqprpc import CallContext, Config, RpcProxy, ServiceContainer, rpc
from amqprpc.exceptions import BrokerUnreachable
from amqprpc.testing import (
    ExtensionNotFound,
    entrypoint_hook,
    entrypoint_waiter,
    replace_dependencies,
    restrict_entrypoints,
    worker_factory,
)
from amqprpc.testing.broker import check_broker, queues_declared_by, with_vhost


class Orders:
    name = "orders"
    payments = RpcProxy("payments")
    ctx = CallContext()
    config = Config()

    @rpc
    def create(self, user_id: int, amount: float) -> dict[str, Any]:
        charge = self.payments.charge(user_id=user_id, amount=amount)
        return {"user_id": user_id, "charge": charge, "limit": self.config["ORDER_LIMIT"]}

    @rpc
    def cancel(self, order_id: int) -> None:
        self.payments.refund(order_id)

    def helper(self) -> str:
        return "plain"


def test_worker_factory_mocks_every_dependency():
    service = worker_factory(Orders)
    service.payments.charge.return_value = "ch_1"
    service.config.__getitem__.return_value = 100
    assert service.create(7, 9.5) == {"user_id": 7, "charge": "ch_1", "limit": 100}
    service.payments.charge.assert_called_once_with(user_id=7, amount=9.5)
    assert isinstance(service.ctx, MagicMock)
    assert service.helper() == "plain"


def test_worker_factory_takes_given_objects():
    payments = MagicMock()
    service = worker_factory(Orders, payments=payments, config={"ORDER_LIMIT": 3})
    service.cancel(5)
    payments.refund.assert_called_once_with(5)
    assert service.config == {"ORDER_LIMIT": 3}


def test_worker_factory_refuses_unknown_names():
    with pytest.raises(ExtensionNotFound, match=r"no dependency 'paymnets'.*'config', 'ctx', 'payments'"):
        worker_factory(Orders, paymnets=MagicMock())


def test_worker_factory_sees_inherited_dependencies():
    class Base:
        payments = RpcProxy("payments")

    class Child(Base):
        name = "child"

        @rpc
        def go(self) -> Any:
            return self.payments.ping()

    assert worker_factory(Child).go() is not None


def _container() -> ServiceContainer:
    return ServiceContainer(Orders, Config(broker_url="amqp://guest:guest@127.0.0.1:1/"))


def test_replace_dependencies_returns_mocks_in_order_and_uses_objects():
    container = _container()
    marker = object()
    payments, ctx = replace_dependencies(container, "payments", "ctx", config=marker)
    assert isinstance(payments, MagicMock) and isinstance(ctx, MagicMock) and payments is not ctx
    provided = {name: dep.get_dependency(None) for name, dep in container.dependencies.items()}  # type: ignore[arg-type]
    assert provided == {"payments": payments, "ctx": ctx, "config": marker}
    assert all(dep.container is container for dep in container.dependencies.values())
    assert isinstance(replace_dependencies(_container(), "payments"), MagicMock)  # one name: the mock


def test_replace_dependencies_refuses_unknown_and_duplicate_names():
    with pytest.raises(ExtensionNotFound, match="no dependency 'nope'"):
        replace_dependencies(_container(), "nope")
    with pytest.raises(ValueError, match="named twice"):
        replace_dependencies(_container(), "payments", payments=1)


def test_restrict_entrypoints_keeps_only_the_named_ones():
    container = _container()
    restrict_entrypoints(container, "cancel")
    assert [ep.method_name for ep in container.entrypoints] == ["cancel"]
    with pytest.raises(ExtensionNotFound, match="no entrypoint 'helper'"):
        restrict_entrypoints(_container(), "helper")
    with pytest.raises(ExtensionNotFound, match="no entrypoint 'create'; it has 'cancel'"):
        entrypoint_waiter(container, "create").__enter__()


def test_helpers_that_reshape_refuse_a_started_container():
    container = _container()
    container._started = True  # as after start(); no broker needed to check the guard
    with pytest.raises(RuntimeError, match=r"before container.start\(\)"):
        replace_dependencies(container, "payments")
    with pytest.raises(RuntimeError, match=r"before container.start\(\)"):
        restrict_entrypoints(container, "create")


def test_entrypoint_hook_needs_a_started_container():
    with pytest.raises(RuntimeError, match="start container 'orders' first"), \
            entrypoint_hook(_container(), "create"):
        pass


def test_queues_declared_by_lists_rpc_and_entrypoint_queues():
    container = _container()
    container.entrypoints[0].queue_name = "evt-x-y--orders.cancel"  # as an entrypoint may have
    container.entrypoints[1].declared_queues = ["evt-x-y--orders.create", "evt-x-y--orders.create.dlq"]
    assert queues_declared_by(container) == {
        "rpc-orders", "evt-x-y--orders.cancel", "evt-x-y--orders.create", "evt-x-y--orders.create.dlq"}


def test_with_vhost():
    assert with_vhost("amqp://u:p@h:5672/", "t-1") == "amqp://u:p@h:5672/t-1"
    assert with_vhost("amqp://u:p@h:5672/old", "a/b") == "amqp://u:p@h:5672/a%2Fb"


def test_unreachable_broker_gets_an_actionable_message():
    with pytest.raises(BrokerUnreachable, match=r"no RabbitMQ at amqp://guest@127.0.0.1:1/.*--amqp-uri"):
        check_broker("amqp://guest:guest@127.0.0.1:1/")


def test_fixtures_fail_clearly_without_a_broker(tmp_path):
    (tmp_path / "test_needs_broker.py").write_text(
        "def test_a(rpc_client):\n    pass\n\ndef test_b(container_factory):\n    pass\n"
    )
    run = subprocess.run(  # -rN: no short summary, which CI=true would add, repeating each message
        [sys.executable, "-m", "pytest", "-p", "amqprpc.testing.pytest", "-p", "no:cacheprovider",
         "--amqp-uri", "amqp://guest:guest@127.0.0.1:1/", "-q", "-rN", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert run.returncode == 1, run.stdout
    assert run.stdout.count("no RabbitMQ at amqp://guest@127.0.0.1:1/") == 2, run.stdout
    assert "2 errors" in run.stdout
    assert "Traceback" not in run.stdout


def test_the_helpers_import_no_pytest():
    code = ("import sys\nimport amqprpc.testing, amqprpc.testing.services, amqprpc.testing.broker\n"
            "assert 'pytest' not in sys.modules and '_pytest' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
