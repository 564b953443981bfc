"""An exception a service maps in ``http_errors`` is part of its contract (issue #20 item 2).

docs/bridge.md's example (``http_errors = {NotFound: 404}`` without ``expected_exceptions``)
used to write an ERROR line with a traceback to the worker's log for every 404.
"""

from __future__ import annotations

import logging

import pytest

from amqprpc import RemoteError, rpc
from amqprpc.testing.pytest import with_name

from ..waiting import wait_until

pytestmark = pytest.mark.integration


class NotFound(Exception):
    pass


class Users:
    name = "users"
    http_errors = {NotFound: 404}

    @rpc(http="GET /users/{user_id}")
    def get(self, user_id: int) -> dict:
        raise NotFound(f"no user {user_id}")

    @rpc
    def broken(self) -> None:
        raise KeyError("a bug")


def test_an_error_mapped_in_http_errors_logs_a_warning_not_a_traceback(container_factory, unique_name,
                                                                          rpc_client, caplog):
    cls = with_name(Users, unique_name("users"))
    container_factory(cls)
    with caplog.at_level(logging.WARNING, logger="amqprpc"):
        with pytest.raises(RemoteError, match="no user 7"):
            rpc_client.call(cls.name, "get", 7)
        with pytest.raises(RemoteError, match="a bug"):
            rpc_client.call(cls.name, "broken")
        wait_until(lambda: len([r for r in caplog.records if "raised" in r.getMessage()]) == 2,
                   "both outcomes to be logged", timeout=5)
    outcomes = {r.getMessage().split(" raised")[0].split(".")[-2]: r for r in caplog.records
                if "raised" in r.getMessage()}
    assert outcomes["get"].levelno == logging.WARNING and outcomes["get"].exc_info is None
    assert outcomes["broken"].levelno == logging.ERROR  # an unmapped error is still a bug
