"""``amqprpc contract dump|diff`` and ``amqprpc asyncapi``: contracts from live services or a module.

Live: the descriptors the running instances announce on the bus (one heartbeat round is
listened to). Offline (``--module services.orders``): the service classes of a module,
described exactly as a worker would announce them, with no broker.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config import Config
from ..discovery import ServiceDescriptor, ServiceRegistry
from . import EXIT_CONFIG, CliError, _build_config, _friendly, broker_option, config_option

EXIT_BREAKING = 1

module_option = click.option(
    "--module", "modules", multiple=True, metavar="MODULE[:Class]",
    help="Describe the services of this module offline (no broker); repeatable.")
wait_option = click.option(
    "--wait", "wait_seconds", type=float, default=None, metavar="SECONDS",
    help="How long to listen for announcements (default: one discovery interval and a bit).")


def descriptors(services: tuple[str, ...], modules: tuple[str, ...], config: Config,
                wait_seconds: float | None = None) -> list[ServiceDescriptor]:
    """The services' descriptors: offline from ``modules``, else live from the bus."""
    if modules:
        from ..contracts.model import describe_offline
        from ..runner import find_services

        classes = _friendly(lambda: find_services(modules))
        found: list[ServiceDescriptor] = _friendly(lambda: [describe_offline(cls) for cls in classes])
    else:
        found = _live(config, wait_seconds, services)
    if services:
        missing = sorted(set(services) - {d.service for d in found})
        if missing:
            raise CliError(f"no such service: {', '.join(missing)} "
                           f"({'not in the module' if modules else 'no running instance announced it'})",
                           EXIT_CONFIG)
        found = [d for d in found if d.service in services]
    return found


def _live(config: Config, wait_seconds: float | None, wanted: tuple[str, ...]) -> list[ServiceDescriptor]:
    registry = ServiceRegistry(config)
    _friendly(registry.start)
    try:
        wait = config.discovery_interval * 1.25 if wait_seconds is None else wait_seconds
        if wanted:
            registry.wait_for(lambda r: all(r.is_live(name) for name in wanted), wait)
        else:
            registry.wait_for(lambda r: False, wait)
        return [view.instances[0] for view in registry.services() if view.instances]
    finally:
        registry.stop()


@click.group("contract")
def contract() -> None:
    """Services' contracts as data, and the breaking changes between two of them."""


@contract.command("dump")
@click.argument("services", nargs=-1, metavar="[SERVICE...]")
@module_option
@wait_option
@broker_option
@config_option
def dump(services: tuple[str, ...], modules: tuple[str, ...], wait_seconds: float | None,
         broker_url: str | None, config_path: str | None) -> None:
    """Print the contract (JSON) of SERVICEs (all if none), live or from --module."""
    from ..contracts.model import contract_of

    config = _build_config(config_path, broker_url=broker_url)
    click.echo(json.dumps(contract_of(descriptors(services, modules, config, wait_seconds)),
                          indent=2, sort_keys=True))


@contract.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--module", "modules", multiple=True, metavar="MODULE[:Class]",
              help="What `module` (as OLD or NEW) describes; repeatable.")
@wait_option
@broker_option
@config_option
def diff(old: str, new: str, modules: tuple[str, ...], wait_seconds: float | None,
         broker_url: str | None, config_path: str | None) -> None:
    """Compare two contracts: each a file from `contract dump`, `live` (the bus) or `module`
    (--module's services). One line per change; exit 1 if any change is breaking."""
    from ..contracts.diff import diff_contracts

    config = _build_config(config_path, broker_url=broker_url)
    before = _contract(old, modules, config, wait_seconds)
    after = _contract(new, modules, config, wait_seconds)
    findings = diff_contracts(before, after)
    for finding in findings:
        click.echo(str(finding))
    breaking = sum(finding.breaking for finding in findings)
    click.echo(f"{breaking} breaking, {len(findings) - breaking} additive", err=True)
    if breaking:
        sys.exit(EXIT_BREAKING)


def _contract(source: str, modules: tuple[str, ...], config: Config,
              wait_seconds: float | None) -> dict[str, Any]:
    from ..contracts.model import contract_of, load_contract

    if source == "live":
        return contract_of(descriptors((), (), config, wait_seconds))
    if source == "module":
        if not modules:
            raise CliError("`module` needs --module MODULE", EXIT_CONFIG)
        return contract_of(descriptors((), modules, config))
    loaded: dict[str, Any] = _friendly(lambda: load_contract(source))
    return loaded


@click.command("asyncapi")
@click.argument("services", nargs=-1, metavar="[SERVICE...]")
@module_option
@wait_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the document here instead of stdout.")
@broker_option
@config_option
def asyncapi(services: tuple[str, ...], modules: tuple[str, ...], wait_seconds: float | None,
             output: str | None, broker_url: str | None, config_path: str | None) -> None:
    """Write the AsyncAPI 3.0 document of SERVICEs (all if none), live or from --module."""
    from ..contracts.asyncapi import build_asyncapi

    config = _build_config(config_path, broker_url=broker_url)
    document = build_asyncapi(descriptors(services, modules, config, wait_seconds), config)
    text = json.dumps(document, indent=2, sort_keys=False)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        click.echo(text)


@click.command("stubs")
@click.argument("services", nargs=-1, metavar="[SERVICE...]")
@module_option
@wait_option
@click.option("-o", "--output", type=click.Path(file_okay=False), default="stubs", show_default=True,
              help="The package directory to write (its last part is the import name).")
@broker_option
@config_option
def stubs(services: tuple[str, ...], modules: tuple[str, ...], wait_seconds: float | None,
          output: str, broker_url: str | None, config_path: str | None) -> None:
    """Write typed client stubs of SERVICEs (all if none), live or from --module: a package
    whose ``typed(client)`` lets mypy and editors check ``rpc.orders.create(...)``."""
    from ..contracts.stubs import write_stubs

    config = _build_config(config_path, broker_url=broker_url)
    for path in write_stubs(descriptors(services, modules, config, wait_seconds), output):
        click.echo(str(path))
