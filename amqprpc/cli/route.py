"""``amqprpc route``: send a share of a service's calls to a version, or stop doing so, live."""

from __future__ import annotations

import click

from ..routing import RouteRule, check_service
from . import EXIT_BROKER, EXIT_CONFIG, CliError, _build_config, _friendly, broker_option, config_option


@click.command()
@click.argument("service")
@broker_option
@config_option
@click.option("--canary", metavar="VERSION", help="The version (amqprpc run --version) that gets the share.")
@click.option("--weight", type=click.FloatRange(0, 1), metavar="0..1",
              help="The share of calls to send to it: 0.1 is 10 %.")
@click.option("--sticky", metavar="identity|context:KEY",
              help="Choose by a hash of the caller's identity, or of a context value, so one "
                   "user always sees the same version.")
@click.option("--off", is_flag=True, help="Route every call to the shared queue again (rollback).")
def route(service: str, broker_url: str | None, config_path: str | None, canary: str | None,
          weight: float | None, sticky: str | None, off: bool) -> None:
    """Route a share of SERVICE's calls to one version, in every running caller, at once.

    The rule lasts until each caller restarts; write a lasting one in the config file
    ([routing.SERVICE]). Signed with discovery_key when the config has one.
    """
    from ..route_updates import send_rule

    if off == (canary is not None):
        raise CliError("give either --canary VERSION --weight W, or --off", EXIT_CONFIG)
    if canary is not None and weight is None:
        raise CliError("--canary needs --weight (the share, from 0 to 1)", EXIT_CONFIG)
    _friendly(lambda: check_service(service))
    config = _build_config(config_path, broker_url=broker_url)
    rule = None if off else _friendly(lambda: RouteRule(service, str(canary), float(weight or 0),
                                                        sticky or ""))
    try:
        _friendly(lambda: send_rule(config, service, rule))
    except TimeoutError:
        raise CliError("the broker did not confirm the rule in time", EXIT_BROKER) from None
    if rule is None:
        click.echo(f"{service}: every call to the shared queue")
    else:
        click.echo(f"{service}: {rule.weight:.0%} of calls to {rule.canary}"
                   + (f", sticky by {rule.sticky}" if rule.sticky else ""))
