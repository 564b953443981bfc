pytest_plugins = ["amqprpc.testing.pytest", "tests.databases"]
