"""``python -m http_bridge``: serve the bridge; ``new-key`` and ``token`` make credentials."""

from __future__ import annotations

import argparse
import logging
import sys

from amqprpc import Config, ConfigError

_COMMANDS = """\
other commands:
  new-key --principal NAME [--roles a,b]
                        print a new API key (on stderr) and its entry for the key file
  token [--secret S] --roles a,b [--sub NAME] [--ttl SECONDS] [--config FILE]
                        print a development JWT (HS256) the bridge accepts
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["new-key"]:
            return _new_key(argv[1:])
        if argv[:1] == ["token"]:
            return _token(argv[1:])
        return _serve(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m http_bridge", description=__doc__, epilog=_COMMANDS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="a TOML config file ([bridge] table)")
    parser.add_argument("--broker", metavar="URL", help="broker URL")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    from .server import serve
    from .settings import BridgeSettings

    config = Config.load(args.config, broker_url=args.broker)
    settings = BridgeSettings.from_config(config, host=args.host, port=args.port, workers=args.workers)
    serve(config, settings)
    return 0


def _new_key(argv: list[str]) -> int:
    from .devtokens import new_key_entry, split_roles

    parser = argparse.ArgumentParser(prog="python -m http_bridge new-key",
                                     description="Print a new API key and its entry for the key file.")
    parser.add_argument("--principal", required=True)
    parser.add_argument("--roles", default="", help="comma-separated roles")
    args = parser.parse_args(argv)
    key, entry = new_key_entry(args.principal, split_roles(args.roles))
    print(f"# give this key to {args.principal} (it is not stored anywhere): {key}", file=sys.stderr)
    print(entry)
    return 0


def _token(argv: list[str]) -> int:
    from .devtokens import split_roles, token_for
    from .settings import BridgeSettings

    parser = argparse.ArgumentParser(prog="python -m http_bridge token",
                                     description="Print a development JWT (HS256) the bridge accepts.")
    parser.add_argument("--secret", help="the HS256 secret (default: the config's bridge.jwt_hs256_secret)")
    parser.add_argument("--roles", default="", help="comma-separated roles")
    parser.add_argument("--sub", default="dev", help="the subject: the caller's user_id (default dev)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (default 3600)")
    parser.add_argument("--config", metavar="FILE", help="the bridge's config: issuer, audience, secret")
    args = parser.parse_args(argv)
    settings = BridgeSettings.from_config(Config.load(args.config))
    print(token_for(settings, split_roles(args.roles), secret=args.secret, subject=args.sub, ttl=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
