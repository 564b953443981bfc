"""``amqprpc bridge new-key``, ``token`` and ``new-signing-key``: the click side of ``devtokens``.

Subcommands of ``amqprpc bridge`` (``bridge.add_command(new_key)``, ``...(token)``); the
work is in ``http_bridge.devtokens``, shared with ``python -m http_bridge new-key|token``.
"""

from __future__ import annotations

import click

from amqprpc.cli import _build_config, _friendly, config_option

from .devtokens import new_key_entry, split_roles, token_for
from .settings import BridgeSettings
from .signing_keys import SigningKey, write_key_file


@click.command("new-key")
@click.option("--principal", required=True, help="Who the key is for (the caller's user_id).")
@click.option("--roles", default="", help="Comma-separated roles.")
def new_key(principal: str, roles: str) -> None:
    """Print a new API key (on stderr, once) and its entry for the key file (on stdout)."""
    key, entry = _friendly(lambda: new_key_entry(principal, split_roles(roles)))
    click.echo(f"# give this key to {principal} (it is not stored anywhere): {key}", err=True)
    click.echo(entry)


@click.command()
@click.option("--secret", help="The HS256 secret (default: the config's bridge.jwt_hs256_secret).")
@click.option("--roles", default="", help="Comma-separated roles.")
@click.option("--sub", "subject", default="dev", show_default=True,
              help="The subject: the caller's user_id.")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True,
              help="Lifetime in seconds.")
@config_option
def token(secret: str | None, roles: str, subject: str, ttl: float, config_path: str | None) -> None:
    """Print a development JWT (HS256) the bridge accepts: its issuer, audience, roles claim."""
    config = _build_config(config_path)
    settings = _friendly(lambda: BridgeSettings.from_config(config))
    click.echo(_friendly(lambda: token_for(settings, split_roles(roles), secret=secret,
                                           subject=subject, ttl=ttl)))


@click.command("new-signing-key")
@click.argument("path", type=click.Path(dir_okay=False, exists=False))
def new_signing_key(path: str) -> None:
    """Write a new Ed25519 key for the token endpoint (bridge.token_signing_key_file) to PATH."""
    try:
        written = write_key_file(path)
    except FileExistsError:
        raise click.ClickException(f"{path} exists; the bridge's key is never overwritten") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc}") from None
    kid = SigningKey.load(written, issuer="").kid
    click.echo(f"wrote {written} (mode 0600, kid {kid}); set bridge.token_signing_key_file = \"{written}\"")
