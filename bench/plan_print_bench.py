"""How long `plan` takes to print its list of changes, to a pipe and to a terminal.

At 5,000 nodes, printing each change with its own rich print was about half of plan's time; the
list is now printed in one batch (kubitect_core.ui.RichProgress). This prints the time to show
N planned changes both ways: the current batch and, for comparison, a print per change.

    .venv/bin/python bench/plan_print_bench.py [--changes 5000]
"""

from __future__ import annotations

import argparse
import io
import time

from rich.console import Console
from rich.markup import escape

from kubitect_core.contracts import Change
from kubitect_core.ui import RichProgress, make_console


def _consoles(buf: io.StringIO) -> dict[str, Console]:
    return {"pipe": make_console(file=buf),
            "terminal": Console(file=buf, highlight=False, width=120, force_terminal=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=5000)
    n = ap.parse_args().changes
    changes = [Change("create", "domain", f"kb-worker-{i}", host=f"host-{i % 8}", detail="2 vCPU, 4 GiB")
               for i in range(n)]
    print(f"{'output':<10}{'batch (now)':>14}{'per change':>14}")
    for kind in ("pipe", "terminal"):
        buf = io.StringIO()
        out = _consoles(buf)[kind]
        t0 = time.perf_counter()
        RichProgress(out=out).kubitect_stage_finished("c", "vms", "plan", True, 0.1, changes, None)
        batch = time.perf_counter() - t0
        buf = io.StringIO()
        out = _consoles(buf)[kind]
        t0 = time.perf_counter()
        for c in changes:  # what it did before
            out.print(f"           {escape(str(c))}")
        each = time.perf_counter() - t0
        print(f"{kind:<10}{batch:>13.3f}s{each:>13.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
