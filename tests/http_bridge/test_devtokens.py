"""Credentials from the command line: key entries the key file loads, tokens the bridge accepts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from amqprpc import ConfigError
from amqprpc.cli import main
from http_bridge.__main__ import main as bridge_main
from http_bridge.auth import ApiKeyStore, JwtVerifier
from http_bridge.devtokens import make_token, new_key_entry
from http_bridge.errors import CredentialsRefused

SECRET = "dev-secret-of-at-least-32-bytes!!"


def verifier(**kwargs) -> JwtVerifier:
    return JwtVerifier(hs256_secret=SECRET, **kwargs)


def test_a_token_verifies_with_the_bridge_settings_it_was_made_for():
    token = make_token(SECRET, ["admin"], subject="ada", issuer="tests", audience="api")
    identity = verifier(issuer="tests", audience="api").verify(token)
    assert (identity.principal, identity.roles) == ("ada", frozenset({"admin"}))
    with pytest.raises(CredentialsRefused):
        verifier(issuer="tests", audience="other").verify(token)


def test_an_expired_token_is_refused_and_bad_input_is_named():
    with pytest.raises(CredentialsRefused):
        verifier(leeway=0).verify(make_token(SECRET, [], ttl=10, now=1000))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        make_token("short", [])
    with pytest.raises(ConfigError, match="--ttl"):
        make_token(SECRET, [], ttl=0)


def test_new_key_entry_loads_into_the_key_file(tmp_path):
    key, entry = new_key_entry("billing", ["billing", "reader"])
    path = tmp_path / "keys.toml"
    path.write_text(entry + "\n")
    identity = ApiKeyStore.load(path).lookup(key)
    assert identity is not None and identity.roles == frozenset({"billing", "reader"})


def test_amqprpc_bridge_token_uses_the_configured_issuer_and_audience(tmp_path):
    config = tmp_path / "bridge.toml"
    config.write_text(f'[bridge]\njwt_hs256_secret = "{SECRET}"\njwt_issuer = "tests"\n'
                      'jwt_audience = "api"\njwt_roles_claim = "groups"\n')
    result = CliRunner().invoke(main, ["bridge", "token", "--roles", "admin,billing", "--sub", "ada",
                                       "--config", str(config)], env={})
    assert result.exit_code == 0, result.output
    identity = verifier(issuer="tests", audience="api", roles_claim="groups").verify(result.output.strip())
    assert (identity.principal, identity.roles) == ("ada", frozenset({"admin", "billing"}))
    result = CliRunner().invoke(main, ["bridge", "token", "--roles", "x"], env={})
    assert result.exit_code == 2 and "pass --secret" in result.output


def test_amqprpc_bridge_new_key_twin(tmp_path):
    result = CliRunner().invoke(main, ["bridge", "new-key", "--principal", "ada", "--roles", "a"])
    assert result.exit_code == 0, result.output
    assert 'principal = "ada"' in result.output and 'roles = ["a"]' in result.output


def test_python_m_http_bridge_lists_and_runs_its_commands(capsys):
    help_text = subprocess.run([sys.executable, "-m", "http_bridge", "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "new-key --principal" in help_text and "token [--secret" in help_text
    assert bridge_main(["token", "--secret", SECRET, "--roles", "r", "--sub", "bob"]) == 0
    assert verifier().verify(capsys.readouterr().out.strip()).principal == "bob"
    assert bridge_main(["token", "--secret", "short"]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err
