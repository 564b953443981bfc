"""``amqprpc bridge``: run the HTTP gateway from the amqprpc command.

Registered through the ``amqprpc.cli`` entry point group (pyproject.toml), so amqprpc never
imports the bridge; the gateway's own modules load only when the command runs, and a
missing ``bridge`` extra is one line saying how to install it. ``amqprpc bridge new-key``
and ``amqprpc bridge token`` make credentials for it (``credential_commands``, the same as
``python -m http_bridge new-key|token``).
"""

from __future__ import annotations

import logging
import sys

import click

from amqprpc.cli import EXIT_CONFIG, CliError, _build_config, _friendly, broker_option, config_option


class _BridgeGroup(click.Group):
    """Its subcommands come from http_bridge, loaded when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["new-key", "new-signing-key", "token"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        try:
            from .credential_commands import new_key, new_signing_key, token
        except ImportError as exc:
            raise CliError(f"the bridge needs the `bridge` extra: pip install 'amqprpc[bridge]' ({exc})",
                           EXIT_CONFIG) from None
        return {"new-key": new_key, "token": token, "new-signing-key": new_signing_key}.get(cmd_name)


@click.group(cls=_BridgeGroup, invoke_without_command=True)
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
    try:
        from .server import serve
        from .settings import BridgeSettings
    except ImportError as exc:
        raise CliError(f"the bridge needs the `bridge` extra: pip install 'amqprpc[bridge]' ({exc})",
                       EXIT_CONFIG) from None
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    config = _build_config(config_path, broker_url=broker_url)
    settings = _friendly(lambda: BridgeSettings.from_config(config, host=host, port=port, workers=workers))
    sys.exit(_friendly(lambda: serve(config, settings)))
