"""Every command's --help carries an example (the quality bar for the CLI)."""

import pytest
from typer.testing import CliRunner

from kubitect_core.cli import app

COMMANDS = ["apply", "plan", "run", "destroy", "verify", "validate", "schema", "list clusters", "list plugins",
            "list stages", "list presets", "export config", "export kubeconfig", "export preset", "export report",
            "image build", "image list", "lab up", "lab exec", "lab down", "lab status"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert f"Example: kubitect {command.split()[0]}" in result.output
