"""plan's list of changes: every change a line, printed as plain text (one batch, not a print per
change: at 5,000 nodes the per-change prints were half of plan's time; bench/plan_print_bench.py)."""

from __future__ import annotations

import io

from kubitect_core.contracts import Change
from kubitect_core.ui import RichProgress, make_console


def _printed(changes: list[Change], *, verbose: bool = False, action: str = "plan") -> list[str]:
    buf = io.StringIO()
    RichProgress(out=make_console(file=buf), verbose=verbose).kubitect_stage_finished(
        "c", "vms", action, True, 0.5, changes, None)
    return buf.getvalue().splitlines()


def test_plan_lists_every_change_but_keeps_on_its_own_line_in_order():
    changes = [Change("create", "domain", f"node-{i}", host="h1") for i in range(300)]
    changes.insert(7, Change("keep", "network", "net"))
    lines = _printed(changes)
    assert "300 planned" not in lines[0] and "301 planned" in lines[0]
    body = [line.strip() for line in lines[1:]]
    assert body == [str(c) for c in changes if c.action != "keep"]


def test_change_text_is_not_read_as_markup():
    odd = Change("create", "domain", "[bold]x[/bold]", detail="[/] [red]")
    (line,) = _printed([odd])[1:]
    assert line.strip() == str(odd)


def test_apply_shows_changes_only_when_verbose():
    changes = [Change("create", "domain", "a"), Change("keep", "domain", "b")]
    assert len(_printed(changes, action="apply")) == 1
    assert [line.strip() for line in _printed(changes, action="apply", verbose=True)[1:]] == [str(c) for c in changes]
