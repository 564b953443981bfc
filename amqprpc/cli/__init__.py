"""The ``amqprpc`` command: thin glue that parses, builds a Config and calls the runtime.

Errors a user can fix are one line on stderr with a non-zero exit code, never a traceback.
The commands are listed in ``COMMANDS`` and imported when they are used, so importing
this package (and ``amqprpc --help``'s first step) stays cheap; other packages add
commands through the ``amqprpc.cli`` entry point group, the way http_bridge adds
``amqprpc bridge`` (a command module imports its helpers from here, never the reverse).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ..config import Config
from ..exceptions import AmqpRpcError, BrokerError, ConfigError

if TYPE_CHECKING:
    from importlib import metadata

EXIT_REMOTE_ERROR = 1
EXIT_CONFIG = 2
EXIT_BROKER = 3

_log = logging.getLogger("amqprpc.cli")


class CliError(click.ClickException):
    """A failure the user can act on, with its exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # a ClassVar to click's types; ours vary


def _build_config(config_path: str | None, **overrides: Any) -> Config:
    try:
        return Config.load(config_path, **overrides)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None


def _friendly(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, turning amqprpc errors into one-line CLI errors."""
    try:
        return fn()
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    except BrokerError as exc:
        raise CliError(str(exc), EXIT_BROKER) from None


broker_option = click.option(
    "--broker", "broker_url", metavar="URL",
    help="Broker URL (default: $AMQPRPC_BROKER_URL, the config file, or amqp://guest:guest@127.0.0.1:5672/).",
)
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
    help="A TOML config file.",
)

reply_queue_option = click.option(
    "--reply-queue", is_flag=True,
    help="Receive replies on a reply queue instead of direct reply-to (needed to call Nameko services).",
)


# name -> "module:attribute" of a click command, imported on first use.
COMMANDS: dict[str, str] = {
    "asyncapi": "amqprpc.cli.contracts:asyncapi",
    "call": "amqprpc.cli:call",
    "config": "amqprpc.cli:show_config",
    "contract": "amqprpc.cli.contracts:contract",
    "dev": "amqprpc.cli.dev:dev",
    "dispatch": "amqprpc.cli.events:dispatch",
    "dlq": "amqprpc.cli.events:dlq",
    "route": "amqprpc.cli.route:route",
    "run": "amqprpc.cli.run:run",
    "services": "amqprpc.cli.services:services",
    "shell": "amqprpc.cli:shell_command",  # not `shell`: that is the module cli/shell.py
    "stubs": "amqprpc.cli.contracts:stubs",
}
ENTRY_POINT_GROUP = "amqprpc.cli"
# Commands that optional parts of the distribution add, and how to get them.
OPTIONAL_COMMANDS: dict[str, str] = {
    "bridge": "the HTTP bridge is not installed: pip install 'amqprpc[bridge]'",
}


class CommandList(click.Group):
    """A group whose commands are ``COMMANDS`` plus the ``amqprpc.cli`` entry points."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *_plugins()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is not None:
            module, _, attr = target.partition(":")
            command = getattr(importlib.import_module(module), attr)
        elif cmd_name in _plugins():
            try:
                command = _plugins()[cmd_name].load()
            except ImportError as exc:  # the package is there, its optional requirements not
                hint = OPTIONAL_COMMANDS.get(cmd_name, "it cannot be imported")
                return _missing(cmd_name, f"{hint} ({exc})")
        elif cmd_name in OPTIONAL_COMMANDS:
            return _missing(cmd_name, OPTIONAL_COMMANDS[cmd_name])
        else:
            return None
        if not isinstance(command, click.Command):
            raise TypeError(f"amqprpc {cmd_name!r} ({target or 'entry point'}) is not a click command")
        return command


def _plugins() -> dict[str, metadata.EntryPoint]:
    """Commands other packages register (entry points in the ``amqprpc.cli`` group).

    ``importlib.metadata`` is imported here: ``amqprpc run`` never asks, so a worker does
    not carry it (~1.5 MiB of RSS)."""
    from importlib import metadata

    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in COMMANDS}


def _missing(name: str, hint: str) -> click.Command:
    def fail(args: tuple[str, ...]) -> None:
        raise CliError(f"amqprpc {name}: {hint}", EXIT_CONFIG)

    return click.Command(name, callback=fail, help=f"(not installed) {hint}", add_help_option=False,
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True})


@click.group(cls=CommandList)
@click.version_option(package_name="amqprpc")
def main() -> None:
    """amqprpc: microservices that talk RPC and events over RabbitMQ."""


@click.command()
@click.argument("target", metavar="SERVICE.METHOD")
@click.argument("arguments", required=False, metavar="[JSON]")
@broker_option
@config_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds to wait (default 30).")
@reply_queue_option
def call(target: str, arguments: str | None, broker_url: str | None, config_path: str | None,
         timeout: float | None, reply_queue: bool) -> None:
    """Call SERVICE.METHOD and print its JSON result.

    JSON is an object (keyword arguments) or an array (positional arguments).
    """
    from ..client import ClusterRpcClient

    service, dot, method = target.partition(".")
    if not dot or not service or not method:
        raise CliError(f"expected SERVICE.METHOD, got {target!r}", EXIT_CONFIG)
    args, kwargs = _parse_arguments(arguments)
    config = _build_config(config_path, broker_url=broker_url, rpc_timeout=timeout)
    client = ClusterRpcClient(config=config, direct_reply_to=not reply_queue)
    _friendly(client.start)
    try:
        result = client.call(service, method, *args, **kwargs)
    except AmqpRpcError as exc:
        click.echo(f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_BROKER if isinstance(exc, BrokerError) else EXIT_REMOTE_ERROR)
    finally:
        client.stop()
    click.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))


def _parse_arguments(text: str | None) -> tuple[list[Any], dict[str, Any]]:
    if text is None or not text.strip():
        return [], {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"arguments are not valid JSON: {exc}", EXIT_CONFIG) from None
    if isinstance(value, dict):
        return [], value
    if isinstance(value, list):
        return value, {}
    raise CliError("arguments must be a JSON object (keyword) or array (positional)", EXIT_CONFIG)


@click.command("shell")
@broker_option
@config_option
@reply_queue_option
def shell_command(broker_url: str | None, config_path: str | None, reply_queue: bool) -> None:
    """An interactive Python shell with a connected client named `rpc` (Tab completes rpc.)."""
    from ..client import ClusterRpcClient
    from .shell import interact

    config = _build_config(config_path, broker_url=broker_url)
    client = ClusterRpcClient(config=config, direct_reply_to=not reply_queue)
    _friendly(client.start)
    banner = (f"amqprpc shell, broker {client.config.broker_url.rsplit('@', 1)[-1]}\n"
              "`rpc` is connected: rpc.<service>.<method>(...), rpc.call('svc', 'method', ...); "
              "Tab completes services and methods")
    try:
        interact(client, banner, client.config)
    finally:
        client.stop()


@click.command("config")
@broker_option
@config_option
def show_config(broker_url: str | None, config_path: str | None) -> None:
    """Print the effective configuration (defaults < file < environment < flags)."""
    config = _build_config(config_path, broker_url=broker_url)
    click.echo(json.dumps(config.as_dict(), indent=2, default=str))

