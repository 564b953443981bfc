"""``python -m http_bridge``: serve; ``python -m http_bridge new-key``: make an API key entry."""

from __future__ import annotations

import argparse
import logging
import sys

from amqprpc import Config, ConfigError

from .auth import generate_key, hash_key


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["new-key"]:
        return _new_key(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m http_bridge", description=__doc__)
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

    try:
        config = Config.load(args.config, broker_url=args.broker)
        settings = BridgeSettings.from_config(config, host=args.host, port=args.port, workers=args.workers)
        serve(config, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _new_key(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m http_bridge new-key",
                                     description="Print a new API key and its entry for the key file.")
    parser.add_argument("--principal", required=True)
    parser.add_argument("--roles", default="", help="comma-separated roles")
    args = parser.parse_args(argv)
    key = generate_key()
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    print(f"# give this key to {args.principal} (it is not stored anywhere): {key}", file=sys.stderr)
    print("[[keys]]")
    print(f'sha256 = "{hash_key(key)}"')
    print(f'principal = "{args.principal}"')
    print(f"roles = {roles!r}".replace("'", '"'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
