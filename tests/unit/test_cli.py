"""CLI errors a user can fix are one line and an exit code, never a traceback."""

import json

from click.testing import CliRunner

from amqprpc.cli import EXIT_BROKER, EXIT_CONFIG, main


def invoke(*args: str, env=None):
    return CliRunner().invoke(main, list(args), env=env or {})


def test_call_rejects_bad_target_and_json():
    result = invoke("call", "no-dot")
    assert result.exit_code == EXIT_CONFIG and "expected SERVICE.METHOD" in result.output
    result = invoke("call", "svc.m", "{nope")
    assert result.exit_code == EXIT_CONFIG and "not valid JSON" in result.output
    result = invoke("call", "svc.m", "42")
    assert result.exit_code == EXIT_CONFIG and "JSON object" in result.output


def test_unreachable_broker_is_one_line():
    result = invoke("call", "svc.m", "--broker", "amqp://guest:guest@127.0.0.1:1/")
    assert result.exit_code == EXIT_BROKER
    assert "cannot connect to the broker" in result.output
    assert "Traceback" not in result.output


def test_run_reports_missing_module_and_class():
    result = invoke("run", "no_such_module_xyz")
    assert result.exit_code == EXIT_CONFIG and "not found" in result.output
    result = invoke("run", "json")
    assert result.exit_code == EXIT_CONFIG and "defines no service class" in result.output
    result = invoke("run", "services.greeter:Nope")
    assert result.exit_code == EXIT_CONFIG and "has no class 'Nope'" in result.output


def test_run_names_a_missing_dependency_of_the_module(tmp_path, monkeypatch):
    (tmp_path / "needs_missing_dep.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("run", "needs_missing_dep")
    assert result.exit_code == EXIT_CONFIG
    assert "needs 'no_such_dependency_xyz', which is not installed" in result.output
    assert "Traceback" not in result.output


def test_config_shows_layers_and_hides_password():
    result = invoke("config", "--broker", "amqp://me:pw@h:1/", env={"AMQPRPC_CONCURRENCY": "3"})
    shown = json.loads(result.output)
    assert shown["concurrency"] == 3 and shown["broker_url"] == "amqp://me:***@h:1/"
