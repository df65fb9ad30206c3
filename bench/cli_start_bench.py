"""CLI start-up benchmark: how long a user waits for the quick commands.

Runs each command as a fresh process (as a shell or a completion script would) several times and
prints the median and worst wall time beside its target, and the modules imported, so an import
that crept onto the fast path shows here:

    .venv/bin/python bench/cli_start_bench.py [--runs 7]

Targets (issue "Docs and CLI"): `--version` 0.15 s, `validate` of the example 0.3 s, on a quiet
2-core machine. Exit 1 when a median misses its target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KUBITECT = str(Path(sys.executable).parent / "kubitect")
EXAMPLE = str(REPO / "examples" / "ha.yaml")

CASES = [  # (label, arguments, target seconds)
    ("--version", ["--version"], 0.15),
    ("--help", ["--help"], 0.30),
    ("validate examples/ha.yaml", ["validate", EXAMPLE], 0.30),
]


def _once(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([KUBITECT, *args], capture_output=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kubitect {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return took


def _modules(args: list[str]) -> int:
    """How many modules the command imports (python -X importtime lines)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kubitect_core.cli", *args],
                          capture_output=True, text=True)
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:")) - 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    missed = 0
    print(f"{'command':<30}{'median':>9}{'worst':>9}{'target':>9}{'modules':>9}")
    for label, args, target in CASES:
        _once(args)  # warm the page cache: the user's second call, not a cold disk
        times = [_once(args) for _ in range(runs)]
        median = statistics.median(times)
        missed += median > target
        print(f"{label:<30}{median:>8.3f}s{max(times):>8.3f}s{target:>8.2f}s{_modules(args):>9}"
              + ("   MISSED" if median > target else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
