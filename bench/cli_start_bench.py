"""CLI start-up benchmark: how long a user waits for the quick commands.

Runs each command as a fresh process (as a shell or a completion script would) several times,
interleaved (one round of every command, then the next round), and prints the median and worst
wall time beside its target, the median CPU time, and the modules imported, so an import that
crept onto the fast path shows here. `python -c pass` is the floor: the interpreter alone.
The children run without PYTHONDONTWRITEBYTECODE (a user's install has its .pyc files; compiling
every module from source on each start would add a third to validate's time).

    .venv/bin/python bench/cli_start_bench.py [--runs 7]

Targets (issue "Docs and CLI"): `--version` 0.15 s, `validate` of the example 0.3 s, on a quiet
2-core machine. Exit 1 when a median misses its target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KUBITECT = str(Path(sys.executable).parent / "kubitect")
EXAMPLE = str(REPO / "examples" / "ha.yaml")

PYTHON = [sys.executable, "-c", "pass"]
CASES = [  # (label, argv, target seconds)
    ("python -c pass", PYTHON, None),
    ("--version", ["--version"], 0.15),
    ("--help", ["--help"], 0.30),
    ("validate examples/ha.yaml", ["validate", EXAMPLE], 0.30),
]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _argv(args: list[str]) -> list[str]:
    return args if args is PYTHON else [KUBITECT, *args]


def _once(args: list[str]) -> tuple[float, float]:
    """(wall, CPU of the child) seconds of one run."""
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(_argv(args), capture_output=True, env=ENV)
    took = time.perf_counter() - t0
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(_argv(args))} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return took, cpu


def _modules(args: list[str]) -> int:
    """How many modules the command imports (python -X importtime lines)."""
    argv = ["-c", "pass"] if args is PYTHON else ["-m", "kubitect_core.cli", *args]
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=ENV)
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    missed = 0
    for _, args, _ in CASES:
        _once(args)  # warm the page cache: the user's second call, not a cold disk
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    for _ in range(runs):  # interleaved, so a burst of load elsewhere hits every command alike
        for label, args, _ in CASES:
            wall, cpu = _once(args)
            walls[label].append(wall)
            cpus[label].append(cpu)
    # Other work on the machine skews every figure: the targets are for a quiet one (load < 1).
    print("load average (1, 5, 15 min): before " + " ".join(f"{x:.2f}" for x in load_before)
          + ", after " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; {runs} interleaved runs")
    print(f"{'command':<30}{'median':>9}{'worst':>9}{'cpu':>9}{'target':>9}{'modules':>9}")
    for label, args, target in CASES:
        median = statistics.median(walls[label])
        miss = target is not None and median > target
        missed += miss
        shown = f"{target:>8.2f}s" if target is not None else f"{'-':>9}"
        print(f"{label:<30}{median:>8.3f}s{max(walls[label]):>8.3f}s{statistics.median(cpus[label]):>8.3f}s"
              f"{shown}{_modules(args):>9}" + ("   MISSED" if miss else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
