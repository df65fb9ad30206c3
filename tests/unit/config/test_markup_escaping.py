"""Config values that look like rich markup ("[/x]", "[b]") are printed as text, never interpreted.

Before, `[/x]` in a value crashed the output with a MarkupError and `[b]` silently vanished.
"""

from __future__ import annotations

import io

from cfgedit import SEED
from rich.console import Console
from typer.testing import CliRunner

from kubitect_core.changes import ChangeEvent
from kubitect_core.cli import app
from kubitect_core.config import ConfigError, load_config_text
from kubitect_core.ui import RichProgress


def _cli(*args):
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(app, [str(a) for a in args])


def test_a_valid_value_that_looks_like_markup_is_shown_as_written(tmp_path):
    path = tmp_path / "[b]cluster[x].yaml"
    path.write_text(SEED.read_text().replace("    bridge: br0", '    bridge: "[b]br0"'))
    result = _cli("validate", path)
    assert result.exit_code == 0, result.output
    assert "bridge [b]br0" in result.stdout and "[b]cluster[x].yaml is valid" in result.stdout


def test_an_invalid_value_with_markup_is_reported_as_written(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SEED.read_text().replace("  name: kubitect-ha", '  name: "[/x][bold]ha"'))
    result = _cli("validate", path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "[/x][bold]ha" in result.output
    plan = _cli("plan", "--config", path, "--home", tmp_path / "home")
    assert plan.exit_code == 1 and "[/x][bold]ha" in plan.output and "Traceback" not in plan.output


def test_progress_lines_print_markup_as_text():
    out = io.StringIO()
    progress = RichProgress(Console(file=out, width=200, color_system=None))
    progress.kubitect_stage_started(cluster="c", stage="vms[/x]", action="apply")
    progress.kubitect_stage_progress(cluster="c", stage="vms", subject="[/x]node", message="image [b]x[/b]")
    progress.kubitect_stage_finished(cluster="c", stage="vms", action="apply", ok=False, seconds=1.0, changes=[],
                                     error="bad value [/x]")
    progress.summary("done [/x]")
    text = out.getvalue()
    assert "vms[/x]" in text and "[/x]node" in text and "image [b]x[/b]" in text and "bad value [/x]" in text


def test_change_events_print_markup_as_text(capsys):
    from kubitect_core.cli import pipeline_cmds

    pipeline_cmds._print_events([ChangeEvent(path="cluster.nodeTemplate.os.source", kind="change",
                                             old="[/x]a.img", new="[b]b.img", severity="warn",
                                             message="changes [/red] the image")])
    out = capsys.readouterr().out
    assert "'[/x]a.img' -> '[b]b.img'" in out and "changes [/red] the image" in out


def test_issue_text_keeps_markup_characters():
    try:
        load_config_text(SEED.read_text().replace("  name: kubitect-ha", '  name: "[red]x"'), "s.yaml")
    except ConfigError as exc:
        assert any("[red]x" in i.message for i in exc.issues)
    else:  # pragma: no cover
        raise AssertionError("a name with brackets must be refused")
