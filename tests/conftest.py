pytest_plugins = ["amqprpc.testing.pytest"]
