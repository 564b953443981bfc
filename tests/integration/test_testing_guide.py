"""The integration-test example of docs/testing.md, verbatim: services.orders on the broker."""

import pytest

from amqprpc import dispatch_event
from amqprpc.testing import entrypoint_hook, entrypoint_waiter, replace_dependencies, with_name
from services.orders import OrdersService

pytestmark = pytest.mark.integration


@pytest.fixture
def orders(container_factory, unique_name, tmp_path):
    container = container_factory(
        with_name(OrdersService, unique_name("orders")),  # its own queues on a shared broker
        start=False,  # reshape it first
        extra={"DATABASE_URL": f"sqlite:///{tmp_path}/orders.db"},
    )
    users = replace_dependencies(container, "users")  # no users service needed
    users.get.return_value = {"id": "u-1", "name": "Ann"}
    container.start()
    return container


def test_create_through_the_container_without_a_message(orders):
    with entrypoint_hook(orders, "create", context_data={"user_id": "u-1"}) as create:
        order = create(user_id="u-1", amount=3)
    with entrypoint_hook(orders, "get") as get:
        assert get(order["id"]) == order


class TestPayments:
    @pytest.fixture
    def broker_uri(self, amqp_vhost_uri):
        """A vhost of our own: "payments" events sent here reach no one else's queues."""
        return amqp_vhost_uri

    def test_an_order_is_paid_once_its_payment_succeeds(self, orders, rpc_client):
        created = rpc_client.call(orders.service_name, "create", user_id="u-1", amount=12.5)
        assert created["status"] == "pending"

        with entrypoint_waiter(orders, "on_payment_succeeded", timeout=10) as paid:
            dispatch_event("payments", "payment_succeeded", {"order_id": created["id"]},
                           broker_url=orders.config.broker_url)
        paid.get()  # re-raises if the handler failed

        assert rpc_client.call(orders.service_name, "get", created["id"])["status"] == "paid"
