"""Broker-side test plumbing: reach the broker, isolate a test, clean up after it.

Two ways to keep tests on one broker out of each other's way:

* **unique names** (the default, free): every test names its services uniquely
  (``with_name(Service, unique_name("orders"))``) and deletes the queues its containers
  declared afterwards (``queues_declared_by``). Exchanges are left behind: they hold no
  messages and cost the broker next to nothing.
* **a vhost per test** (``TemporaryVhost``, opt-in): a fresh virtual host, deleted with
  everything in it afterwards. Nothing leaks, and fixed service names ("orders") are safe,
  but it needs ``rabbitmqctl`` on the broker's machine with the rights to run it, and costs
  three ``rabbitmqctl`` runs (about 2.4 s on the 2-core CI machine; see docs/testing.md).

Nothing here imports pytest: the plugin in ``amqprpc.testing.pytest`` wraps these.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import amqp  # type: ignore[import-untyped]

from ..containers import ServiceContainer
from ..exceptions import BrokerUnreachable
from ..transport.address import BrokerAddress

RABBITMQCTL_TIMEOUT = 60.0


class broker_admin:
    """A short-lived raw connection for test set-up and clean-up (delete queues, publish raw).

    ``with broker_admin(uri) as channel: channel.queue_delete("rpc-x")``
    """

    def __init__(self, uri: str, connect_timeout: float = 5) -> None:
        address = BrokerAddress.from_url(uri)
        self.connection = amqp.Connection(
            host=f"{address.host}:{address.port}", userid=address.userid,
            password=address.password, virtual_host=address.virtual_host,
            connect_timeout=connect_timeout,
        )

    def __enter__(self) -> amqp.Channel:
        self.connection.connect()
        self.channel = self.connection.channel()
        return self.channel

    def __exit__(self, *exc: Any) -> None:
        self.connection.close()


def check_broker(uri: str) -> None:
    """Raise ``BrokerUnreachable`` with a message a person can act on if ``uri`` fails."""
    try:
        with broker_admin(uri):
            pass
    except Exception as exc:
        raise BrokerUnreachable(
            f"no RabbitMQ at {BrokerAddress.from_url(uri)} ({type(exc).__name__}: {exc}); start "
            "one (`rabbitmq-server -detached`), or point the tests at one with --amqp-uri or "
            "$AMQPRPC_TEST_BROKER_URL"
        ) from exc


def queues_declared_by(container: ServiceContainer) -> set[str]:
    """The queues a container's entrypoints declare, to delete after a test.

    ``rpc-<service>`` for ``@rpc`` services, plus whatever each entrypoint reports: its
    ``declared_queues`` (an event handler's queue, dead-letter and delay queues) or else
    its ``queue_name``. Names are known once the container has been set up (started).
    """
    names = {f"rpc-{container.service_name}"}
    for entrypoint in container.entrypoints:
        declared = getattr(entrypoint, "declared_queues", None)
        if declared is None:
            queue_name = getattr(entrypoint, "queue_name", None)
            declared = [queue_name] if isinstance(queue_name, str) else []
        names.update(name for name in declared if isinstance(name, str) and name)
    return names


def delete_queues(uri: str, names: Iterable[str]) -> None:
    """Delete queues (missing ones are fine), whatever messages they still hold."""
    names = sorted(set(names))
    if not names:
        return
    with broker_admin(uri) as channel:
        for name in names:
            channel.queue_delete(name)


class TemporaryVhost:
    """A fresh vhost on the local broker, with all rights for the URI's user; deleted on exit.

    ``with TemporaryVhost(amqp_uri) as uri: ...`` where ``uri`` points into the new vhost.
    It drives ``rabbitmqctl``, so it needs the broker on this machine and the rights to run
    that tool (root, or the rabbitmq user).
    """

    def __init__(self, uri: str, name: str | None = None) -> None:
        self.base_uri = uri
        self.name = name or f"amqprpc-test-{uuid.uuid4().hex[:12]}"
        self.user = BrokerAddress.from_url(uri).userid
        self.uri = with_vhost(uri, self.name)

    def __enter__(self) -> str:
        _rabbitmqctl("add_vhost", self.name)
        try:
            _rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        except BaseException:
            _rabbitmqctl("delete_vhost", self.name)
            raise
        return self.uri

    def __exit__(self, *exc: Any) -> None:
        _rabbitmqctl("delete_vhost", self.name)


def with_vhost(uri: str, vhost: str) -> str:
    """``uri`` pointing at another virtual host."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))


def _rabbitmqctl(*args: str) -> None:
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        raise RuntimeError(
            "rabbitmqctl is not on PATH: a per-test vhost needs the broker on this machine; "
            "use unique names (with_name + unique_name) instead"
        )
    try:
        subprocess.run([tool, "-q", *args], check=True, capture_output=True, text=True,
                       timeout=RABBITMQCTL_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"`rabbitmqctl {' '.join(args)}` failed (exit {exc.returncode}): "
            f"{(exc.stderr or exc.stdout).strip()}"
        ) from None
