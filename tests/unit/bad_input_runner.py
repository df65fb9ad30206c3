"""Runs the real `kubitect` CLI once per bad input, each in its own forked process, and measures it.

Why a fork server: a fresh `kubitect` process spends ~1 s importing before it reads the config;
60+ inputs x 2 commands would take minutes. This process imports the CLI once, then forks one
child per run: the child is the real entry point (`kubitect_core.cli.main`, the console script's
target) with its own argv, stdout and stderr, so exit code, output, wall time and peak memory
(ru_maxrss from wait4, which includes the imported code) are those of that run alone.

Usage: python bad_input_runner.py CASES.json RESULTS.json
CASES.json: [{"id": str, "argv": [str, ...], "cwd": str}]; results add exit, seconds, maxrss_mb,
cpu_seconds, stdout, stderr, killed. A run still going after `KILL_AFTER` seconds is killed and reported.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

KILL_AFTER = 20.0


def _child(argv: list[str], cwd: str, out_path: str, err_path: str) -> None:
    os.chdir(cwd)
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    code = 0
    try:
        from kubitect_core.cli import main

        sys.argv = ["kubitect", *argv]
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a traceback is what the suite looks for
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Run:
    """One forked child running one case."""

    def __init__(self, case: dict, scratch: str, index: int):
        self.case = case
        self.out_path = os.path.join(scratch, f"{index}.stdout")
        self.err_path = os.path.join(scratch, f"{index}.stderr")
        self.started = time.monotonic()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child never returns
            _child(case["argv"], case["cwd"], self.out_path, self.err_path)

    def poll(self) -> dict | None:
        """The result once the child has ended (killing it after KILL_AFTER seconds), else None."""
        done, status, usage = os.wait4(self.pid, os.WNOHANG)
        killed = False
        if not done:
            if time.monotonic() - self.started <= KILL_AFTER:
                return None
            os.kill(self.pid, signal.SIGKILL)
            killed = True
            _, status, usage = os.wait4(self.pid, 0)
        seconds = time.monotonic() - self.started
        with open(self.out_path, "rb") as fh:
            stdout = fh.read(1_000_000).decode("utf-8", "replace")
        with open(self.err_path, "rb") as fh:
            stderr = fh.read(1_000_000).decode("utf-8", "replace")
        return {**self.case, "exit": os.waitstatus_to_exitcode(status), "seconds": round(seconds, 3),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "maxrss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": stdout, "stderr": stderr,
                "output_bytes": os.path.getsize(self.out_path) + os.path.getsize(self.err_path), "killed": killed}


def run_all(cases: list[dict], scratch: str, parallel: int) -> list[dict]:
    """Runs the cases `parallel` at a time; CPU time and peak RSS are per child, so they stay exact."""
    pending = list(enumerate(cases))
    running: list[_Run] = []
    results: dict[int, dict] = {}
    while pending or running:
        while pending and len(running) < parallel:
            index, case = pending.pop(0)
            run = _Run(case, scratch, index)
            run.index = index  # type: ignore[attr-defined]
            running.append(run)
        for run in list(running):
            result = run.poll()
            if result is not None:
                results[run.index] = result  # type: ignore[attr-defined]
                running.remove(run)
        time.sleep(0.002)
    return [results[i] for i in range(len(cases))]


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    with open(cases_path) as fh:
        cases = json.load(fh)
    # Import what every run needs once, before forking (the children share it copy-on-write).
    import importlib
    from importlib.metadata import entry_points

    from kubitect_core.cli import app  # noqa: F401
    from kubitect_core.config import load_config_text  # noqa: F401

    for ep in entry_points(group="kubitect"):  # the plugin modules; each child registers its own
        importlib.import_module(ep.module)
    scratch = os.path.dirname(os.path.abspath(results_path))
    results = run_all(cases, scratch, parallel=max(1, min(2, os.cpu_count() or 1)))
    with open(results_path, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main()
