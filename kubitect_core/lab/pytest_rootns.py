"""A pytest plugin that fails the session if the root network namespace changed during it.

Enable it for a whole suite with `-p kubitect_core.lab.pytest_rootns` (or
`pytest_plugins = ["kubitect_core.lab.pytest_rootns"]` in the top conftest.py). It snapshots the
root namespace when the session starts and compares at the end; any difference is printed and
turns the exit status into a failure. Without root it does nothing (nothing could change it).
"""

from __future__ import annotations

import os
import shutil

import pytest

from kubitect_core.lab.safety import diff_snapshots, snapshot_netns, snapshot_root_netns

_KEY = pytest.StashKey[dict]()
# Watch another namespace instead of the root one: only to test this guard itself.
WATCH_ENV = "KUBITECT_NETNS_GUARD_PATH"


def _snapshot() -> dict:
    path = os.environ.get(WATCH_ENV)
    return snapshot_netns(path) if path else snapshot_root_netns()


def _enabled() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def pytest_sessionstart(session: pytest.Session) -> None:
    if _enabled():
        session.config.stash[_KEY] = _snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_KEY, None)
    if before is None:
        return
    diff = diff_snapshots(before, _snapshot())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if diff:
        if reporter:
            reporter.write_sep("=", "root network namespace CHANGED during the session", red=True)
            for line in diff:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter:
        reporter.ensure_newline()
        reporter.write_line("root network namespace unchanged (links, addresses, routes, firewall)")


@pytest.fixture(scope="session")
def root_netns_at_start(request: pytest.FixtureRequest) -> dict:
    """The root namespace snapshot taken when the session started (or now, if the plugin was late)."""
    return request.config.stash.get(_KEY, None) or snapshot_root_netns()
