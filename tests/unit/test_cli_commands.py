"""The command list: built-ins from COMMANDS, plugins from entry points, a hint for what is missing."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from amqprpc import cli
from amqprpc.cli import COMMANDS, main


def test_every_listed_command_loads_and_bridge_comes_from_its_entry_point():
    ctx = click.Context(main)
    assert set(COMMANDS) < set(main.list_commands(ctx))
    for name in main.list_commands(ctx):
        assert isinstance(main.get_command(ctx, name), click.Command), name
    assert main.get_command(ctx, "bridge").callback.__module__ == "http_bridge.command"


def test_importing_the_cli_imports_no_command_module_and_not_the_bridge():
    code = ("import sys, amqprpc.cli; "
            "loaded = [m for m in sys.modules if m.startswith(('http_bridge', 'amqprpc.cli.'))]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_bridge_without_its_entry_point_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(cli, "_plugins", dict)
    result = CliRunner().invoke(main, ["bridge", "--port", "8000"])
    assert result.exit_code == cli.EXIT_CONFIG
    assert "pip install 'amqprpc[bridge]'" in result.output


def test_bridge_without_aiohttp_says_how_to_install_it():
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "from click.testing import CliRunner\nfrom amqprpc.cli import main\n"
            "result = CliRunner().invoke(main, ['bridge'])\n"
            "assert result.exit_code == 2, result.output\n"
            "assert \"pip install 'amqprpc[bridge]'\" in result.output, result.output\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
