"""Testing helpers for services built on amqprpc (see docs/testing.md)."""
