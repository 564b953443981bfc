"""``amqprpc services``: services gone longer than --down-for are hidden; --all shows them."""

from __future__ import annotations

import json
import os
import time

import click
import pytest
from click.testing import CliRunner

from amqprpc import Config, ServiceContainer, ServiceRegistry, rpc
from amqprpc.cli import main
from amqprpc.cli import services as services_cli
from amqprpc.discovery import build_descriptor


def descriptor_of(service_cls: type, instance: str, event: str = "up") -> dict:
    now = time.time()
    return build_descriptor(ServiceContainer(service_cls, Config()), event=event, instance=instance,
                            host="test", pid=os.getpid(), started_at=now, sent_at=now, interval=2.0,
                            amqprpc_version="test")


class Alive:
    name = "alive"

    @rpc
    def hello(self, name: str) -> str:
        return name


class Gone:
    name = "gone"

    @rpc
    def hello(self) -> None:
        pass


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fed(monkeypatch):
    """`amqprpc services` reading a registry fed by hand: one service live, one gone 20 minutes."""
    clock = Clock()

    def registry(config: Config) -> ServiceRegistry:
        fed = ServiceRegistry(config, clock=clock)
        fed.ingest(descriptor_of(Gone, instance="g1"))
        fed.ingest(descriptor_of(Gone, instance="g1", event="down"))
        clock.now += 20 * 60
        fed.ingest(descriptor_of(Alive, instance="a1"))
        fed.start = lambda wait=True: None  # type: ignore[method-assign]
        fed.stop = lambda: None  # type: ignore[method-assign]
        return fed

    monkeypatch.setattr(services_cli, "ServiceRegistry", registry)

    def invoke(*args: str, env: dict[str, str] | None = None) -> str:
        result = CliRunner().invoke(main, ["services", "--wait", "0", *args], env=env or {})
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


def test_long_gone_services_are_hidden_by_default(fed):
    output = fed()
    assert "alive  1 instance(s)" in output and "gone" not in output.split("\n(")[0]
    assert "(1 service(s) gone for longer than 10m not shown; --all shows them)" in output


def test_all_and_a_longer_window_show_them(fed):
    assert "gone  (no live instance; last heard 20m ago)" in fed("--all")
    assert "gone  (no live instance" in fed("--down-for", "1h")
    assert "gone" not in fed("--down-for", "5m").split("\n(")[0]


def test_the_window_is_a_setting_too(fed):
    assert "gone  (no live instance" in fed(env={"AMQPRPC_DISCOVERY_HIDE_AFTER": "3600"})
    listed = json.loads(fed("--json", "--all"))
    assert [(s["service"], s["down_for"]) for s in listed] == [("alive", 0.0), ("gone", 1200.0)]


def test_durations():
    assert [services_cli.parse_duration(t) for t in ("90", "90s", "10m", "1.5h", "2d")] == [
        90, 90, 600, 5400, 172800]
    with pytest.raises(click.BadParameter, match="such as 90s"):
        services_cli.parse_duration("ten minutes")
    assert [services_cli.format_duration(s) for s in (5, 600, 7300, 90000)] == ["5s", "10m", "2h", "1d"]
    result = CliRunner().invoke(main, ["services", "--down-for", "soon"])
    assert result.exit_code == 2 and "such as 90s" in result.output
