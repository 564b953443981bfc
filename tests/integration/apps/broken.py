"""A service that cannot start: its dependency finds no configuration."""

from amqprpc import ConfigError, DependencyProvider, rpc


class NeedsSetting(DependencyProvider):
    def setup(self) -> None:
        raise ConfigError("BROKEN_URL is not set")


class BrokenService:
    name = "broken"
    needs = NeedsSetting()

    @rpc
    def ping(self) -> str:
        return "pong"
