"""Like Terraform: without a terminal, nothing that deletes data goes ahead unless -y is given;
on a terminal, the prompt shows the changes and a red data-loss line per node or disk.

The CLI runs with the TEST DOUBLE backends (tests/fixtures/kubitect_fakes.py). CliRunner's stdin
is not a terminal; the interactive tests give the real CLI process a pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time

import pytest
import yaml

CLUSTER = "kubitect-ha"
STAGES = ["network", "storage", "vms", "loadbalancers", "kubernetes"]


@pytest.fixture
def applied(cli, fake_env, fakes):
    """The seed applied (every stage but the slow verify; applied.yaml as apply leaves it)."""
    cfg = fake_env / "ha.yaml"
    result = cli("run", str(cfg), *[a for s in STAGES for a in ("--stage", s)])
    assert result.exit_code == 0, result.output
    d = fake_env / "home" / "clusters" / CLUSTER
    shutil.copy(d / "config.yaml", d / "applied.yaml")
    return cfg


def _edit(cfg, change) -> None:
    data = yaml.safe_load(cfg.read_text())
    change(data)
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))


def _drop_worker_3(data) -> None:
    data["cluster"]["nodes"]["worker"]["instances"] = data["cluster"]["nodes"]["worker"]["instances"][:2]


def _drop_rook_disk_of_worker_1(data) -> None:
    del data["cluster"]["nodes"]["worker"]["instances"][0]["dataDisks"]


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_destroy_without_a_terminal_refuses_without_y(cli, applied, fake_env, fakes):
    before = fakes.objects()
    result = cli("destroy", "--cluster", CLUSTER)
    assert result.exit_code == 1
    out = _flat(result.output)
    assert "there is no terminal to ask on" in out and "-y/--auto-approve" in out
    assert f"cluster '{CLUSTER}' will be destroyed" in out
    assert fakes.objects() == before
    assert (fake_env / "home" / "clusters" / CLUSTER / "record.json").exists()


@pytest.mark.parametrize(("change", "action", "lost", "also"), [
    # a removed node's data disks need their own flag: -y alone is refused (next test)
    (_drop_worker_3, "scale", f"node {CLUSTER}-worker-3 will be deleted, with its disks", ["--delete-data-disks"]),
    (_drop_rook_disk_of_worker_1, "create", f"data disk 'rook' of node {CLUSTER}-worker-1 will be deleted", []),
], ids=["remove-a-node", "remove-a-data-disk"])
def test_deleting_a_node_or_disk_without_a_terminal_needs_y(cli, applied, fakes, change, action, lost, also):
    _edit(applied, change)
    before = fakes.objects()
    refused = cli("apply", str(applied), "--action", action)
    assert refused.exit_code == 1, refused.output
    out = _flat(refused.output)
    assert f"data loss: {lost}" in out and "there is no terminal to ask on" in out
    assert fakes.objects() == before

    done = cli("apply", str(applied), "--action", action, "-y", *also)
    assert done.exit_code == 0, done.output
    assert f"data loss: {lost}" in _flat(done.output)


def test_a_removed_nodes_data_disks_need_delete_data_disks_even_with_y(cli, applied, fakes):
    _edit(applied, _drop_worker_3)
    before = fakes.objects()
    refused = cli("apply", str(applied), "--action", "scale", "-y")
    assert refused.exit_code == 1, refused.output
    out = _flat(refused.output)
    assert f"data loss: node {CLUSTER}-worker-3 will be deleted, with its disks" in out
    assert f"removed nodes have data disks ({CLUSTER}-worker-3/rook). Pass --delete-data-disks" in out
    assert fakes.objects() == before


def test_a_change_that_deletes_nothing_needs_no_y(cli, applied):
    _edit(applied, lambda d: d["cluster"]["nodes"]["worker"]["instances"][0].setdefault("labels", {}).update(
        {"tier": "gold"}))
    result = cli("apply", str(applied))
    assert result.exit_code == 0, result.output
    assert "data loss" not in result.output


def _interactive(args: list[str], answer: str, timeout: float = 60.0) -> tuple[int, str]:
    """Runs `kubitect ARGS` on a pseudo-terminal, answers the first prompt, returns (rc, output)."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "kubitect_core.cli", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the process closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not answered and b"[y/N]" in out:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=10), out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def _red_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "data loss" in line and "\x1b[" in line and "31" in line]


def test_interactive_destroy_shows_a_red_data_loss_line_and_no_deletes_nothing(applied, fake_env, fakes):
    before = fakes.objects()
    rc, out = _interactive(["destroy", "--cluster", CLUSTER], "n")
    assert rc == 1, out
    assert "will be destroyed. Continue?" in out and "User aborted." in out
    assert any(f"cluster '{CLUSTER}' will be destroyed" in line for line in _red_lines(out)), out
    assert fakes.objects() == before


def test_interactive_scale_down_shows_the_changes_and_a_red_line_per_node(applied, fakes):
    def drop_two_workers(data):
        data["cluster"]["nodes"]["worker"]["instances"] = data["cluster"]["nodes"]["worker"]["instances"][:1]
    _edit(applied, drop_two_workers)
    before = fakes.objects()
    rc, out = _interactive(["apply", str(applied), "--action", "scale"], "n")
    assert rc == 1, out
    assert "Changes since the last apply" in out
    assert "cluster.nodes.worker.instances[2]: removed" in out and "cluster.nodes.worker.instances[3]: removed" in out
    red = _red_lines(out)
    assert len(red) == 2, out
    assert any(f"{CLUSTER}-worker-2 will be deleted" in line for line in red)
    assert any(f"{CLUSTER}-worker-3 will be deleted" in line for line in red)
    assert "Apply these changes?" in out and fakes.objects() == before

    rc, out = _interactive(["apply", str(applied), "--action", "scale"], "y")
    assert rc == 0, out
    stored = applied.parent / "home" / "clusters" / CLUSTER / "applied.yaml"
    assert stored.read_text() == applied.read_text()  # answered yes: the scale-down went ahead
