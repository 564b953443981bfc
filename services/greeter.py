"""The README's first service."""

from amqprpc import rpc


class GreeterService:
    name = "greeter"

    @rpc
    def hello(self, name: str) -> str:
        return f"Hello, {name}!"
