"""Config layers defaults < file < environment < flags, and refuses nonsense with a clear error."""

import pytest

from amqprpc import Config, ConfigError


def test_defaults():
    config = Config()
    assert config.broker_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert (config.concurrency, config.effective_prefetch, config.rpc_timeout) == (10, 10, 30.0)


def test_layers(tmp_path):
    path = tmp_path / "amqprpc.toml"
    path.write_text('concurrency = 4\nrpc_timeout = 5\nPAYMENTS_URL = "http://pay"\n'
                    '[amqprpc]\nheartbeat = 10\n')
    env = {"AMQPRPC_CONCURRENCY": "6", "AMQPRPC_GREETING": "hi", "OTHER": "x"}
    config = Config.load(path, env=env, rpc_timeout=2.0, broker_url=None)
    assert config.concurrency == 6  # env beats file
    assert config.rpc_timeout == 2.0  # flags beat everything
    assert config.heartbeat == 10.0
    assert config["PAYMENTS_URL"] == "http://pay"
    assert config["GREETING"] == "hi"
    assert config["CONCURRENCY"] == 6
    assert "OTHER" not in config


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AMQPRPC_CONCURRENCY": "lots"}, "concurrency from environment must be int"),
        ({"AMQPRPC_CONCURRENCY": "0"}, "concurrency must be at least 1"),
        ({"AMQPRPC_SERIALIZER": "pickle"}, "serializer must be 'json' or 'msgpack'"),
        ({"AMQPRPC_BROKER_URL": "http://x"}, "broker_url: broker URL must start with amqp://"),
        ({"AMQPRPC_BROKER_URL": "amqp://a/;;amqp://b/"}, "broker_url: broker URL has an empty entry"),
        ({"AMQPRPC_BROKER_URL": "amqp://a/;redis://b/"}, "broker URL must start with amqp:// or amqps://: .redis://b/."),
    ],
)
def test_bad_values_name_the_problem(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(env=env)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.load(tmp_path / "nope.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("concurrency = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(broken, env={})


def test_as_dict_masks_the_password():
    shown = Config(broker_url="amqp://user:secret@host:5672/vh").as_dict()
    assert shown["broker_url"] == "amqp://user:***@host:5672/vh"
