"""``amqprpc bridge``: run the HTTP gateway (http_bridge), imported only when the command runs.

``amqprpc bridge new-key`` and ``amqprpc bridge token`` make credentials for it (the same
functions as ``python -m http_bridge new-key|token``: ``http_bridge.devtokens``).
"""

from __future__ import annotations

import logging
from typing import Any

import click

from . import EXIT_CONFIG, CliError, _build_config, _friendly, broker_option, config_option, main


def _http_bridge(module: str) -> Any:
    """``http_bridge.<module>``, or a CliError saying which extra to install."""
    import importlib

    try:
        return importlib.import_module(f"http_bridge.{module}")
    except ImportError as exc:
        raise CliError(f"the bridge needs the `bridge` extra: pip install 'amqprpc[bridge]' ({exc})",
                       EXIT_CONFIG) from None


@main.group(invoke_without_command=True)
@broker_option
@config_option
@click.option("--host", help="Address to listen on (default 127.0.0.1, or [bridge] host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default 8000, or [bridge] port).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Processes sharing the port through SO_REUSEPORT (default 1).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_context
def bridge(ctx: click.Context, broker_url: str | None, config_path: str | None, host: str | None,
           port: int | None, workers: int | None, log_level: str) -> None:
    """Serve the services' HTTP routes (see docs/bridge.md) until SIGTERM/SIGINT."""
    if ctx.invoked_subcommand is not None:
        return
    settings_module = _http_bridge("settings")
    server = _http_bridge("server")
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    config = _build_config(config_path, broker_url=broker_url)
    settings = _friendly(lambda: settings_module.BridgeSettings.from_config(
        config, host=host, port=port, workers=workers))
    _friendly(lambda: server.serve(config, settings))


@bridge.command("new-key")
@click.option("--principal", required=True, help="Who the key is for (the caller's user_id).")
@click.option("--roles", default="", help="Comma-separated roles.")
def new_key(principal: str, roles: str) -> None:
    """Print a new API key (on stderr, once) and its entry for the key file (on stdout)."""
    devtokens = _http_bridge("devtokens")
    key, entry = _friendly(lambda: devtokens.new_key_entry(principal, devtokens.split_roles(roles)))
    click.echo(f"# give this key to {principal} (it is not stored anywhere): {key}", err=True)
    click.echo(entry)


@bridge.command()
@click.option("--secret", help="The HS256 secret (default: the config's bridge.jwt_hs256_secret).")
@click.option("--roles", default="", help="Comma-separated roles.")
@click.option("--sub", "subject", default="dev", show_default=True,
              help="The subject: the caller's user_id.")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True,
              help="Lifetime in seconds.")
@config_option
def token(secret: str | None, roles: str, subject: str, ttl: float, config_path: str | None) -> None:
    """Print a development JWT (HS256) the bridge accepts: its issuer, audience, roles claim."""
    devtokens = _http_bridge("devtokens")
    settings_module = _http_bridge("settings")
    config = _build_config(config_path)
    settings = _friendly(lambda: settings_module.BridgeSettings.from_config(config))
    click.echo(_friendly(lambda: devtokens.token_for(settings, devtokens.split_roles(roles),
                                                     secret=secret, subject=subject, ttl=ttl)))
