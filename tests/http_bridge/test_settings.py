"""Bridge settings from the config file and the environment; the new-key helper."""

from __future__ import annotations

import tomllib

import pytest

from amqprpc import Config, ConfigError
from http_bridge import BridgeSettings
from http_bridge.__main__ import main as bridge_main
from http_bridge.auth import ApiKeyStore


def test_settings_from_file_and_environment(tmp_path):
    path = tmp_path / "amqprpc.toml"
    path.write_text('[bridge]\nport = 9000\nrate_limit = 5.0\nservices = ["users"]\n'
                    '[bridge.deadlines]\n"users.slow" = 30.0\n')
    config = Config.load(path, env={"AMQPRPC_BRIDGE_PORT": "9100", "AMQPRPC_BRIDGE_ALLOW_ANONYMOUS": "true",
                                    "AMQPRPC_BRIDGE_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2"})
    settings = BridgeSettings.from_config(config, workers=3)
    assert (settings.port, settings.rate_limit, settings.workers) == (9100, 5.0, 3)
    assert settings.allow_anonymous and settings.services == ("users",)
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert settings.deadline_for("users", "slow") == 30.0 and settings.deadline_for("users", "get") == 10.0


@pytest.mark.parametrize("table", [
    "[bridge]\nnope = 1\n", "[bridge]\nport = \"x\"\n", "[bridge]\nmax_body_size = 0\n",
    "[bridge.deadlines]\n\"a.b\" = -1\n", "[bridge]\nexpected_error_status = 500\n",
    "[bridge.context_headers]\n\"X-User\" = \"user_id\"\n",  # an identity key
    "[bridge.context_headers]\n\"X-Stack\" = \"call_id_stack\"\n",
    "[bridge.context_headers]\n\"X_Bad\" = \"session\"\n",  # not a header the bridge accepts
    "[bridge.context_headers]\n\"X-A\" = \"a b\"\n",  # not a context key
    "[bridge.context_headers]\n\"X-A\" = \"s\"\n\"X-B\" = \"s\"\n",  # one key, two headers
])
def test_bad_settings_are_config_errors(tmp_path, table):
    path = tmp_path / "amqprpc.toml"
    path.write_text(table)
    with pytest.raises(ConfigError):
        BridgeSettings.from_config(Config.load(path, env={}))


def test_context_headers_from_the_file(tmp_path):
    path = tmp_path / "amqprpc.toml"
    path.write_text('[bridge.context_headers]\n"X-Session-Id" = "session"\n')
    settings = BridgeSettings.from_config(Config.load(path, env={}))
    assert settings.context_headers == {"X-Session-Id": "session"}


def test_new_key_prints_a_loadable_entry(tmp_path, capsys):
    assert bridge_main(["new-key", "--principal", "ci", "--roles", "deploy, read"]) == 0
    captured = capsys.readouterr()
    key = captured.err.rsplit(": ", 1)[1].strip()
    assert tomllib.loads(captured.out)["keys"][0]["roles"] == ["deploy", "read"]
    path = tmp_path / "keys.toml"
    path.write_text(captured.out)
    identity = ApiKeyStore.load(path).lookup(key)
    assert identity is not None and identity.principal == "ci"
