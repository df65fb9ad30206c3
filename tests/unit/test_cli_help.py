"""Every command's --help carries an example of itself (the quality bar for the CLI).

The commands are discovered from the typer app, so a new command is checked the day it is added;
`kubitect help X` shows what `kubitect X --help` shows; Kubitect's aliases (`ls`, `list cluster`,
`list preset`) work without cluttering the help.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from kubitect_core.cli import app

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def _commands(group=None, path=()) -> list[tuple[str, ...]]:
    """Every visible command path, groups included ("list", "list clusters", ...)."""
    group = group or typer.main.get_command(app)
    found = []
    for name, cmd in sorted(group.commands.items()):
        if cmd.hidden:
            continue
        found.append((*path, name))
        if hasattr(cmd, "commands"):
            found += _commands(cmd, (*path, name))
    return found


COMMANDS = [" ".join(p) for p in _commands()]


def test_discovery_finds_the_commands_users_know():
    for expected in ("apply", "plan", "run", "destroy", "verify", "validate", "schema", "topology", "completion",
                     "help", "list clusters", "list presets", "list stages", "list plugins", "export config",
                     "export kubeconfig", "export preset", "export report", "export logs", "lab up", "image build"):
        assert expected in COMMANDS
    assert "ls" not in COMMANDS and "list cluster" not in COMMANDS, "aliases stay out of the help"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example_of_the_command_itself(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert re.search(r"Examples?:", text), f"`kubitect {command} --help` has no example"
    assert f"kubitect {command}" in text.split("Example", 1)[1], f"the example does not show `kubitect {command}`"


@pytest.mark.parametrize("command", ["apply", "export logs", "list clusters", "completion"])
def test_help_command_is_the_same_as_dash_dash_help(command):
    runner = CliRunner()
    direct = runner.invoke(app, [*command.split(), "--help"], env=ENV)
    via_help = runner.invoke(app, ["help", *command.split()], env=ENV)
    assert via_help.exit_code == 0 and via_help.output == direct.output


def test_help_alone_is_the_main_help_and_an_unknown_topic_says_so():
    runner = CliRunner()
    assert runner.invoke(app, ["help"], env=ENV).output == runner.invoke(app, ["--help"], env=ENV).output
    bad = runner.invoke(app, ["help", "aplly"], env=ENV)
    assert bad.exit_code == 2 and "No such command 'aplly'" in bad.output and "'apply'" in bad.output


@pytest.mark.parametrize("alias, real", [(["ls", "presets"], ["list", "presets"]),
                                         (["list", "preset"], ["list", "presets"]),
                                         (["ls", "cluster"], ["list", "clusters"])])
def test_kubitect_aliases(alias, real, tmp_path):
    runner = CliRunner()
    env = {**ENV, "KUBITECT_HOME": str(tmp_path)}
    a, b = runner.invoke(app, alias, env=env), runner.invoke(app, real, env=env)
    assert a.exit_code == 0 and a.output == b.output


@pytest.mark.parametrize("typed, suggested", [
    ("create", "'kubitect apply'"), ("delete", "'kubitect destroy'"), ("remove", "'kubitect destroy'"),
    ("scale", "'kubitect apply --action scale'"), ("upgrade", "'kubitect apply --action upgrade'"),
    ("valdate", "'validate'"), ("destory", "'destroy'")])
def test_a_command_users_of_other_tools_type_gets_the_right_one(typed, suggested):
    result = CliRunner().invoke(app, [typed, "--config", "ha.yaml"], env=ENV)
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert f"No such command '{typed}'" in text and f"Did you mean {suggested}" in text


def test_a_typo_in_a_subcommand_suggests_a_visible_one_only():
    result = CliRunner().invoke(app, ["list", "clusterz"], env=ENV)
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "Did you mean 'clusters'?" in text and "'cluster'" not in text
