"""The one proxy tree: attribute access names service and method; send and wait do the rest."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from amqprpc.proxies import ServiceProxy


def test_calls_go_through_send_then_wait() -> None:
    sent: list[tuple[Any, ...]] = []

    def send(service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
             timeout: float | None) -> Any:
        sent.append((service, method, args, kwargs, timeout))
        return f"future-{len(sent)}"

    proxy: ServiceProxy[str] = ServiceProxy(send, lambda future: f"waited {future}", "greeter")
    assert proxy.hello("Ann", greeting="Hi", _timeout=2.5) == "waited future-1"
    assert proxy.hello.call_async("Bob") == "future-2"  # the future itself, not waited
    assert sent == [("greeter", "hello", ("Ann",), {"greeting": "Hi"}, 2.5),
                    ("greeter", "hello", ("Bob",), {}, None)]
    assert repr(proxy) == "<ServiceProxy greeter>" and repr(proxy.hello) == "<MethodProxy greeter.hello>"


def test_private_names_are_not_methods() -> None:
    proxy: ServiceProxy[Any] = ServiceProxy(lambda *a: None, lambda f: f, "greeter")
    with pytest.raises(AttributeError):
        proxy._secret  # noqa: B018
    assert copy.copy(proxy).hello.service == "greeter"  # copy probes dunders: no fake methods
